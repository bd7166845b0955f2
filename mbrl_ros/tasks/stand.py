"""Quadruped stand-up task: state layout, base features and the stand cost.

State (the trainer's aligned vector with ``data.odom_topic`` set, so planner and trainer agree
without a conversion step), ``state_dim = 2 J + 13``::

    [q (J), qd (J), px, py, pz, qx, qy, qz, qw, vx, vy, vz, wx, wy, wz]

where ``p`` is the base position and ``q?`` its orientation quaternion (xyzw, world frame, from
nav_msgs/Odometry), ``v`` / ``w`` the base linear and angular velocity *in the base frame*
(the odometry twist's frame). Action = one joint position target per joint (position mode: the
drive's PD servo tracks it, as real quadruped drivers do).

The cost reads only frame-invariant features of that state: the base height ``pz``, the
gravity direction in the base frame ``g_b = R^T (0, 0, -1)`` (computed from the quaternion,
renormalised, so it is defined for any predicted 4-vector and does not depend on yaw), the
base-frame twist, and the joints. :func:`base_features` gives the compact, frame-invariant
summary ``[height, g_b (3), v (3), w (3)]`` of a state for logging and benchmarks.

The learned model is made frame-invariant the same way (:class:`HeadingFrameModel`): the
network sees each state in its *heading frame* (base x/y moved to the origin and the yaw
turned to zero, so its inputs are the height, roll/pitch as a yaw-free quaternion, the base-frame
twist and the joints) and its prediction is moved back to the odometry frame. The state layout
(what the trainer aligns and the planner builds) stays the odometry one above.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from mbrl_ros.core.costs import (CostTerm, JointPositionCost, SmoothnessCost, TaskCost,
                                 VelocityCost)
from mbrl_ros.core.dynamics_model import DynamicsModel, as_model_input
from mbrl_ros.core.exploration import ExplorationConfig, SmoothExplorer
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.robots.trajectory import joint_path

ODOM_SIZE = 13
"""Base state appended to ``[q, qd]``: position (3), quaternion xyzw (4), twist (6)."""
FEATURE_NAMES = ("height", "gravity_x", "gravity_y", "gravity_z", "vx", "vy", "vz",
                 "wx", "wy", "wz")
"""Names of the columns of :func:`base_features`."""
EXPLORATION_TARGETS = ("path", "box")
"""How the stand explorer draws its joint targets (see :class:`StandTaskConfig`)."""


@dataclass(frozen=True)
class StandLayout:
    """Where each part of the stand state lies, for ``num_joints`` joints."""

    num_joints: int
    """Actuated joints J."""

    @property
    def state_dim(self) -> int:
        """``2 J + 13``."""
        return 2 * self.num_joints + ODOM_SIZE

    @property
    def positions(self) -> slice:
        """Joint positions ``[J]``."""
        return slice(0, self.num_joints)

    @property
    def velocities(self) -> slice:
        """Joint velocities ``[J]``."""
        return slice(self.num_joints, 2 * self.num_joints)

    @property
    def base_position(self) -> slice:
        """Base position xyz ``[3]`` (odometry frame)."""
        return slice(2 * self.num_joints, 2 * self.num_joints + 3)

    @property
    def height(self) -> int:
        """Index of the base height ``pz``."""
        return 2 * self.num_joints + 2

    @property
    def quaternion(self) -> slice:
        """Base orientation quaternion xyzw ``[4]``."""
        return slice(2 * self.num_joints + 3, 2 * self.num_joints + 7)

    @property
    def linear_velocity(self) -> slice:
        """Base linear velocity in the base frame ``[3]``."""
        return slice(2 * self.num_joints + 7, 2 * self.num_joints + 10)

    @property
    def angular_velocity(self) -> slice:
        """Base angular velocity in the base frame ``[3]``."""
        return slice(2 * self.num_joints + 10, 2 * self.num_joints + 13)


def stand_state(position: np.ndarray, velocity: np.ndarray, odom: np.ndarray) -> np.ndarray:
    """The stand state ``[2 J + 13]`` from joints ``[J]``, ``[J]`` and odometry ``[13]``
    (:func:`odom_vector`); ValueError on wrong sizes or non-finite values."""
    position, velocity = np.asarray(position, float).ravel(), np.asarray(velocity, float).ravel()
    odom = np.asarray(odom, dtype=float).ravel()
    if position.shape != velocity.shape or odom.shape != (ODOM_SIZE,):
        raise ValueError(f"stand state needs q and qd of one size and {ODOM_SIZE} odometry "
                         f"values; got {position.size}, {velocity.size}, {odom.size}")
    state = np.concatenate([position, velocity, odom])
    if not np.all(np.isfinite(state)):
        raise ValueError("stand state has NaN or inf values")
    return state


def odom_vector(position: Sequence[float], quaternion_xyzw: Sequence[float],
                linear: Sequence[float], angular: Sequence[float]) -> np.ndarray:
    """``[13]`` base state in the trainer's odometry order: position, quaternion xyzw
    (normalised; ValueError if zero), linear and angular velocity (base frame)."""
    quaternion = np.asarray(quaternion_xyzw, dtype=float).ravel()
    norm = np.linalg.norm(quaternion)
    if quaternion.shape != (4,) or not norm > 1e-9:
        raise ValueError(f"base orientation must be a non-zero quaternion, got {quaternion}")
    parts = [np.asarray(p, dtype=float).ravel() for p in (position, linear, angular)]
    if any(p.shape != (3,) for p in parts):
        raise ValueError("base position, linear and angular velocity need 3 values each")
    return np.concatenate([parts[0], quaternion / norm, parts[1], parts[2]])


def gravity_in_base(quaternion_xyzw):
    """Unit gravity direction in the base frame ``R^T (0, 0, -1)`` from quaternions
    ``[..., 4]`` (xyzw, base -> world; renormalised) -> ``[..., 3]``; numpy or torch.

    Upright: ``(0, 0, -1)``; independent of yaw."""
    x, y, z, w = (quaternion_xyzw[..., i] for i in range(4))
    scale = 2.0 / (x * x + y * y + z * z + w * w + 1e-12)
    columns = (-scale * (x * z - w * y), -scale * (y * z + w * x),
               -(1.0 - scale * (x * x + y * y)))
    if isinstance(quaternion_xyzw, torch.Tensor):
        return torch.stack(columns, dim=-1)
    return np.stack(columns, axis=-1)


def tilt_angle(quaternion_xyzw: np.ndarray) -> np.ndarray:
    """Angle between the base's z axis and the world's vertical [rad], ``[..., 4] -> [...]``
    (roll and pitch combined; 0 upright, pi upside down)."""
    gravity = gravity_in_base(np.asarray(quaternion_xyzw, dtype=float))
    return np.arccos(np.clip(-gravity[..., 2], -1.0, 1.0))


def base_features(states: np.ndarray, num_joints: int) -> np.ndarray:
    """Frame-invariant base summary ``[..., 2 J + 13] -> [..., 10]``: height, gravity in the
    base frame (3), base linear and angular velocity (3 + 3) (see ``FEATURE_NAMES``)."""
    layout = StandLayout(num_joints)
    states = np.asarray(states, dtype=float)
    if states.shape[-1] != layout.state_dim:
        raise ValueError(f"stand states have {layout.state_dim} columns, got {states.shape[-1]}")
    return np.concatenate([states[..., layout.height:layout.height + 1],
                           gravity_in_base(states[..., layout.quaternion]),
                           states[..., layout.linear_velocity],
                           states[..., layout.angular_velocity]], axis=-1)


@dataclass(frozen=True)
class StandCostConfig:
    """Weights and targets of the stand cost; a weight of 0 leaves its term out."""

    height_target: float = 0.30
    """Base height to hold [m] (odometry z of the base origin)."""
    height_weight: float = 500.0
    """Cost per squared metre of base height error, per step."""
    upright_weight: float = 50.0
    """Cost per unit of ``||g_b - (0, 0, -1)||^2`` (about tilt^2 for small tilts), per step."""
    posture: Tuple[float, ...] = ()
    """Standing joint positions [J] (URDF order); required when posture_weight > 0."""
    posture_weight: float = 2.0
    """Cost per squared rad of joint distance to ``posture``, per step."""
    joint_velocity_weight: float = 0.01
    """Cost per squared rad/s of joint velocity, per step."""
    linear_velocity_weight: float = 2.0
    """Cost per squared m/s of base linear velocity, per step."""
    angular_velocity_weight: float = 0.5
    """Cost per squared rad/s of base angular velocity, per step."""
    effort_weight: float = 0.5
    """Cost per squared rad of servo deflection (position target - joint position), a proxy
    of the PD torque, per step."""
    smoothness_weight: float = 0.0
    """Cost per squared rad of change between consecutive position targets."""
    discount: float = 1.0
    """Per-step discount of the task cost over the horizon."""

    def validate(self) -> "StandCostConfig":
        """Raise ValueError on negative weights, a bad height or discount; return self."""
        for name in ("height_weight", "upright_weight", "posture_weight",
                     "joint_velocity_weight", "linear_velocity_weight",
                     "angular_velocity_weight", "effort_weight", "smoothness_weight"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"StandCostConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not (np.isfinite(self.height_target) and self.height_target > 0.0):
            raise ValueError(f"StandCostConfig.height_target must be > 0, "
                             f"got {self.height_target}")
        if not 0.0 < self.discount <= 1.0:
            raise ValueError(f"StandCostConfig.discount must be in (0, 1], got {self.discount}")
        if self.posture_weight > 0.0 and not self.posture:
            raise ValueError("StandCostConfig.posture (the standing joint positions) is required "
                             "when posture_weight > 0")
        return self


class UprightCost(CostTerm):
    """``weight * ||g_b - (0, 0, -1)||^2`` with ``g_b`` the gravity direction in the base frame
    from the predicted quaternion (xyzw) at ``indices``."""

    name = "upright"

    def __init__(self, quaternion: slice, weight: float) -> None:
        self.quaternion, self.weight = quaternion, float(weight)

    def per_step(self, states, actions):
        gravity = gravity_in_base(states[:, 1:, self.quaternion])
        error = gravity[..., 0].square() + gravity[..., 1].square() + (gravity[..., 2] + 1.0
                                                                       ).square()
        return self.weight * error


class ServoEffortCost(CostTerm):
    """``weight * ||a_t - q_t||^2``: position targets far from the joints they drive (the PD
    servo's torque is proportional to the deflection)."""

    name = "servo_effort"

    def __init__(self, positions: slice, weight: float) -> None:
        self.positions, self.weight = positions, float(weight)

    def per_step(self, states, actions):
        deflection = actions - states[:, :-1, self.positions]
        return self.weight * deflection.square().sum(dim=-1)


def build_stand_cost(num_joints: int, config: StandCostConfig,
                     device: torch.device) -> TaskCost:
    """The stand cost over ``states: [N, H+1, 2 J + 13]`` and position-target actions
    ``[N, H, J]`` -> ``[N]`` (a :class:`TaskCost`)."""
    config.validate()
    layout = StandLayout(num_joints)
    dim, joints = layout.state_dim, list(range(num_joints))
    terms: list = [JointPositionCost([layout.height], [config.height_target],
                                     config.height_weight, dim, device)]
    if config.upright_weight > 0:
        terms.append(UprightCost(layout.quaternion, config.upright_weight))
    if config.posture_weight > 0:
        if len(config.posture) != num_joints:
            raise ValueError(f"posture needs {num_joints} values, got {len(config.posture)}")
        terms.append(JointPositionCost(joints, list(config.posture), config.posture_weight,
                                       dim, device))
    for weight, part in ((config.joint_velocity_weight, layout.velocities),
                         (config.linear_velocity_weight, layout.linear_velocity),
                         (config.angular_velocity_weight, layout.angular_velocity)):
        if weight > 0:
            terms.append(VelocityCost(list(range(part.start, part.stop)), weight, dim, device))
    if config.effort_weight > 0:
        terms.append(ServoEffortCost(layout.positions, config.effort_weight))
    if config.smoothness_weight > 0:
        terms.append(SmoothnessCost(config.smoothness_weight, num_joints, device))
    return TaskCost(terms, config.discount)


@dataclass(frozen=True)
class StandTaskConfig:
    """Stand-task settings besides the cost: where exploration moves the legs."""

    crouch: Tuple[float, ...] = ()
    """Crouching joint positions [J] (URDF order), where the robot starts."""
    exploration_targets: str = "path"
    """"path": each random target lies on the straight joint path from the crouch to the
    standing posture (at the standing end with ``stand_probability``, else anywhere on it),
    plus a uniform deviation of at most ``path_deviation_fraction`` of each joint's range;
    "box": uniform in the box spanning crouch and standing posture plus
    ``exploration_margin`` (legs thrown anywhere in it: more falls)."""
    path_deviation_fraction: float = 0.05
    """"path": largest deviation of a target from the crouch-stand path, as a fraction of each
    joint's range (URDF limits), so the rule scales to any leg."""
    stand_probability: float = 0.5
    """"path": share of targets drawn around the standing posture itself (the rest anywhere
    between crouch and stand): data where the controller will spend its time."""
    exploration_margin: float = 0.25
    """"box": targets span the crouch and standing postures plus this margin [rad]."""
    limit_margin: float = 0.15
    """Exploration targets stay this far inside the joint limits [rad] (clear of the safety
    gate's limit guard)."""

    def validate(self) -> "StandTaskConfig":
        """Raise ValueError on a missing crouch or an out-of-range field; return self."""
        if not self.crouch:
            raise ValueError("StandTaskConfig.crouch (the crouching joint positions) is required")
        for name in ("exploration_margin", "limit_margin", "path_deviation_fraction"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"StandTaskConfig.{name} must be >= 0, "
                                 f"got {getattr(self, name)}")
        if not 0.0 <= self.stand_probability <= 1.0:
            raise ValueError("StandTaskConfig.stand_probability must be in [0, 1], "
                             f"got {self.stand_probability}")
        if self.exploration_targets not in EXPLORATION_TARGETS:
            raise ValueError(f"StandTaskConfig.exploration_targets must be one of "
                             f"{EXPLORATION_TARGETS}, got {self.exploration_targets!r}")
        return self


class PathTargets:
    """Random joint targets near the straight path from ``crouch`` to ``stand`` (a
    ``SmoothExplorer`` goal sampler): a point of the path (the standing end with
    ``stand_probability``, else uniform along it) plus a uniform deviation of at most
    ``deviation`` [J] per joint, clipped to ``[lower, upper]``."""

    def __init__(self, crouch: Sequence[float], stand: Sequence[float], deviation: np.ndarray,
                 stand_probability: float, lower: np.ndarray, upper: np.ndarray) -> None:
        self.crouch, self.stand = np.asarray(crouch, float), np.asarray(stand, float)
        self.deviation = np.asarray(deviation, float)
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.stand_probability = float(stand_probability)
        if not (self.crouch.shape == self.stand.shape == self.lower.shape == self.upper.shape):
            raise ValueError(f"crouch, stand and limits need {self.lower.size} values each; "
                             f"got {self.crouch.size}, {self.stand.size}")

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        along = 1.0 if rng.random() < self.stand_probability else rng.random()
        point = self.crouch + along * (self.stand - self.crouch)
        offset = rng.uniform(-1.0, 1.0, self.deviation.shape) * self.deviation
        return np.clip(point + offset, self.lower, self.upper)


def stand_explorer(config: ExplorationConfig, task: StandTaskConfig, posture: Sequence[float],
                   lower: np.ndarray, upper: np.ndarray, period_s: float,
                   velocity_limits: np.ndarray,
                   position_lead: Optional[np.ndarray] = None) -> SmoothExplorer:
    """Smooth random joint position targets between the crouch and ``posture`` (standing),
    drawn as ``task.exploration_targets`` says; ``position_lead``: what the safety gate passes
    for exploration (see SmoothExplorer)."""
    task.validate()
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    inner_low, inner_high = lower + task.limit_margin, upper - task.limit_margin
    if task.exploration_targets == "box":
        box_low, box_high = exploration_box(task.crouch, posture, task.exploration_margin,
                                            inner_low, inner_high)
        return SmoothExplorer(config, "position", box_low, box_high, box_high - box_low,
                              period_s, None, velocity_limits, position_lead)
    deviation = task.path_deviation_fraction * (upper - lower)
    box_low, box_high = exploration_box(task.crouch, posture, deviation, inner_low, inner_high)
    targets = PathTargets(task.crouch, posture, deviation, task.stand_probability,
                          box_low, box_high)
    return SmoothExplorer(config, "position", box_low, box_high, box_high - box_low, period_s,
                          None, velocity_limits, position_lead, goal_sampler=targets)


def exploration_box(crouch: Sequence[float], stand: Sequence[float], margin,
                    lower: np.ndarray, upper: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Joint box ``([J], [J])`` spanning the crouch and standing postures plus ``margin`` [rad]
    (one value or one per joint), inside the joint limits: smooth random position targets drawn
    in it move the robot between crouching and standing without throwing its legs to their
    limits."""
    crouch, stand = np.asarray(crouch, dtype=float), np.asarray(stand, dtype=float)
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    margin = np.asarray(margin, dtype=float)
    if not (crouch.shape == stand.shape == lower.shape == upper.shape) or np.any(margin < 0):
        raise ValueError(f"crouch, stand and limits need {lower.size} values each and "
                         f"margin >= 0; got {crouch.size}, {stand.size}, margin {margin}")
    box_low = np.clip(np.minimum(crouch, stand) - margin, lower, upper)
    box_high = np.clip(np.maximum(crouch, stand) + margin, lower, upper)
    return box_low, box_high


class PostureWarmStart:
    """Seeds the stand planner with a joint path from the current position to the standing
    posture (at ``speed_fraction`` of the velocity limits, then held): what a scripted stand-up
    does, as the first guess the learned model and the sampling then correct (balance, pushes).
    """

    def __init__(self, posture: Sequence[float], velocity_limits: np.ndarray, period_s: float,
                 speed_fraction: float = 0.5) -> None:
        if not 0.0 < speed_fraction <= 1.0:
            raise ValueError(f"speed_fraction must be in (0, 1], got {speed_fraction}")
        self.posture = np.asarray(posture, dtype=float)
        self.max_step = speed_fraction * np.asarray(velocity_limits, dtype=float) * period_s
        if self.posture.shape != self.max_step.shape:
            raise ValueError(f"posture needs {self.max_step.size} values, "
                             f"got {self.posture.size}")

    def __call__(self, position: np.ndarray, goal, horizon: int) -> np.ndarray:
        """[horizon, J] position targets (``goal`` is unused: the posture is the goal)."""
        return joint_path(position, self.posture, horizon, self.max_step)


def stand_warm_start(posture: Sequence[float], velocity_limits: np.ndarray, period_s: float,
                     speed_fraction: float) -> Optional[PostureWarmStart]:
    """The stand task's seed (a path to ``posture``); ``speed_fraction`` 0 disables it."""
    if speed_fraction <= 0:
        return None
    return PostureWarmStart(posture, velocity_limits, period_s, speed_fraction)


def stand_planner_limits(position_lower: np.ndarray, position_upper: np.ndarray,
                         velocity_limits: np.ndarray, velocity_limit_fraction: float) -> dict:
    """Default planner bounds of the stand task (PlannerConfig fields): position targets within
    the joint limits; predicted joints within their position limits and
    ``velocity_limit_fraction`` x the velocity limits; the base state free."""
    velocity = velocity_limit_fraction * np.asarray(velocity_limits, dtype=float)
    free = np.full(ODOM_SIZE, np.inf)
    return dict(action_low=tuple(np.asarray(position_lower, dtype=float)),
                action_high=tuple(np.asarray(position_upper, dtype=float)),
                state_low=tuple(np.concatenate([position_lower, -velocity, -free])),
                state_high=tuple(np.concatenate([position_upper, velocity, free])))


class HeadingFrame(NamedTuple):
    """Where a stand state's heading frame lies in the odometry frame: base ``x``, ``y``, the
    cosine and sine of half the yaw, and the sign that makes the heading-frame quaternion's
    ``w`` non-negative; each ``[...]`` (torch)."""

    x: torch.Tensor
    y: torch.Tensor
    half_cos: torch.Tensor
    half_sin: torch.Tensor
    sign: torch.Tensor


def heading_frame(states: torch.Tensor, layout: StandLayout) -> HeadingFrame:
    """The heading frame of ``states [..., 2 J + 13]`` (see :class:`HeadingFrame`)."""
    position, quaternion = states[..., layout.base_position], states[..., layout.quaternion]
    x, y, z, w = (quaternion[..., i] for i in range(4))
    yaw = torch.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    half_cos, half_sin = torch.cos(0.5 * yaw), torch.sin(0.5 * yaw)
    heading_w = half_cos * w + half_sin * z  # w of the yaw-free quaternion
    sign = torch.where(heading_w < 0, -torch.ones_like(w), torch.ones_like(w))
    return HeadingFrame(position[..., 0], position[..., 1], half_cos, half_sin, sign)


def _turn(states: torch.Tensor, frame: HeadingFrame, layout: StandLayout,
          inverse: bool) -> torch.Tensor:
    """Move states into (``inverse``) or out of the heading frame ``frame``: base x/y shifted
    and turned by the yaw, the quaternion pre-multiplied by the (inverse) yaw rotation and
    given the frame's sign; the height, the base-frame twist and the joints are unchanged."""
    start = layout.base_position.start
    cos_half, sin_half = frame.half_cos, frame.half_sin
    cos, sin = cos_half * cos_half - sin_half * sin_half, 2.0 * sin_half * cos_half
    px, py = states[..., start], states[..., start + 1]
    qx, qy, qz, qw = (states[..., layout.quaternion][..., i] for i in range(4))
    if inverse:
        dx, dy = px - frame.x, py - frame.y
        new_x, new_y = cos * dx + sin * dy, cos * dy - sin * dx
        sin_half = -sin_half
    else:
        new_x, new_y = frame.x + cos * px - sin * py, frame.y + sin * px + cos * py
    # (0, 0, sin_half, cos_half) (x) q, xyzw
    quaternion = torch.stack([cos_half * qx - sin_half * qy, cos_half * qy + sin_half * qx,
                              cos_half * qz + sin_half * qw, cos_half * qw - sin_half * qz],
                             dim=-1) * frame.sign.unsqueeze(-1)
    return torch.cat([states[..., :start], new_x.unsqueeze(-1), new_y.unsqueeze(-1),
                      states[..., start + 2:layout.quaternion.start], quaternion,
                      states[..., layout.quaternion.stop:]], dim=-1)


def to_heading_frame(states: torch.Tensor, frame: HeadingFrame,
                     layout: StandLayout) -> torch.Tensor:
    """``states [..., S]`` expressed in the heading frame ``frame`` (broadcast to them)."""
    return _turn(states, frame, layout, inverse=True)


def from_heading_frame(states: torch.Tensor, frame: HeadingFrame,
                       layout: StandLayout) -> torch.Tensor:
    """Inverse of :func:`to_heading_frame`."""
    return _turn(states, frame, layout, inverse=False)


class HeadingFrameModel(DynamicsModel):
    """A stand-state model that is invariant to the base's x/y position and yaw: the wrapped
    model (e.g. the network ensemble) learns and predicts every transition in the heading frame
    of its current state (base at x = y = 0, yaw 0; see :func:`heading_frame`) and its
    predictions are moved back to the odometry frame. The layout of the states it takes and
    returns is the odometry one (:class:`StandLayout`), so the trainer's aligned data and the
    planner's states are used as they are. Everything else is delegated to the wrapped model;
    a checkpoint is the wrapped model's (the frame change has no parameters)."""

    def __init__(self, model: DynamicsModel, num_joints: int) -> None:
        self.model, self.layout = model, StandLayout(num_joints)
        if int(model.state_dim) != self.layout.state_dim:
            raise ValueError(f"the stand model needs state_dim {self.layout.state_dim} for "
                             f"{num_joints} joints, got {model.state_dim}")

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes not defined here: delegate to the wrapped model (none
        # yet while unpickling)
        if "model" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["model"], name)

    @property
    def state_dim(self) -> int:
        return self.model.state_dim

    @property
    def action_dim(self) -> int:
        return self.model.action_dim

    @property
    def num_members(self) -> int:
        return self.model.num_members

    @property
    def device(self) -> torch.device:
        return self.model.device

    def predict(self, state, action, grad: bool = False, **kwargs):
        """The wrapped model's ``(mean, var)`` [E, N, S], computed in each state's heading
        frame; the mean is returned in the odometry frame (the variance as predicted)."""
        state = as_model_input(state, self.device)
        frame = heading_frame(state, self.layout)
        mean, var = self.model.predict(to_heading_frame(state, frame, self.layout), action,
                                       grad=grad, **kwargs)
        return from_heading_frame(mean, frame, self.layout), var

    def disagreement(self, mean: torch.Tensor) -> torch.Tensor:
        """The wrapped model's disagreement of ``mean [E, ..., S]``, with every member's
        prediction in the heading frame of the first member's."""
        frame = heading_frame(mean[:1], self.layout)
        return self.model.disagreement(to_heading_frame(mean, frame, self.layout))

    def heading_batch(self, batch: TransitionBatch) -> TransitionBatch:
        """``batch`` with each transition's state and next state in the state's heading frame
        (what the wrapped model is trained on)."""
        state = torch.as_tensor(np.asarray(batch.state, dtype=np.float64))
        next_state = torch.as_tensor(np.asarray(batch.next_state, dtype=np.float64))
        frame = heading_frame(state, self.layout)
        dtype = np.asarray(batch.state).dtype
        return dataclasses.replace(
            batch, state=to_heading_frame(state, frame, self.layout).numpy().astype(dtype),
            next_state=to_heading_frame(next_state, frame, self.layout).numpy().astype(dtype))

    def loss(self, batch: TransitionBatch) -> torch.Tensor:
        return self.model.loss(self.heading_batch(batch))

    def fit(self, batch: TransitionBatch, seed: int = 0, progress=None, **kwargs):
        """Train the wrapped model on ``batch`` in its heading frames (:meth:`heading_batch`)."""
        return self.model.fit(self.heading_batch(batch), seed=seed, progress=progress, **kwargs)

    def save(self, path: str, metadata: Optional[Mapping[str, Any]] = None) -> str:
        """The wrapped model's checkpoint, with ``frame: heading`` in its metadata."""
        return self.model.save(path, {**dict(metadata or {}), "frame": "heading"})

    @classmethod
    def load(cls, path: str, expected_sha256: Optional[str] = None,
             device: Optional[torch.device | str] = None, **kwargs: Any) -> "HeadingFrameModel":
        """Load the wrapped model's checkpoint; keyword ``num_joints`` is required."""
        if "num_joints" not in kwargs:
            raise ValueError("HeadingFrameModel.load needs num_joints=")
        return cls(load_model(path, expected_sha256, device), int(kwargs["num_joints"]))
