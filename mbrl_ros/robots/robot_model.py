"""Pinocchio model of a robot built from the same resolved URDF text as the MuJoCo model.

Joint order is the URDF tree order (= MuJoCo's). For floating-base robots pinocchio's
configuration is ``[base xyz, base quat xyzw, joints]``; the ``*_joints`` helpers take and
return only the actuated-joint part.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import pinocchio as pin

from mbrl_ros.robots.urdf_resolver import WORLD_LINK, ResolvedUrdf, resolve_urdf

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IkConfig:
    """Damped-least-squares inverse kinematics settings."""

    max_iterations: int = 200
    """Iterations before giving up."""
    damping: float = 1e-3
    """Levenberg damping added to J J^T."""
    step_size: float = 1.0
    """Fraction of the DLS step taken per iteration."""
    position_tolerance: float = 1e-4
    """Stop when the position error is below this [m]."""
    orientation_tolerance: float = 1e-3
    """Stop when the orientation error is below this [rad] (pose goals)."""
    orientation_weight: float = 0.5
    """Weight of the orientation error against position (pose goals) [m/rad]."""

    def validate(self) -> None:
        """Raise ValueError on bad settings."""
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {self.max_iterations}")
        for name in ("damping", "step_size", "position_tolerance", "orientation_tolerance",
                     "orientation_weight"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class IkResult:
    """Outcome of an IK solve."""

    joint_positions: np.ndarray
    """[num_joints] joint targets, within position limits."""
    converged: bool
    """Whether the tolerances were met."""
    position_error: float
    """Final end-effector position error [m]."""
    orientation_error: float
    """Final orientation error [rad] (0 for position-only goals)."""


class RobotModel:
    """Kinematics and dynamics of one robot (pinocchio), fixed or floating base."""

    def __init__(self, urdf: ResolvedUrdf, floating_base: Optional[bool] = None,
                 ee_frame: Optional[str] = "ee_link",
                 foot_links: Sequence[str] = ()) -> None:
        """Args:
            urdf: resolved URDF (see :func:`resolve_urdf`).
            floating_base: free-flyer root; None: iff the root link is not 'world' and
                ``foot_links`` is not empty (the MuJoCo builder's rule).
            ee_frame: end-effector frame name; None/'' for none. Must exist when given
                explicitly, except the default 'ee_link', which is optional.
        """
        self.urdf = urdf
        if floating_base is None:
            floating_base = urdf.root_link != WORLD_LINK and len(foot_links) > 0
        self.floating_base = bool(floating_base)
        if self.floating_base:
            self.model = pin.buildModelFromXML(urdf.xml, pin.JointModelFreeFlyer())
        else:
            self.model = pin.buildModelFromXML(urdf.xml)
        self.data = self.model.createData()
        first = 2 if self.floating_base else 1
        self.joint_names: Tuple[str, ...] = tuple(self.model.names[first:])
        missing = set(self.joint_names) ^ set(urdf.joint_limits)
        if missing:
            raise ValueError(f"pinocchio and URDF joint sets differ: {sorted(missing)}")
        for name in self.joint_names:
            joint = self.model.joints[self.model.getJointId(name)]
            if joint.nq != 1 or joint.nv != 1:
                raise ValueError(f"joint '{name}' has nq={joint.nq}: only 1-DoF revolute/"
                                 "prismatic joints are supported (no continuous joints)")
        self.base_nq = 7 if self.floating_base else 0
        self.base_nv = 6 if self.floating_base else 0
        self.num_joints = len(self.joint_names)
        limits = [urdf.joint_limits[n] for n in self.joint_names]
        self.position_lower = np.array([lim.lower for lim in limits])
        self.position_upper = np.array([lim.upper for lim in limits])
        self.velocity_limits = np.array([lim.velocity for lim in limits])
        self.effort_limits = np.array([lim.effort for lim in limits])
        self.damping = np.array([lim.damping for lim in limits])
        self.friction = np.array([lim.friction for lim in limits])
        self.ee_frame_id: Optional[int] = None
        if ee_frame and self.model.existFrame(ee_frame):
            self.ee_frame_id = self.model.getFrameId(ee_frame)
        elif ee_frame and ee_frame != "ee_link":
            raise ValueError(f"ee frame '{ee_frame}' is not in the URDF")

    @classmethod
    def from_urdf(cls, source: str, search_paths: Sequence[str] = (),
                  **kwargs) -> "RobotModel":
        """Load from a URDF path, ``package://`` URI or XML text (see :class:`RobotModel`)."""
        return cls(resolve_urdf(source, search_paths), **kwargs)

    # ----------------------------------------------------------------- configuration
    def full_configuration(self, joint_positions: np.ndarray,
                           base_pose: Optional[np.ndarray] = None) -> np.ndarray:
        """[nq_pin] pinocchio configuration from [num_joints] joint positions.

        ``base_pose``: [7] xyz + quat wxyz (floating base only; identity when None).
        """
        joint_positions = np.asarray(joint_positions, dtype=float)
        if joint_positions.shape != (self.num_joints,):
            raise ValueError(f"expected {self.num_joints} joint positions, "
                             f"got shape {joint_positions.shape}")
        if not self.floating_base:
            return joint_positions.copy()
        pose = np.array([0, 0, 0, 1, 0, 0, 0.0]) if base_pose is None else np.asarray(base_pose)
        base = np.concatenate([pose[:3], pose[4:7], pose[3:4]])  # wxyz -> pinocchio xyzw
        return np.concatenate([base, joint_positions])

    def frame_pose(self, frame: str, q: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """World pose of a frame: (pos [3], quat wxyz [4]) at full configuration ``q``."""
        frame_id = self.model.getFrameId(frame)
        if frame_id >= self.model.nframes:
            raise ValueError(f"frame '{frame}' is not in the model")
        pin.framesForwardKinematics(self.model, self.data, np.asarray(q, dtype=float))
        placement = self.data.oMf[frame_id]
        quat = pin.Quaternion(placement.rotation)
        return placement.translation.copy(), np.array([quat.w, quat.x, quat.y, quat.z])

    def ee_pose(self, joint_positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """End-effector (pos [3], quat wxyz [4]) for [num_joints] positions (base at origin)."""
        if self.ee_frame_id is None:
            raise ValueError("this robot has no end-effector frame")
        return self.frame_pose(self.model.frames[self.ee_frame_id].name,
                               self.full_configuration(joint_positions))

    # ----------------------------------------------------------------- inverse kinematics
    def inverse_kinematics(self, goal_position: np.ndarray,
                           goal_quat_wxyz: Optional[np.ndarray] = None,
                           initial_positions: Optional[np.ndarray] = None,
                           config: IkConfig = IkConfig()) -> IkResult:
        """Joint targets reaching an end-effector goal (position, or pose with a quaternion).

        Damped least squares on the ee frame's world-aligned Jacobian, clipped to the
        position limits at every iteration. Fixed-base robots only.
        """
        config.validate()
        if self.ee_frame_id is None or self.floating_base:
            raise ValueError("IK needs a fixed-base robot with an end-effector frame")
        goal_position = np.asarray(goal_position, dtype=float)
        if goal_position.shape != (3,) or not np.all(np.isfinite(goal_position)):
            raise ValueError(f"goal position must be 3 finite numbers, got {goal_position}")
        goal_rotation = None
        if goal_quat_wxyz is not None:
            w, x, y, z = np.asarray(goal_quat_wxyz, dtype=float)
            goal_rotation = pin.Quaternion(w, x, y, z).normalized().toRotationMatrix()
        q = self._clip(np.zeros(self.num_joints) if initial_positions is None
                       else np.asarray(initial_positions, dtype=float))
        position_error = orientation_error = np.inf
        for _ in range(config.max_iterations):
            pin.framesForwardKinematics(self.model, self.data, q)
            placement = self.data.oMf[self.ee_frame_id]
            error = goal_position - placement.translation
            position_error = float(np.linalg.norm(error))
            jacobian = pin.computeFrameJacobian(self.model, self.data, q, self.ee_frame_id,
                                                pin.LOCAL_WORLD_ALIGNED)
            if goal_rotation is None:
                orientation_error = 0.0
                jacobian = jacobian[:3]
            else:
                rotation_error = pin.log3(goal_rotation @ placement.rotation.T)
                orientation_error = float(np.linalg.norm(rotation_error))
                error = np.concatenate([error, config.orientation_weight * rotation_error])
                jacobian = np.vstack([jacobian[:3], config.orientation_weight * jacobian[3:]])
            if (position_error < config.position_tolerance
                    and orientation_error < config.orientation_tolerance):
                return IkResult(q, True, position_error, orientation_error)
            gram = jacobian @ jacobian.T + config.damping * np.eye(len(error))
            q = self._clip(q + config.step_size * jacobian.T @ np.linalg.solve(gram, error))
        return IkResult(q, False, position_error, orientation_error)

    def _clip(self, q: np.ndarray) -> np.ndarray:
        return np.clip(q, self.position_lower, self.position_upper)

    # ----------------------------------------------------------------- dynamics
    def gravity_and_inertia(self, joint_positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Fixed base: (gravity torque [J], effective joint inertia [J]) at ``q``.

        The effective inertia of joint i is ``1 / (M^-1)_ii``: what a torque on that joint
        alone accelerates, the other joints free. It is smaller than ``M_ii`` where joints are
        coupled, and is the right scale for per-joint gains.
        """
        q = self.full_configuration(joint_positions)
        gravity = pin.computeGeneralizedGravity(self.model, self.data, q)
        mass = pin.crba(self.model, self.data, q)
        mass = np.triu(mass) + np.triu(mass, 1).T
        inverse = np.linalg.inv(mass)
        return (np.asarray(gravity)[self.base_nv:].copy(),
                1.0 / np.diag(inverse)[self.base_nv:])

    def joint_torque_terms(self, v: np.ndarray, friction_velocity: float = 0.0) -> np.ndarray:
        """[nv] passive joint torques: -damping * v, and smooth Coulomb friction
        ``-friction * tanh(v / friction_velocity)`` when ``friction_velocity > 0``."""
        torque = np.zeros(self.model.nv)
        joint_v = v[self.base_nv:]
        torque[self.base_nv:] = -self.damping * joint_v
        if friction_velocity > 0:
            torque[self.base_nv:] -= self.friction * np.tanh(joint_v / friction_velocity)
        return torque

    def forward_dynamics(self, q: np.ndarray, v: np.ndarray, tau: np.ndarray,
                         friction_velocity: float = 0.0) -> np.ndarray:
        """[nv] accelerations by ABA for full ``q`` [nq], ``v`` [nv] and joint torques
        ``tau`` [num_joints], with URDF damping (and smooth friction, see above)."""
        generalized = np.zeros(self.model.nv)
        generalized[self.base_nv:] = tau
        generalized += self.joint_torque_terms(np.asarray(v, float), friction_velocity)
        return pin.aba(self.model, self.data, np.asarray(q, float), np.asarray(v, float),
                       generalized).copy()

    def integrate(self, q: np.ndarray, v: np.ndarray, tau: np.ndarray, dt: float,
                  substeps: int = 1, friction_velocity: float = 0.0
                  ) -> Tuple[np.ndarray, np.ndarray]:
        """Semi-implicit Euler over ``dt`` in ``substeps`` steps: v += h a(q, v); q += h v.

        Returns (q_next [nq], v_next [nv]); ``tau`` [num_joints] held constant.
        """
        h = dt / substeps
        q, v = np.asarray(q, float).copy(), np.asarray(v, float).copy()
        for _ in range(substeps):
            v = v + h * self.forward_dynamics(q, v, tau, friction_velocity)
            q = pin.integrate(self.model, q, h * v)
        return q, v
