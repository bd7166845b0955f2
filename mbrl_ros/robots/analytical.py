"""Batched analytical rigid-body dynamics in torch (the nominal model under the residual).

The articulated-body algorithm (Featherstone) runs over all samples at once: the only Python
loops are over joints (7 for the arm), never over samples. Kinematic and inertial parameters
come from the pinocchio model of the same URDF. Fixed-base robots only: for legged robots the
contacts dominate and the simulator itself is the reference.

Spatial vectors follow pinocchio's convention: ``[linear; angular]``.

Continuous joints are revolute joints here: their position is one angle (not wrapped).

Joint order: inputs and outputs are in the canonical joint order
(:attr:`RobotModel.joint_names`, URDF file order); the recursion runs in pinocchio's joint
order inside, one ``index_select`` away.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pinocchio as pin
import torch

from mbrl_ros.robots.robot_model import RobotModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalyticalConfig:
    """Integration settings of the batched analytical model."""

    dt: float = 0.01
    """Control period one ``step`` advances [s]."""
    substeps: int = 5
    """Semi-implicit Euler steps per control period."""
    friction_velocity: float = 0.0
    """Smooth Coulomb friction ``friction * tanh(v / friction_velocity)``; 0 disables it."""
    gravity_compensated: bool = False
    """The robot's driver compensates gravity (commands are torques on top of it)."""
    clip_torque: bool = True
    """Clip actions to the URDF effort limits (as the simulator's motors do)."""

    def validate(self) -> None:
        """Raise ValueError on bad settings."""
        if self.dt <= 0:
            raise ValueError(f"dt must be > 0, got {self.dt}")
        if self.substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {self.substeps}")
        if self.friction_velocity < 0:
            raise ValueError(f"friction_velocity must be >= 0, got {self.friction_velocity}")


def _skew(vectors: torch.Tensor) -> torch.Tensor:
    """[..., 3] -> [..., 3, 3] cross-product matrices."""
    x, y, z = vectors.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1),
                        torch.stack([-y, x, zero], -1)], -2)


