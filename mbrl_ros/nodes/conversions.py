"""Message <-> array conversions, in one place, for every node.

Joint order is always resolved by name through a configured ``joints`` list; message order is
never trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from builtin_interfaces.msg import Duration, Time

from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from mbrl_ros.msg import PlannedCommand, PlannedCommandPoint

TRAJECTORY_FIELDS = ("positions", "velocities", "effort")
"""The trajectory_msgs/JointTrajectoryPoint fields a command can fill."""


@dataclass(frozen=True)
class JointStateArrays:
    """Joint positions, velocities and efforts in the configured joint order."""

    position: np.ndarray
    """[num_joints] rad or m."""
    velocity: np.ndarray
    """[num_joints] rad/s or m/s; zeros when the message carries none."""
    effort: np.ndarray
    """[num_joints] N m or N; zeros when the message carries none."""
    stamp_s: float
    """Header stamp in seconds (node clock time base)."""


class JointNameMap:
    """Maps JointState messages onto a fixed joint order, by name.

    The index lookup is cached per distinct name list, so a driver that always sends the same
    order costs one dictionary lookup per message.
    """

    def __init__(self, joints: Sequence[str]):
        if not joints:
            raise ValueError("the joints list is empty")
        if len(set(joints)) != len(joints):
            raise ValueError(f"duplicate joint names in {list(joints)}")
        self.joints = tuple(joints)
        self._cache: dict = {}

    def indices(self, names: Sequence[str]) -> Optional[np.ndarray]:
        """Index of each configured joint in ``names``; None if any is missing."""
        key = tuple(names)
        if key not in self._cache:
            position = {name: i for i, name in enumerate(key)}
            if all(j in position for j in self.joints):
                self._cache[key] = np.array([position[j] for j in self.joints], dtype=np.intp)
            else:
                self._cache[key] = None
        return self._cache[key]

    def from_planned_command(self, msg):
        """A PlannedCommand in the configured order -> ``(points [P, J], times [P],
        disagreement [P], "")``, or ``(None, None, None, reason)`` when it cannot be mapped: a
        joint missing or unknown, a duplicate name, or a point of the wrong length. Values are
        not judged here (non-finite values are the gate's to refuse)."""
        names = list(msg.joint_names)
        order = self.indices(names)
        if order is None or len(names) != len(self.joints):  # missing, unknown or duplicates
            if len(set(names)) != len(names):
                return None, None, None, f"duplicate joint names in {names}"
            unknown = sorted(set(names) - set(self.joints))
            return None, None, None, (f"command joints {names}: missing {self.missing(names)}, "
                                      f"unknown {unknown}")
        rows = []
        for k, point in enumerate(msg.points):
            if len(point.command) != len(names):
                return None, None, None, (f"point {k} has {len(point.command)} values for "
                                          f"{len(names)} joints")
            rows.append(np.asarray(point.command, dtype=np.float64)[order])
        points = np.array(rows).reshape(len(rows), len(self.joints))
        times = np.array([duration_to_seconds(p.time_from_start) for p in msg.points])
        disagreement = np.array([p.disagreement for p in msg.points], dtype=np.float64)
        return points, times, disagreement, ""

    def missing(self, names: Sequence[str]) -> list:
        """Configured joints that ``names`` lacks (for error messages)."""
        present = set(names)
        return [j for j in self.joints if j not in present]

    def from_joint_state(self, msg) -> Optional[JointStateArrays]:
        """Arrays in the configured order, or None if the message lacks a joint or is malformed.

        Unknown extra joints are ignored. Velocity/effort may be empty (zeros), but if present
        must have one entry per name.
        """
        idx = self.indices(msg.name)
        count = len(msg.name)
        if idx is None or len(msg.position) != count:
            return None
        position = np.asarray(msg.position, dtype=np.float64)[idx]
        velocity = _optional_field(msg.velocity, count, idx)
        effort = _optional_field(msg.effort, count, idx)
        if velocity is None or effort is None:
            return None
        return JointStateArrays(position, velocity, effort, stamp_to_seconds(msg.header.stamp))


def _optional_field(values, count: int, idx: np.ndarray) -> Optional[np.ndarray]:
    if len(values) == 0:
        return np.zeros(len(idx))
    if len(values) != count:
        return None
    return np.asarray(values, dtype=np.float64)[idx]


def stamp_to_seconds(stamp: Time) -> float:
    """builtin_interfaces/Time -> seconds."""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def seconds_to_stamp(seconds: float) -> Time:
    """Seconds -> builtin_interfaces/Time (rounded to the nearest nanosecond: 4.9999999999 s is
    5 s, never 4 s with the nanoseconds wrapped away)."""
    sec, nanosec = divmod(int(round(float(seconds) * 1e9)), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def from_float64_multi_array(msg, expected_size: int) -> Tuple[Optional[np.ndarray], str]:
    """(values, "") for a well-formed finite command of ``expected_size``, else (None, reason)."""
    try:
        values = np.asarray(msg.data, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        return None, f"unreadable data: {error}"
    if values.size != expected_size:
        return None, f"expected {expected_size} values, got {values.size}"
    if not np.all(np.isfinite(values)):
        return None, "non-finite values"
    return values, ""


def duration_to_seconds(duration) -> float:
    """builtin_interfaces/Duration -> seconds."""
    return float(duration.sec) + 1e-9 * float(duration.nanosec)


def seconds_to_duration(seconds: float) -> Duration:
    """Seconds (>= 0) -> builtin_interfaces/Duration, rounded to the nanosecond."""
    sec, nanosec = divmod(int(round(max(float(seconds), 0.0) * 1e9)), 1_000_000_000)
    return Duration(sec=sec, nanosec=nanosec)


def planned_command_message(joint_names: Sequence[str], commands: np.ndarray,
                            times_s: Sequence[float], disagreement: Sequence[float],
                            source_stamp: Time, sequence: int, model_version: int, status: int,
                            reason: str = "", frame_id: str = "") -> PlannedCommand:
    """A PlannedCommand from ``commands: [P, J]`` (order ``joint_names``), ``times_s: [P]``
    after the source state and ``disagreement: [P]`` (see msg/PlannedCommandPoint.msg)."""
    commands = np.asarray(commands, dtype=np.float64).reshape(len(times_s), len(joint_names))
    msg = PlannedCommand(sequence=int(sequence), model_version=int(model_version),
                         status=int(status), reason=str(reason),
                         joint_names=list(joint_names))
    msg.header.stamp, msg.header.frame_id = source_stamp, frame_id
    msg.points = [PlannedCommandPoint(time_from_start=seconds_to_duration(t),
                                      command=row.tolist(), disagreement=float(d))
                  for row, t, d in zip(commands, times_s, disagreement)]
    return msg


def joint_trajectory_message(joint_names: Sequence[str], commands: np.ndarray,
                             times_s: Sequence[float], field: str = "positions",
                             stamp: Optional[Time] = None,
                             frame_id: str = "") -> JointTrajectory:
    """A trajectory_msgs/JointTrajectory from ``commands: [P, J]`` (order ``joint_names``)
    at ``times_s: [P]`` after ``stamp`` (None or zero: "start now", as a
    joint_trajectory_controller reads it), each row in the point's ``field`` ("positions",
    "velocities" or "effort"). No points: a joint_trajectory_controller holds where it is."""
    if field not in TRAJECTORY_FIELDS:
        raise ValueError(f"field must be one of {TRAJECTORY_FIELDS}, got {field!r}")
    commands = np.asarray(commands, dtype=np.float64).reshape(len(times_s), len(joint_names))
    msg = JointTrajectory(joint_names=list(joint_names))
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    for row, t in zip(commands, times_s):
        point = JointTrajectoryPoint(time_from_start=seconds_to_duration(t))
        setattr(point, field, row.tolist())
        msg.points.append(point)
    return msg
