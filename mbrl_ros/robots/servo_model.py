"""Nominal model of a position-controlled joint: the driver's PD servo, per joint, in closed form.

A ros2_control position interface (or a joint impedance controller such as a Franka's) closes
a PD loop per joint at a high rate: ``tau = kp (u - q) - kd qd``. Seen from the planner, at
the planner's much slower rate, each joint is then a damped second-order system driven by its
position target ``u``:

    m_i qdd_i = kp_i (u_i - q_i) - (kd_i + b_i) qd_i

with ``m_i`` the joint's effective inertia ``1 / (M^-1)_ii`` at a reference pose and ``b_i``
its URDF viscous damping. This module discretises that system exactly (zero-order hold on
``u`` over one model period) and batches it in torch: one step is two multiply-adds per
joint, so the residual ensemble on top of it costs about what the ensemble alone costs.
What the decoupled model leaves out (coupling between joints, configuration-dependent inertia,
friction, payload, torque saturation) is what the residual learns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from mbrl_ros.robots.analytical import AnalyticalConfig, AnalyticalDynamics
from mbrl_ros.robots.defaults import robot_defaults
from mbrl_ros.robots.robot_model import RobotModel


@dataclass(frozen=True)
class ServoConfig:
    """Gains of the robot driver's joint position servo (they must match the driver's)."""

    kp: Tuple[float, ...] = (100.0,)
    """Stiffness per joint [N m / rad]: one value for all joints or one per joint."""
    kd: Tuple[float, ...] = (5.0,)
    """Damping per joint [N m s / rad]: one value for all joints or one per joint."""
    reference_positions: Tuple[float, ...] = ()
    """Pose whose effective joint inertias the model uses; empty: the middle of each range."""

    def per_joint(self, num_joints: int) -> Tuple[np.ndarray, np.ndarray]:
        """(kp, kd) as [num_joints] arrays; ValueError on a wrong count or a bad value."""
        gains = []
        for name in ("kp", "kd"):
            values = np.asarray(getattr(self, name), dtype=float).reshape(-1)
            if values.size not in (1, num_joints):
                raise ValueError(f"servo {name} needs 1 or {num_joints} values, "
                                 f"got {values.size}")
            if not np.all(np.isfinite(values)) or np.any(values < 0):
                raise ValueError(f"servo {name} must be finite and >= 0, got {values.tolist()}")
            gains.append(np.broadcast_to(values, (num_joints,)).copy())
        if not np.all(gains[0] > 0):
            raise ValueError("servo kp must be > 0 for every joint")
        return gains[0], gains[1]


class JointServoModel:
    """``(state [N, 2J], position target [N, J]) -> next state``, one decoupled servo per joint.

    Targets are clipped to the joint position limits, as a position controller does. Also
    carries the URDF's batched forward kinematics (``ee_position_batch``) for task costs.
    Joints, gains and inertias are in the canonical order (:attr:`RobotModel.joint_names`).
    """

    def __init__(self, robot: RobotModel, config: ServoConfig, period_s: float,
                 device: torch.device = torch.device("cpu"),
                 dtype: torch.dtype = torch.float32) -> None:
        if robot.floating_base:
            raise ValueError("JointServoModel supports fixed-base robots only")
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        joints = robot.num_joints
        kp, kd = config.per_joint(joints)
        reference = (np.asarray(config.reference_positions, dtype=float)
                     if config.reference_positions
                     else 0.5 * (robot.position_lower + robot.position_upper))
        if reference.shape != (joints,):
            raise ValueError(f"reference_positions needs {joints} values, got {reference.size}")
        _, inertia = robot.gravity_and_inertia(reference)
        self.num_joints, self.device, self.dtype = joints, device, dtype
        self.period_s = float(period_s)
        self.transition, self.input_gain = _discretise(kp, kd + robot.damping, inertia, period_s)
        self.transition = self.transition.to(device, dtype)     # [J, 2, 2]
        self.input_gain = self.input_gain.to(device, dtype)     # [J, 2]
        self.lower = torch.as_tensor(robot.position_lower, dtype=dtype, device=device)
        self.upper = torch.as_tensor(robot.position_upper, dtype=dtype, device=device)
        self.kinematics = AnalyticalDynamics(robot, AnalyticalConfig(dt=period_s, substeps=1),
                                             device, dtype)
        self.descriptor: Dict[str, Any] = {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "period_s": self.period_s, "kp": kp.tolist(), "kd": kd.tolist(),
            "effective_inertia": np.round(inertia, 6).tolist()}
        """JSON-friendly description stored in residual checkpoints."""

    @torch.no_grad()
    def step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Next state [N, 2J] after one period with the position targets ``action`` [N, J]."""
        joints = self.num_joints
        if state.ndim != 2 or state.shape[1] != 2 * joints:
            raise ValueError(f"state must be [N, {2 * joints}], got {tuple(state.shape)}")
        if action.shape != (state.shape[0], joints):
            raise ValueError(f"action must be [{state.shape[0]}, {joints}], "
                             f"got {tuple(action.shape)}")
        state = state.to(self.device, self.dtype)
        target = torch.maximum(torch.minimum(action.to(self.device, self.dtype), self.upper),
                               self.lower)
        position, velocity = state[:, :joints], state[:, joints:]
        a, b = self.transition, self.input_gain
        next_position = a[:, 0, 0] * position + a[:, 0, 1] * velocity + b[:, 0] * target
        next_velocity = a[:, 1, 0] * position + a[:, 1, 1] * velocity + b[:, 1] * target
        return torch.cat([next_position, next_velocity], -1)

    def ee_position_batch(self, positions: torch.Tensor) -> torch.Tensor:
        """End-effector positions [N, 3] in the base frame for joint positions [N, J]."""
        return self.kinematics.ee_position_batch(positions)


def _discretise(kp: np.ndarray, damping: np.ndarray, inertia: np.ndarray, period_s: float
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact zero-order-hold discretisation of ``m qdd = kp (u - q) - damping qd`` per joint.

    Returns the transition ``[J, 2, 2]`` and input gain ``[J, 2]`` of ``x+ = A x + B u``.
    """
    joints = kp.shape[0]
    continuous = torch.zeros(joints, 3, 3, dtype=torch.float64)
    continuous[:, 0, 1] = 1.0
    continuous[:, 1, 0] = torch.as_tensor(-kp / inertia)
    continuous[:, 1, 1] = torch.as_tensor(-damping / inertia)
    continuous[:, 1, 2] = torch.as_tensor(kp / inertia)
    discrete = torch.linalg.matrix_exp(continuous * period_s)
    return discrete[:, :2, :2], discrete[:, :2, 2]


def servo_config(kp: Sequence[float], kd: Sequence[float],
                 reference_positions: Optional[Sequence[float]] = None) -> ServoConfig:
    """A :class:`ServoConfig` from ROS-parameter style lists."""
    return ServoConfig(tuple(float(v) for v in kp), tuple(float(v) for v in kd),
                       tuple(float(v) for v in (reference_positions or ())))


def robot_servo_config(robot: RobotModel, kp: Sequence[float], kd: Sequence[float]
                       ) -> ServoConfig:
    """:func:`servo_config`, with gains left out (an empty list) derived from the URDF by the
    rule ``mbrl-ros robot-config`` writes (:func:`mbrl_ros.robots.defaults.robot_defaults`)."""
    if len(kp) and len(kd):
        return servo_config(kp, kd)
    _, gains = robot_defaults(robot)
    return servo_config(kp if len(kp) else gains.kp, kd if len(kd) else gains.kd)


__all__ = ["JointServoModel", "ServoConfig", "robot_servo_config", "servo_config"]