def _rotate(rotation_t: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """``R v`` for rotations stored transposed and batch last, ``[3, 3, N]`` ([k, i, n] =
    R[i, k]), and one vector [3] -> [3, N]."""
    return (vector @ rotation_t.reshape(3, -1)).view(3, -1)


def _motion_cross(velocity: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """Spatial motion cross product ``velocity x motion``; both [N, 6]."""
    linear, angular = velocity[:, :3], velocity[:, 3:]
    return torch.cat([torch.cross(angular, motion[:, :3], dim=-1)
                      + torch.cross(linear, motion[:, 3:], dim=-1),
                      torch.cross(angular, motion[:, 3:], dim=-1)], -1)


def _force_cross(velocity: torch.Tensor, force: torch.Tensor) -> torch.Tensor:
    """Spatial force cross product ``velocity x* force``; both [N, 6]."""
    linear, angular = velocity[:, :3], velocity[:, 3:]
    return torch.cat([torch.cross(angular, force[:, :3], dim=-1),
                      torch.cross(angular, force[:, 3:], dim=-1)
                      + torch.cross(linear, force[:, :3], dim=-1)], -1)


class AnalyticalDynamics:
    """Nominal fixed-base dynamics ``(state, torque) -> next state``, batched in torch.

    state = ``[q, qd]`` ([N, 2 * num_joints]); action = joint torques ([N, num_joints]); all
    in canonical joint order. Forces: rigid body (ABA) + URDF viscous damping (+ optional
    smooth Coulomb friction).
    """

    def __init__(self, robot: RobotModel, config: AnalyticalConfig = AnalyticalConfig(),
                 device: torch.device = torch.device("cpu"),
                 dtype: torch.dtype = torch.float32) -> None:
        config.validate()
        if robot.floating_base:
            raise ValueError("AnalyticalDynamics supports fixed-base robots only "
                             f"('{robot.urdf.root_link}' has a floating base)")
        self.config, self.device, self.dtype = config, device, dtype
        model = robot.model
        self.num_joints = robot.num_joints
        # canonical joint i is pinocchio's (internal) joint to_canonical[i]:
        # internal = canonical[:, to_internal]; canonical = internal[:, to_canonical]
        to_canonical = np.asarray(robot.v_indices)
        to_internal = np.argsort(to_canonical)
        self.to_canonical = torch.as_tensor(to_canonical, device=device)
        self.to_internal = torch.as_tensor(to_internal, device=device)
        self.parents: List[int] = [int(model.parents[i]) for i in range(1, model.njoints)]
        axes, revolute, rotations, translations, inertias = [], [], [], [], []
        neutral = pin.neutral(model)  # (cos, sin) = (1, 0) for continuous joints, not (0, 0)
        for index in range(1, model.njoints):
            joint = model.joints[index]
            joint_data = joint.createData()
            joint.calc(joint_data, neutral[joint.idx_q:joint.idx_q + joint.nq])
            subspace = np.array(joint_data.S).reshape(6)
            is_revolute = bool(np.linalg.norm(subspace[3:]) > 0)
            axes.append(subspace)
            revolute.append(is_revolute)
            rotations.append(model.jointPlacements[index].rotation)
            translations.append(model.jointPlacements[index].translation)
            inertias.append(model.inertias[index].matrix())
        tensor = self._tensor
        self.subspaces = tensor(np.array(axes))                      # [J, 6]
        self.revolute = revolute
        self.placement_rotations = tensor(np.array(rotations))       # [J, 3, 3]
        self.placement_translations = tensor(np.array(translations))  # [J, 3]
        self.inertias = tensor(np.array(inertias))                   # [J, 6, 6]
        self.armature = tensor(np.array(model.armature))             # [J]
        self.damping = tensor(robot.damping[to_internal])              # internal order
        self.friction = tensor(robot.friction[to_internal])
        self.effort_limits = tensor(robot.effort_limits[to_internal])
        gravity = np.zeros(6)
        if not config.gravity_compensated:
            gravity[:3] = -np.array(model.gravity.linear)
        self.base_acceleration = tensor(gravity)                     # [6] = -gravity
        self.kinematic_columns = [self._kinematic_columns(index) for index in range(
            self.num_joints)]
        """Per joint: its placement, axis and offset as columns that one matrix product with
        the parent's world rotation turns into world terms (see :meth:`_world_placements`)."""
        self.frame_joints = [int(frame.parentJoint) for frame in model.frames]
        """Per pinocchio frame: the joint it moves with (0: fixed to the base)."""
        self.frame_offsets = [np.array(frame.placement.translation) for frame in model.frames]
        """Per pinocchio frame: its origin in its joint's frame [3]."""
        self._frame_tables: dict = {}
        self.ee_joint: Optional[int] = None
        if robot.ee_frame_id is not None:
            frame = model.frames[robot.ee_frame_id]
            self.ee_joint = int(frame.parentJoint)
            self.ee_offset = tensor(frame.placement.translation)
            self.ee_rotation = tensor(frame.placement.rotation)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=self.dtype, device=self.device)

    def _joint_transforms(self, positions: torch.Tensor):
        """Per joint: parent->child rotation [N, 3, 3] and translation [N, 3] (child pose)."""
        rotations, translations = [], []
        for index in range(self.num_joints):
            angle = positions[:, index]
            fixed_rotation = self.placement_rotations[index]
            fixed_translation = self.placement_translations[index]
            if self.revolute[index]:
                axis_matrix = _skew(self.subspaces[index, 3:])
                sin, cos = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
                joint_rotation = (torch.eye(3, dtype=self.dtype, device=self.device)
                                  + sin * axis_matrix + (1 - cos) * (axis_matrix @ axis_matrix))
                rotations.append(fixed_rotation @ joint_rotation)
                translations.append(fixed_translation.expand(len(angle), 3))
            else:
                rotations.append(fixed_rotation.expand(len(angle), 3, 3))
                direction = fixed_rotation @ self.subspaces[index, :3]
                translations.append(fixed_translation + angle[:, None] * direction)
        return rotations, translations

    def _internal(self, values: torch.Tensor) -> torch.Tensor:
        """[N, num_joints] canonical -> pinocchio's joint order."""
        return values.index_select(1, self.to_internal)

    def _canonical(self, values: torch.Tensor) -> torch.Tensor:
        """[N, num_joints] pinocchio's joint order -> canonical."""
        return values.index_select(1, self.to_canonical)

    def forward_dynamics(self, positions: torch.Tensor, velocities: torch.Tensor,
                         torques: torch.Tensor) -> torch.Tensor:
        """Joint accelerations [N, num_joints] from q, qd, tau (all [N, num_joints]) by ABA;
        all canonical."""
        inputs = (values.to(self.device, self.dtype) for values in
                  (positions, velocities, torques))
        return self._canonical(self._forward_dynamics(*(self._internal(v) for v in inputs)))

    def _forward_dynamics(self, positions: torch.Tensor, velocities: torch.Tensor,
                          torques: torch.Tensor) -> torch.Tensor:
        """ABA in pinocchio's joint order (inputs and output [N, num_joints])."""
        num = positions.shape[0]
        tau = torques - self.damping * velocities
        if self.config.friction_velocity > 0:
            tau = tau - self.friction * torch.tanh(velocities / self.config.friction_velocity)
        rotations, translations = self._joint_transforms(positions)
        zero6 = torch.zeros(num, 6, dtype=self.dtype, device=self.device)
        transforms, velocity, bias, inertia, force = [], [], [], [], []
        for index in range(self.num_joints):
            rotation_t = rotations[index].transpose(1, 2)
            transform = torch.zeros(num, 6, 6, dtype=self.dtype, device=self.device)
            transform[:, :3, :3] = rotation_t
            transform[:, 3:, 3:] = rotation_t
            transform[:, :3, 3:] = -rotation_t @ _skew(translations[index])
            parent = self.parents[index] - 1
            parent_velocity = zero6 if parent < 0 else velocity[parent]
            joint_velocity = self.subspaces[index] * velocities[:, index:index + 1]
            body_velocity = (transform @ parent_velocity[:, :, None])[:, :, 0] + joint_velocity
            body_inertia = self.inertias[index].expand(num, 6, 6)
            transforms.append(transform)
            velocity.append(body_velocity)
            bias.append(_motion_cross(body_velocity, joint_velocity))
            inertia.append(body_inertia)
            force.append(_force_cross(body_velocity,
                                      (body_inertia @ body_velocity[:, :, None])[:, :, 0]))
        u_vectors, d_values, u_values = [None] * self.num_joints, [None] * self.num_joints, \
            [None] * self.num_joints
        for index in reversed(range(self.num_joints)):
            subspace = self.subspaces[index]
            u_vector = inertia[index] @ subspace                       # [N, 6]
            d_value = u_vector @ subspace + self.armature[index]       # [N]
            u_value = tau[:, index] - force[index] @ subspace          # [N]
            u_vectors[index], d_values[index], u_values[index] = u_vector, d_value, u_value
            parent = self.parents[index] - 1
            if parent >= 0:
                articulated = inertia[index] - (u_vector[:, :, None] * u_vector[:, None, :]
                                                / d_value[:, None, None])
                articulated_force = (force[index]
                                     + (articulated @ bias[index][:, :, None])[:, :, 0]
                                     + u_vector * (u_value / d_value)[:, None])
                transform_t = transforms[index].transpose(1, 2)
                inertia[parent] = inertia[parent] + transform_t @ articulated @ transforms[index]
                force[parent] = force[parent] + (transform_t
                                                 @ articulated_force[:, :, None])[:, :, 0]
        accelerations = [None] * self.num_joints
        joint_accelerations = []
        base = self.base_acceleration.expand(num, 6)
        for index in range(self.num_joints):
            parent = self.parents[index] - 1
            parent_acceleration = base if parent < 0 else accelerations[parent]
            acceleration = ((transforms[index] @ parent_acceleration[:, :, None])[:, :, 0]
                            + bias[index])
            qdd = (u_values[index] - (u_vectors[index] * acceleration).sum(-1)) / d_values[index]
            accelerations[index] = acceleration + self.subspaces[index] * qdd[:, None]
            joint_accelerations.append(qdd)
        return torch.stack(joint_accelerations, -1)

    def step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Next state [N, 2 * num_joints] after one control period.

        Args:
            state: [N, 2 * num_joints] = [q, qd].
            action: [N, num_joints] joint torques, held over the period.
        """
        expected = 2 * self.num_joints
        if state.ndim != 2 or state.shape[1] != expected:
            raise ValueError(f"state must be [N, {expected}], got {tuple(state.shape)}")
        if action.shape != (state.shape[0], self.num_joints):
            raise ValueError(f"action must be [{state.shape[0]}, {self.num_joints}], "
                             f"got {tuple(action.shape)}")
        state = state.to(self.device, self.dtype)
        torques = self._internal(action.to(self.device, self.dtype))
        if self.config.clip_torque:
            torques = torch.maximum(torch.minimum(torques, self.effort_limits),
                                    -self.effort_limits)
        positions = self._internal(state[:, :self.num_joints])
        velocities = self._internal(state[:, self.num_joints:])
        h = self.config.dt / self.config.substeps
        for _ in range(self.config.substeps):
            velocities = velocities + h * self._forward_dynamics(positions, velocities, torques)
            positions = positions + h * velocities
        return torch.cat([self._canonical(positions), self._canonical(velocities)], -1)

    def _kinematic_columns(self, index: int) -> torch.Tensor:
        """[10, 3] rows of joint ``index``: revolute ``[P, P K, P K^2, t]^T`` (placement
        rotation P, axis cross-product matrix K, placement translation t), so that its child's
        rotation is ``P (I + sin q K + (1 - cos q) K^2)``; prismatic ``[P, P a, 0 (5), t]^T``
        (axis a), its child's origin moving by ``q P a``."""
        rotation = self.placement_rotations[index]
        translation = self.placement_translations[index][:, None]
        if self.revolute[index]:
            axis = _skew(self.subspaces[index, 3:])
            columns = torch.cat([rotation, rotation @ axis, rotation @ axis @ axis,
                                 translation], 1)
        else:
            direction = rotation @ self.subspaces[index, :3]
            unused = torch.zeros(3, 5, dtype=self.dtype, device=self.device)
            columns = torch.cat([rotation, direction[:, None], unused, translation], 1)
        return columns.T.contiguous()

    def _world_placements(self, positions: torch.Tensor):
        """Per joint (pinocchio's order): world rotation, *transposed and batch last*
        ``[3, 3, N]`` (``[k, i, n]`` = R[i, k] of sample n), and origin ``[3, N]``, for joint
        positions [N, num_joints] in pinocchio's order.

        One small matrix product per joint, the joint's constant rows
        (:meth:`_kinematic_columns`) times the parent's world rotation, then a weighted sum
        with sin q and 1 - cos q. Batch last keeps every operation on contiguous rows: batched
        3x3 products (batch first) are several times slower on a CPU."""
        count = positions.shape[0]
        angles = positions.T                                          # [J, N]
        sines, versines = torch.sin(angles), 1.0 - torch.cos(angles)
        identity = torch.eye(3, dtype=self.dtype, device=self.device)[:, :, None].expand(
            3, 3, count)
        origin = torch.zeros(3, count, dtype=self.dtype, device=self.device)
        world_rotations, world_translations = [], []
        for index in range(self.num_joints):
            parent = self.parents[index] - 1
            parent_rotation = identity if parent < 0 else world_rotations[parent]
            parent_origin = origin if parent < 0 else world_translations[parent]
            # terms[r, i, n] = sum_j rows[r, j] R_parent[i, j]
            terms = (self.kinematic_columns[index]
                     @ parent_rotation.reshape(3, 3 * count)).view(10, 3, count)
            if self.revolute[index]:
                rotation = torch.addcmul(torch.addcmul(terms[0:3], sines[index], terms[3:6]),
                                         versines[index], terms[6:9])
                translation = parent_origin + terms[9]
            else:
                rotation = terms[0:3]
                translation = parent_origin + terms[9] + angles[index] * terms[3]
            world_rotations.append(rotation)
            world_translations.append(translation)
        return world_rotations, world_translations

    def ee_position_batch(self, positions: torch.Tensor) -> torch.Tensor:
        """End-effector positions [N, 3] in the base frame for canonical joint positions
        [N, num_joints]."""
        if self.ee_joint is None:
            raise ValueError("this robot has no end-effector frame")
        positions = self._internal(positions.to(self.device, self.dtype))
        world_rotations, world_translations = self._world_placements(positions)
        joint = self.ee_joint - 1
        return (world_translations[joint]
                + _rotate(world_rotations[joint], self.ee_offset)).T.contiguous()

    @torch.no_grad()
    def frame_positions_batch(self, positions: torch.Tensor,
                              frame_ids: Sequence[int]) -> torch.Tensor:
        """Origins [N, P, 3] in the base frame of the pinocchio frames ``frame_ids`` [P]
        (links, joints, the end effector; see ``RobotModel.frame_id``) for canonical joint
        positions [N, num_joints]: one forward pass for all of them."""
        frames = self._frame_table(tuple(int(i) for i in frame_ids))
        positions = self._internal(positions.to(self.device, self.dtype))
        world_rotations, world_translations = self._world_placements(positions)
        points = []
        for joint, offset in frames:
            if joint == 0:  # fixed to the base
                points.append(offset[:, None].expand(3, positions.shape[0]))
            elif offset is None:  # the joint's own origin
                points.append(world_translations[joint - 1])
            else:
                points.append(world_translations[joint - 1]
                              + _rotate(world_rotations[joint - 1], offset))
        return torch.stack(points).permute(2, 0, 1).contiguous()

    def _frame_table(self, frame_ids: Tuple[int, ...]) -> list:
        """Per frame: (its joint (0: the base), its origin in the joint's frame [3], None
        where it is the joint's origin), built once per set of frames."""
        if frame_ids not in self._frame_tables:
            self._frame_tables[frame_ids] = self._build_frame_table(frame_ids)
        return self._frame_tables[frame_ids]

    def _build_frame_table(self, frame_ids: Tuple[int, ...]) -> list:
        if not frame_ids:
            raise ValueError("frame_positions_batch needs at least one frame")
        if min(frame_ids) < 0 or max(frame_ids) >= len(self.frame_joints):
            raise ValueError(f"frame ids must be in [0, {len(self.frame_joints)}), "
                             f"got {list(frame_ids)}")
        table = []
        for frame in frame_ids:
            joint, offset = self.frame_joints[frame], self.frame_offsets[frame]
            at_origin = joint > 0 and not np.any(offset)
            table.append((joint, None if at_origin else self._tensor(offset)))
        return table


def pinocchio_reference_step(robot: RobotModel, state: np.ndarray, action: np.ndarray,
                             config: AnalyticalConfig) -> np.ndarray:
    """One-sample reference of :meth:`AnalyticalDynamics.step` with pinocchio (tests, checks).

    state: [2 * num_joints]; action: [num_joints]. Returns [2 * num_joints]. All canonical.
    """
    torque = np.clip(action, -robot.effort_limits, robot.effort_limits) \
        if config.clip_torque else action
    q, v = robot.integrate(robot.full_configuration(state[:robot.num_joints]),
                           robot.full_velocity(state[robot.num_joints:]), torque,
                           config.dt, config.substeps, config.friction_velocity)
    # continuous joints: the angle nearest the start, as the batched model does not wrap
    return np.concatenate([robot.joint_positions(q, near=state[:robot.num_joints]),
                           robot.joint_velocities(v)])


__all__ = ["AnalyticalConfig", "AnalyticalDynamics", "pinocchio_reference_step", "pin"]
