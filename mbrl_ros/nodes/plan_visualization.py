"""RViz messages for a plan: end-effector path coloured by ensemble disagreement, and a Path."""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point, PoseStamped
from nav_msgs.msg import Path
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray


def disagreement_colour(value: float, scale: float) -> ColorRGBA:
    """Green (trusted) -> red (at or above ``scale``)."""
    ratio = float(np.clip(value / scale, 0.0, 1.0)) if scale > 0 and np.isfinite(value) else 1.0
    return ColorRGBA(r=ratio, g=1.0 - ratio, b=0.0, a=1.0)


def plan_markers(header: Header, ee_path: np.ndarray, disagreement: np.ndarray,
                 goal: np.ndarray | None, colour_scale: float) -> MarkerArray:
    """Markers for a planned end-effector path [H+1, 3] with per-step disagreement [H]."""
    line = Marker(header=header, ns="mbrl_plan", id=0, type=Marker.LINE_STRIP,
                  action=Marker.ADD)
    line.scale.x = 0.006
    line.pose.orientation.w = 1.0
    step_disagreement = np.concatenate([[0.0], np.asarray(disagreement, dtype=float)])
    for point, value in zip(ee_path, step_disagreement):
        line.points.append(Point(x=float(point[0]), y=float(point[1]), z=float(point[2])))
        line.colors.append(disagreement_colour(float(value), colour_scale))
    markers = MarkerArray(markers=[line])
    if goal is not None:
        sphere = Marker(header=header, ns="mbrl_goal", id=1, type=Marker.SPHERE,
                        action=Marker.ADD)
        sphere.pose.position = Point(x=float(goal[0]), y=float(goal[1]), z=float(goal[2]))
        sphere.pose.orientation.w = 1.0
        sphere.scale.x = sphere.scale.y = sphere.scale.z = 0.04
        sphere.color = ColorRGBA(r=0.1, g=0.4, b=1.0, a=0.8)
        markers.markers.append(sphere)
    return markers


def plan_path(header: Header, ee_path: np.ndarray) -> Path:
    """nav_msgs/Path of the planned end-effector positions [H+1, 3]."""
    path = Path(header=header)
    for point in ee_path:
        pose = PoseStamped(header=header)
        pose.pose.position = Point(x=float(point[0]), y=float(point[1]), z=float(point[2]))
        pose.pose.orientation.w = 1.0
        path.poses.append(pose)
    return path
