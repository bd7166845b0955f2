"""Pinocchio model of a robot built from the same resolved URDF text as the MuJoCo model.

Joint order: every per-joint array of the public API (``joint_names``, the limit arrays,
``damping`` / ``friction``, joint positions, torques, gravity, inertia, IK results) is in the
canonical order, :attr:`ResolvedUrdf.joint_names` (URDF file order). Pinocchio orders joints
its own way (depth first, siblings by name), so its *full* configuration ``q`` [nq] and
velocity ``v`` [nv] are in pinocchio's order: :meth:`RobotModel.frame_pose`,
:meth:`~RobotModel.joint_torque_terms`, :meth:`~RobotModel.forward_dynamics` (q, v and the
returned accelerations) and :meth:`~RobotModel.integrate` (q, v) take them. Convert with
:meth:`~RobotModel.full_configuration` / :meth:`~RobotModel.full_velocity` and
:meth:`~RobotModel.joint_positions` / :meth:`~RobotModel.joint_velocities`, or index with
``q_indices`` / ``v_indices``. For floating-base robots pinocchio's configuration starts
with ``[base xyz, base quat xyzw]`` and its velocity with the base twist (6).

Continuous (unbounded revolute) joints: pinocchio stores their angle as ``(cos, sin)`` (two
entries of ``q``, one of ``v``). The canonical arrays keep one angle per joint:
:meth:`~RobotModel.full_configuration` writes ``(cos, sin)`` at ``q_indices`` and the entry
after it, :meth:`~RobotModel.joint_positions` reads the angle back with ``atan2`` (in
``[-pi, pi]``, or the equal angle nearest to ``near``). ``continuous`` marks these joints;
their position limits are infinite.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, TypeVar

import numpy as np
import pinocchio as pin

from mbrl_ros.robots.urdf_resolver import (DEFAULT_FOOT_PATTERN, ResolvedUrdf, foot_links,
                                           is_floating_base, longest_chain_tip, resolve_urdf)

logger = logging.getLogger(__name__)

DEFAULT_EE_FRAME = "ee_link"
"""End-effector frame used when present and none is named."""
FREE_FLYER_NQ = 7
"""Configuration size of a free-flyer base (xyz, quaternion)."""
FREE_FLYER_NV = 6
"""Velocity size of a free-flyer base (linear, angular)."""
IDENTITY_BASE_POSE = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
"""Base pose xyz + quat wxyz at the origin."""

ConfigT = TypeVar("ConfigT")


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
    """Kinematics and dynamics of one robot (pinocchio), fixed or floating base.

    ``model`` / ``data`` are pinocchio's (its joint order); see the module doc for which
    methods take pinocchio-ordered full ``q`` / ``v`` and which take canonical joint arrays.
    """

    def __init__(self, urdf: ResolvedUrdf, floating_base: Optional[bool] = None,
                 ee_frame: Optional[str] = DEFAULT_EE_FRAME,
                 foot_link_pattern: Optional[str] = DEFAULT_FOOT_PATTERN) -> None:
        """Args:
            urdf: resolved URDF (see :func:`resolve_urdf`).
            floating_base: free-flyer root; None: iff the root link is not 'world' and the
                robot has feet (the MuJoCo builder's rule, :func:`is_floating_base`).
            ee_frame: end-effector frame name; None/'' for none. Must exist when given
                explicitly, except the default 'ee_link', which is optional.
            foot_link_pattern: foot link regex (full match, case-insensitive; see
                :func:`foot_links`).
        """
        self.urdf = urdf
        self.foot_links: Tuple[str, ...] = foot_links(urdf, foot_link_pattern)
        """Foot links (file order), by :func:`foot_links`."""
        self.floating_base = is_floating_base(urdf, self.foot_links, floating_base)
        if self.floating_base:
            self.model = pin.buildModelFromXML(urdf.xml, pin.JointModelFreeFlyer())
        else:
            self.model = pin.buildModelFromXML(urdf.xml)
        self.data = self.model.createData()
        self.joint_names: Tuple[str, ...] = urdf.joint_names
        """Actuated joints in canonical (URDF file) order."""
        first = 2 if self.floating_base else 1
        missing = set(self.model.names[first:]) ^ set(self.joint_names)
        if missing:
            raise ValueError(f"pinocchio and URDF joint sets differ: {sorted(missing)}")
        ids = [self.model.getJointId(name) for name in self.joint_names]
        for name, index in zip(self.joint_names, ids):
            joint = self.model.joints[index]
            if joint.nv != 1 or joint.nq not in (1, 2):
                raise ValueError(f"joint '{name}' has nq={joint.nq}, nv={joint.nv}: only 1-DoF "
                                 "revolute, continuous and prismatic joints are supported")
        self.continuous = np.array([self.model.joints[i].nq == 2 for i in ids], dtype=bool)
        """[num_joints] continuous joints: an unbounded angle, ``(cos, sin)`` in pinocchio's
        ``q`` (the only 1-DoF joints with nq=2)."""
        self.q_indices = np.array([self.model.idx_qs[i] for i in ids], dtype=int)
        """Index in pinocchio's full ``q`` of each canonical joint (of its cos for a continuous
        joint; its sin follows)."""
        self.v_indices = np.array([self.model.idx_vs[i] for i in ids], dtype=int)
        """Index in pinocchio's full ``v`` of each canonical joint."""
        self.base_nq = FREE_FLYER_NQ if self.floating_base else 0
        self.base_nv = FREE_FLYER_NV if self.floating_base else 0
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
            self.ee_frame_id = self.frame_id(ee_frame)
        elif ee_frame and ee_frame != DEFAULT_EE_FRAME:
            raise ValueError(f"ee frame '{ee_frame}' is not in the URDF (frames: "
                             f"{[frame.name for frame in self.model.frames]})")

    @classmethod
    def from_urdf(cls, source: str, search_paths: Sequence[str] = (),
                  **kwargs) -> "RobotModel":
        """Load from a URDF path, ``package://`` URI or XML text (see :class:`RobotModel`)."""
        return cls(resolve_urdf(source, search_paths), **kwargs)

    # ----------------------------------------------------------------- robot description
    def total_mass(self) -> float:
        """Sum of the masses of all links [kg] (links fixed to 'world' included)."""
        return float(sum(inertia.mass for inertia in self.model.inertias))

    def longest_chain_tip(self) -> str:
        """Tip link of the longest kinematic chain from the root (ties: first in file order),
        the end effector when none is named (see :func:`longest_chain_tip`)."""
        return longest_chain_tip(self.urdf)

    # ----------------------------------------------------------------- configuration
    def full_configuration(self, joint_positions: np.ndarray,
                           base_pose: Optional[np.ndarray] = None) -> np.ndarray:
        """[nq] pinocchio configuration from [num_joints] canonical joint positions.

        ``base_pose``: [7] xyz + quat wxyz (floating base only; identity when None).
        """
        joint_positions = self._joint_array(joint_positions, "joint positions")
        q = np.zeros(self.model.nq)
        if self.floating_base:
            pose = np.asarray(IDENTITY_BASE_POSE if base_pose is None else base_pose, float)
            q[:self.base_nq] = np.concatenate([pose[:3], pose[4:7], pose[3:4]])  # wxyz -> xyzw
        q[self.q_indices] = np.where(self.continuous, np.cos(joint_positions), joint_positions)
        q[self.q_indices[self.continuous] + 1] = np.sin(joint_positions[self.continuous])
        return q

    def full_velocity(self, joint_velocities: np.ndarray,
                      base_velocity: Optional[np.ndarray] = None) -> np.ndarray:
        """[nv] pinocchio velocity from [num_joints] canonical joint velocities.

        ``base_velocity``: [6] base twist (linear, angular; base frame), floating base only;
        zero when None.
        """
        v = np.zeros(self.model.nv)
        if self.floating_base and base_velocity is not None:
            v[:self.base_nv] = base_velocity
        v[self.v_indices] = self._joint_array(joint_velocities, "joint velocities")
        return v

    def joint_positions(self, q: np.ndarray, near: Optional[np.ndarray] = None) -> np.ndarray:
        """[num_joints] canonical joint positions of a [nq] pinocchio configuration.

        Continuous joints: ``atan2(sin, cos)`` in ``[-pi, pi]``; with ``near`` ([num_joints]
        canonical positions), the angle equal to it modulo a turn that is nearest to ``near``
        (e.g. the start of an integration step, so an angle is not wrapped on the way).
        """
        q = np.asarray(q, dtype=float)
        positions = q[self.q_indices].copy()
        cos_index = self.q_indices[self.continuous]
        angles = np.arctan2(q[cos_index + 1], q[cos_index])
        if near is not None:
            start = self._joint_array(near, "reference positions")[self.continuous]
            angles = start + np.remainder(angles - start + np.pi, 2.0 * np.pi) - np.pi
        positions[self.continuous] = angles
        return positions

    def joint_velocities(self, v: np.ndarray) -> np.ndarray:
        """[num_joints] canonical joint part of a [nv] pinocchio velocity (or acceleration,
        or generalized force)."""
        return np.asarray(v, dtype=float)[self.v_indices].copy()

    def _joint_array(self, values: np.ndarray, what: str) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        if values.shape != (self.num_joints,):
            raise ValueError(f"expected {self.num_joints} {what}, got shape {values.shape}")
        return values

    def frame_id(self, frame: str) -> int:
        """Pinocchio id of frame ``frame``; the link's (body) frame where a joint has the
        same name. Raises ValueError when there is none."""
        if not self.model.existFrame(frame):
            raise ValueError(f"frame '{frame}' is not in the model")
        if self.model.existFrame(frame, pin.FrameType.BODY):
            return self.model.getFrameId(frame, pin.FrameType.BODY)
        return self.model.getFrameId(frame)

    def frame_pose(self, frame: str, q: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """World pose of a frame: (pos [3], quat wxyz [4]) at pinocchio configuration ``q``
        [nq] (see :meth:`full_configuration`)."""
        frame_id = self.frame_id(frame)
        pin.framesForwardKinematics(self.model, self.data, np.asarray(q, dtype=float))
        placement = self.data.oMf[frame_id]
        quat = pin.Quaternion(placement.rotation)
        return placement.translation.copy(), np.array([quat.w, quat.x, quat.y, quat.z])

    def ee_pose(self, joint_positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """End-effector (pos [3], quat wxyz [4]) for [num_joints] canonical positions (base
        at origin)."""
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
        position limits at every iteration. Fixed-base robots only. ``initial_positions``
        and the result's ``joint_positions`` are canonical.
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
            full = self.full_configuration(q)
            pin.framesForwardKinematics(self.model, self.data, full)
            placement = self.data.oMf[self.ee_frame_id]
            error = goal_position - placement.translation
            position_error = float(np.linalg.norm(error))
            jacobian = pin.computeFrameJacobian(self.model, self.data, full, self.ee_frame_id,
                                                pin.LOCAL_WORLD_ALIGNED)[:, self.v_indices]
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
    def mass_matrix(self, joint_positions: np.ndarray) -> np.ndarray:
        """Fixed base: [J, J] joint-space mass matrix at canonical joint positions [J], rows and
        columns in the canonical order (pinocchio's CRBA)."""
        mass = pin.crba(self.model, self.data, self.full_configuration(joint_positions))
        mass = np.triu(mass) + np.triu(mass, 1).T
        return mass[np.ix_(self.v_indices, self.v_indices)]

    def gravity_and_inertia(self, joint_positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Fixed base: (gravity torque [J], effective joint inertia [J]) at canonical joint
        positions [J]; both canonical.

        The effective inertia of joint i is ``1 / (M^-1)_ii``: what a torque on that joint
        alone accelerates, the other joints free. It is smaller than ``M_ii`` where joints are
        coupled, and is the right scale for per-joint gains.
        """
        q = self.full_configuration(joint_positions)
        gravity = pin.computeGeneralizedGravity(self.model, self.data, q)
        mass = pin.crba(self.model, self.data, q)
        mass = np.triu(mass) + np.triu(mass, 1).T
        inverse = np.linalg.inv(mass)
        return self.joint_velocities(gravity), 1.0 / np.diag(inverse)[self.v_indices]

    def joint_torque_terms(self, v: np.ndarray, friction_velocity: float = 0.0) -> np.ndarray:
        """[nv] passive joint torques (pinocchio order) for pinocchio velocity ``v`` [nv]:
        -damping * v, and smooth Coulomb friction ``-friction * tanh(v / friction_velocity)``
        when ``friction_velocity > 0``."""
        torque = np.zeros(self.model.nv)
        joint_v = self.joint_velocities(v)
        torque[self.v_indices] = -self.damping * joint_v
        if friction_velocity > 0:
            torque[self.v_indices] -= self.friction * np.tanh(joint_v / friction_velocity)
        return torque

    def forward_dynamics(self, q: np.ndarray, v: np.ndarray, tau: np.ndarray,
                         friction_velocity: float = 0.0) -> np.ndarray:
        """[nv] accelerations (pinocchio order) by ABA for pinocchio ``q`` [nq], ``v`` [nv]
        and canonical joint torques ``tau`` [num_joints], with URDF damping (and smooth
        friction, see above)."""
        generalized = np.zeros(self.model.nv)
        generalized[self.v_indices] = self._joint_array(tau, "joint torques")
        generalized += self.joint_torque_terms(np.asarray(v, float), friction_velocity)
        return pin.aba(self.model, self.data, np.asarray(q, float), np.asarray(v, float),
                       generalized).copy()

    def integrate(self, q: np.ndarray, v: np.ndarray, tau: np.ndarray, dt: float,
                  substeps: int = 1, friction_velocity: float = 0.0
                  ) -> Tuple[np.ndarray, np.ndarray]:
        """Semi-implicit Euler over ``dt`` in ``substeps`` steps: v += h a(q, v); q += h v.

        ``q`` [nq], ``v`` [nv] and the returned (q_next, v_next) are in pinocchio's order;
        ``tau`` [num_joints] is canonical, held constant.
        """
        h = dt / substeps
        q, v = np.asarray(q, float).copy(), np.asarray(v, float).copy()
        for _ in range(substeps):
            v = v + h * self.forward_dynamics(q, v, tau, friction_velocity)
            q = pin.integrate(self.model, q, h * v)
        return q, v


# --------------------------------------------------------------------- learned-model layout
def continuous_angle_dims(robot: RobotModel, joints: Sequence[str]) -> Tuple[int, ...]:
    """State dims that are positions of ``robot``'s continuous joints, ascending.

    Every state layout of the learned models starts with the joint positions in ``joints``
    order (``[q, qd]`` of fixed-base robots, ``[q, qd, odometry]`` of the stand task, ``[q,
    qd, odometry, imu]`` of recorded data), so joint ``joints[i]`` has its position at dim
    ``i``. Raises ValueError on a name that is not a joint of ``robot``.
    """
    unknown = [name for name in joints if name not in robot.joint_names]
    if unknown:
        raise ValueError(f"joints {unknown} are not joints of the robot "
                         f"{list(robot.joint_names)}")
    continuous = {name for name, flag in zip(robot.joint_names, robot.continuous) if flag}
    return tuple(i for i, name in enumerate(joints) if name in continuous)


def with_continuous_angles(config: ConfigT, robot: RobotModel,
                           joints: Sequence[str]) -> ConfigT:
    """``config`` (a learned-model config with an ``angle_wrap`` field, e.g. ``EnsembleConfig``)
    with the positions of the continuous joints (:func:`continuous_angle_dims`) added to its
    wrapping angles: the one rule, for every robot, by which a learned model treats an
    unbounded joint's position as an angle (sin/cos inputs, wrapped deltas). Dims the user set
    are kept (in their order); ``config`` itself is returned when nothing is added."""
    given = tuple(int(i) for i in getattr(config, "angle_wrap"))
    added = tuple(i for i in continuous_angle_dims(robot, joints) if i not in given)
    if not added:
        return config
    logger.info("continuous joints %s: state dims %s are wrapping angles",
                [joints[i] for i in added], list(added))
    return dataclasses.replace(config, angle_wrap=given + added)
