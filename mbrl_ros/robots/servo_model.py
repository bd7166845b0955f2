"""Nominal model of a position-controlled arm: the driver's PD servos on the arm's rigid body.

A ros2_control position interface (or a joint impedance controller such as a Franka's) closes
a PD loop per joint at a high rate: ``tau = kp (u - q) - kd qd``. Seen from the planner, at
the planner's much slower rate, the arm is then a coupled, damped second-order system driven
by its position targets ``u``:

    M(q) qdd = Kp (u - q) - (Kd + B) qd

with ``M`` the URDF's joint-space mass matrix and ``B`` its viscous damping (gravity is the
driver's to compensate; Coriolis forces are small at servo speeds). For a fixed ``M`` this is
linear, and this module discretises it exactly (matrix exponential, zero-order hold on ``u``
over one model period). ``M`` changes a lot with the pose (a stretched arm's shoulder is ten
times heavier than a folded one's), and the joints' coupling through it matters as much, so
``M`` is taken at each transition's own pose (training targets, evaluation) or, in planning, at
the pose the robot is in now (:meth:`JointServoModel.set_operating_point`, once per tick):
a rollout step is then one matrix product, as cheap as a decoupled model. What the model
leaves out (friction, payload, torque saturation, the pose change within a horizon) is what
the residual learns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from mbrl_ros.core.dynamics_model import wrap_angle
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
    """``(state [N, 2J], position target [N, J]) -> next state``: the servoed arm, coupled
    through its mass matrix (see the module docstring).

    Targets are clipped to the joint position limits, as a position controller does. Also
    carries the URDF's batched forward kinematics (``ee_position_batch``) for task costs.
    Joints and gains are in the canonical order (:attr:`RobotModel.joint_names`).
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
        self.robot = robot
        self.num_joints, self.device, self.dtype = joints, device, dtype
        self.period_s = float(period_s)
        self.kp = torch.as_tensor(kp, dtype=torch.float64)
        self.damping = torch.as_tensor(kd + robot.damping, dtype=torch.float64)
        self.lower = torch.as_tensor(robot.position_lower, dtype=dtype, device=device)
        self.upper = torch.as_tensor(robot.position_upper, dtype=dtype, device=device)
        continuous = torch.as_tensor(robot.continuous, device=device)
        self.continuous = continuous if bool(continuous.any()) else None
        """[J] continuous joints (None: none): their targets are taken modulo a turn, the
        equal angle nearest the joint, as the robot is sent them
        (:mod:`mbrl_ros.core.continuous_joints`)."""
        self.kinematics = AnalyticalDynamics(robot, AnalyticalConfig(dt=period_s, substeps=1),
                                             device, dtype)
        self._operating: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self.descriptor: Dict[str, Any] = {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "period_s": self.period_s, "kp": kp.tolist(), "kd": kd.tolist(),
            "mass_matrix": "coupled, at each pose"}
        """JSON-friendly description stored in residual checkpoints."""

    def set_operating_point(self, positions: Optional[np.ndarray]) -> None:
        """Take the mass matrix at joint positions [J] for every later :meth:`step` (the
        planner, once per tick); None: at each sample's own pose again."""
        if positions is None:
            self._operating = None
            return
        positions = np.asarray(positions, dtype=float)
        if positions.shape != (self.num_joints,):
            raise ValueError(f"operating point needs {self.num_joints} joint positions, "
                             f"got shape {positions.shape}")
        transition, input_gain = self._discretise(self._mass_matrices(positions[None]))
        self._operating = (transition[0].to(self.device, self.dtype),
                           input_gain[0].to(self.device, self.dtype))

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
        if self.continuous is not None:  # the servo turns a continuous joint the short way
            positions = state[:, :joints]
            target = torch.where(self.continuous, positions + wrap_angle(target - positions),
                                 target)
        if self._operating is not None:
            transition, input_gain = self._operating
            return state @ transition.T + target @ input_gain.T
        mass = self._mass_matrices(state[:, :joints].detach().cpu().numpy())
        transition, input_gain = self._discretise(mass)
        transition = transition.to(self.device, self.dtype)
        input_gain = input_gain.to(self.device, self.dtype)
        return (torch.einsum("nij,nj->ni", transition, state)
                + torch.einsum("nij,nj->ni", input_gain, target))

    def ee_position_batch(self, positions: torch.Tensor) -> torch.Tensor:
        """End-effector positions [N, 3] in the base frame for joint positions [N, J]."""
        return self.kinematics.ee_position_batch(positions)

    def _mass_matrices(self, positions: np.ndarray) -> torch.Tensor:
        """[N, J, J] mass matrices (float64) at joint positions [N, J]."""
        return torch.as_tensor(np.stack([self.robot.mass_matrix(q) for q in positions]))

    def _discretise(self, mass: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Exact zero-order-hold discretisation of ``M qdd = Kp (u - q) - D qd`` per mass
        matrix [N, J, J]: transitions [N, 2J, 2J] and input gains [N, 2J, J] of
        ``x+ = A x + B u`` (float64)."""
        joints, count = self.num_joints, mass.shape[0]
        inverse = torch.linalg.inv(mass)
        continuous = torch.zeros(count, 3 * joints, 3 * joints, dtype=torch.float64)
        continuous[:, :joints, joints:2 * joints] = torch.eye(joints, dtype=torch.float64)
        continuous[:, joints:2 * joints, :joints] = -inverse * self.kp
        continuous[:, joints:2 * joints, joints:2 * joints] = -inverse * self.damping
        continuous[:, joints:2 * joints, 2 * joints:] = inverse * self.kp
        discrete = torch.linalg.matrix_exp(continuous * self.period_s)
        return discrete[:, :2 * joints, :2 * joints], discrete[:, :2 * joints, 2 * joints:]


def servo_config(kp: Sequence[float], kd: Sequence[float]) -> ServoConfig:
    """A :class:`ServoConfig` from ROS-parameter style lists."""
    return ServoConfig(tuple(float(v) for v in kp), tuple(float(v) for v in kd))


def robot_servo_config(robot: RobotModel, kp: Sequence[float], kd: Sequence[float]
                       ) -> ServoConfig:
    """:func:`servo_config`, with gains left out (an empty list) derived from the URDF by the
    rule ``mbrl-ros robot-config`` writes (:func:`mbrl_ros.robots.defaults.robot_defaults`)."""
    if len(kp) and len(kd):
        return servo_config(kp, kd)
    _, gains = robot_defaults(robot)
    return servo_config(kp if len(kp) else gains.kp, kd if len(kd) else gains.kd)


__all__ = ["JointServoModel", "ServoConfig", "robot_servo_config", "servo_config"]
