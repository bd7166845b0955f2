"""The points of a fixed-base robot that its workspace checks, from the URDF's kinematics.

:mod:`mbrl_ros.core.workspace` holds the rule (floor plane, end-effector box); this module
resolves which points it applies to (by default every actuated joint's origin, or the links
and frames a user lists, and always the end effector, last) and builds their forward
kinematics: batched in torch for the planner, one configuration at a time (pinocchio) for the
safety gate and the goal sampler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import pinocchio as pin
import torch

from mbrl_ros.core.workspace import (WorkspaceConfig, WorkspaceConstraint, WorkspaceGuard)
from mbrl_ros.robots.analytical import AnalyticalConfig, AnalyticalDynamics
from mbrl_ros.robots.robot_model import RobotModel

POSITION_TARGETS = "position"
"""Command mode whose actions are joint position targets (checked like predicted states)."""


@dataclass(frozen=True)
class CheckedPoints:
    """Which frames' origins the workspace checks."""

    names: Tuple[str, ...]
    """Frame names [P], for messages; the end effector last when there is one."""
    frame_ids: Tuple[int, ...]
    """Pinocchio frame ids [P], in the same order."""
    has_end_effector: bool
    """True when the last point is the robot's end effector."""


def checked_points(robot: RobotModel, config: WorkspaceConfig) -> CheckedPoints:
    """The points ``config`` checks on ``robot``: ``config.frames`` (links or frames; a
    missing one raises ValueError) or every actuated joint's origin, then the end effector."""
    model = robot.model
    if config.frames:
        ids = [robot.frame_id(name) for name in config.frames]
    else:
        ids = [model.getFrameId(name, pin.FrameType.JOINT) for name in robot.joint_names]
    ee = robot.ee_frame_id
    ids = [i for i in ids if i != ee] + ([] if ee is None else [ee])
    return CheckedPoints(names=tuple(model.frames[i].name for i in ids), frame_ids=tuple(ids),
                         has_end_effector=ee is not None)


def workspace_unavailable(robot: RobotModel, config: WorkspaceConfig,
                          joint_order: Optional[Sequence[str]] = None) -> str:
    """Why the workspace cannot be checked on ``robot`` ("" when it can): switched off, a
    floating base (the workspace is for fixed-base arms), or ``joint_order`` (the caller's
    joints) not the robot's joints."""
    if not config.enabled:
        return "switched off (workspace.enabled: false)"
    if robot.floating_base:
        return "the robot has a floating base (the workspace is for fixed-base arms)"
    if joint_order is not None and sorted(joint_order) != sorted(robot.joint_names):
        return (f"the joints {list(joint_order)} are not all the URDF's joints "
                f"{list(robot.joint_names)}, so their kinematics are unknown")
    return ""


class FramePoints:
    """``joint positions [J] -> [P, 3]`` origins of fixed frames (pinocchio, one
    configuration), with the joints in ``joint_order`` (default: the robot's)."""

    def __init__(self, robot: RobotModel, frame_ids: Sequence[int],
                 joint_order: Optional[Sequence[str]] = None) -> None:
        self.robot = robot
        self.data = robot.model.createData()
        self.frame_ids = tuple(int(i) for i in frame_ids)
        order = robot.joint_names if joint_order is None else tuple(joint_order)
        self.to_canonical = np.array([order.index(name) for name in robot.joint_names])
        """canonical positions = caller's positions[to_canonical]."""

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        canonical = np.asarray(positions, dtype=np.float64)[self.to_canonical]
        pin.framesForwardKinematics(self.robot.model, self.data,
                                    self.robot.full_configuration(canonical))
        return np.array([self.data.oMf[i].translation for i in self.frame_ids])


class BatchedFramePoints:
    """``joint positions [M, J] -> [M, P, 3]`` origins of fixed frames, batched in torch
    (canonical joint order)."""

    def __init__(self, robot: RobotModel, frame_ids: Sequence[int],
                 device: torch.device) -> None:
        self.kinematics = AnalyticalDynamics(robot, AnalyticalConfig(), device)
        self.frame_ids = tuple(int(i) for i in frame_ids)

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        return self.kinematics.frame_positions_batch(positions, self.frame_ids)


def workspace_guard(robot: RobotModel, config: WorkspaceConfig,
                    joint_order: Optional[Sequence[str]] = None) -> Optional[WorkspaceGuard]:
    """The workspace of ``robot`` for single configurations with the joints in
    ``joint_order`` (default: the robot's); None where :func:`workspace_unavailable`."""
    if workspace_unavailable(robot, config, joint_order):
        return None
    points = checked_points(robot, config.validate())
    return WorkspaceGuard(config, FramePoints(robot, points.frame_ids, joint_order),
                          points.names, points.has_end_effector)


def workspace_constraint(robot: RobotModel, config: WorkspaceConfig, command_mode: str,
                         device: torch.device) -> Optional[WorkspaceConstraint]:
    """The planner's workspace constraint over ``[q, ...]`` states (and, in position mode,
    over the position targets); None where :func:`workspace_unavailable`."""
    if workspace_unavailable(robot, config):
        return None
    points = checked_points(robot, config.validate())
    return WorkspaceConstraint(config, BatchedFramePoints(robot, points.frame_ids, device),
                               robot.num_joints, command_mode == POSITION_TARGETS,
                               points.has_end_effector, device)


__all__ = ["BatchedFramePoints", "CheckedPoints", "FramePoints", "checked_points",
           "workspace_constraint", "workspace_guard", "workspace_unavailable"]
