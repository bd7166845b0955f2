"""Settings of the safety gate (ROS-free): states, faults and the validated ``GateConfig``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import Enum, IntEnum
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from mbrl_ros.core.command_limits import (EXPLORATION_LIMIT_FRACTION, command_rate_bound,
                                          position_step_bound)
from mbrl_ros.core.trust import (DEFAULT_DISAGREEMENT_RESUME, DEFAULT_DISAGREEMENT_THRESHOLD,
                                 DEFAULT_RESUME_TICKS, RESUME_TICKS_RANGE, trust_settings_error)


CONTROL_MODES = ("effort", "position", "velocity")
FALLBACK_POLICIES = ("hold", "zero_effort", "damping")
OUT_OF_LIMITS_POLICIES = ("clamp", "fallback")
PLAN_SAMPLINGS = ("hold", "linear")
"""How the gate samples a streamed plan between its points (``plan_sampling``)."""
LIMIT_FIELDS = ("position_lower", "position_upper", "velocity_limit", "effort_limit",
                "max_position_step")
PER_JOINT_FIELDS = ("hold_kp", "hold_kd", "servo_kp", "max_command_rate") + LIMIT_FIELDS
SCALAR_FIELDS = ("control_rate_hz", "watchdog_timeout_s", "state_timeout_s",
                 "max_clock_offset_s", "disagreement_threshold", "disagreement_resume",
                 "resume_ticks", "clamp_margin", "exploration_limit_fraction", "resume_ramp_s",
                 "hold_settle_s",
                 "limit_lookahead_s", "guard_velocity_deadband", "velocity_guard_fraction")
URDF_LIMIT_KEYS = {"lower": "position_lower", "upper": "position_upper",
                   "velocity": "velocity_limit", "effort": "effort_limit",
                   "max_step": "max_position_step"}


class GateState(IntEnum):
    """Gate state; values match the STATE_* constants of mbrl_ros/msg/GateStatus."""

    PASS = 0
    CLAMPED = 1
    FALLBACK = 2
    ESTOP = 3


class CommandStatus(IntEnum):
    """What a planner command is; values match the STATUS_* constants of
    mbrl_ros/msg/PlannedCommand."""

    PLANNED = 0
    EXPLORING = 1
    RECOVERING = 2
    POLICY = 3
    FAILED = 4
    INFEASIBLE = 5


HOLD_REQUESTS = (CommandStatus.FAILED, CommandStatus.INFEASIBLE)
"""Statuses that ask the gate to hold instead of passing a command."""


class Fault(str, Enum):
    """Why the gate is not passing the planner command; values are used in ``latching_faults``."""

    NO_COMMAND = "no_command"
    INVALID_COMMAND = "invalid_command"
    STALE_COMMAND = "stale_command"
    PLANNER_FAILED = "planner_failed"
    STATE_UNAVAILABLE = "state_unavailable"
    DISAGREEMENT = "disagreement"
    OUT_OF_LIMITS = "out_of_limits"
    LIMIT_GUARD = "limit_guard"
    WORKSPACE = "workspace"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class GateConfig:
    """Safety gate settings; per-joint fields take one value (all joints) or one per joint."""

    joints: Tuple[str, ...] = ()
    """Joint names; fixes the order of commands and limits."""
    control_rate_hz: float = field(default=100.0, metadata={"range": (1.0, 10000.0)})
    """Rate of the control tick (the node's timer)."""
    control_mode: str = "effort"
    """Command interface of the downstream controller: effort, position or velocity."""
    watchdog_timeout_s: float = field(default=0.1, metadata={"range": (1e-4, 60.0)})
    """A planner command whose source joint state (its header stamp) is older than this is
    stale (fallback)."""
    state_timeout_s: float = field(default=0.1, metadata={"range": (1e-4, 60.0)})
    """A joint state whose header stamp is older than this is stale (fallback)."""
    max_clock_offset_s: float = field(default=0.05, metadata={"range": (0.0, 10.0)})
    """Stamps up to this far in the future are accepted (clock offset between hosts); later
    ones are rejected as from the future."""
    disagreement_threshold: float = DEFAULT_DISAGREEMENT_THRESHOLD
    """Fall back when the disagreement of the forwarded plan point (the message's units) exceeds
    this (inf disables the check). The planner's ``recovery`` settings must be the same."""
    disagreement_resume: float = DEFAULT_DISAGREEMENT_RESUME
    """After a disagreement fallback, resume only once disagreement stays below this..."""
    resume_ticks: int = field(default=DEFAULT_RESUME_TICKS, metadata={"range": RESUME_TICKS_RANGE})
    """...for this many consecutive control ticks (core.trust.DisagreementHysteresis)."""
    plan_sampling: str = "hold"
    """How a streamed plan is sampled between its points: "hold" (each point until the next
    one's time, as the planner's model applies an action for a whole model step) or "linear"
    (interpolated, as a joint_trajectory_controller does)."""
    fallback: str = "hold"
    """Effort-mode fallback: hold (PD hold + damping), zero_effort or damping (-kd * qd)."""
    hold_kp: Tuple[float, ...] = (20.0,)
    """Hold stiffness per joint [effort / rad]."""
    hold_kd: Tuple[float, ...] = (1.0,)
    """Hold / damping gain per joint [effort / (rad/s)]."""
    position_lower: Tuple[float, ...] = (-math.inf,)
    """Lower position limit per joint [rad or m]; finite values required in position mode,
    except for a joint without position limits (both infinite: a continuous joint)."""
    position_upper: Tuple[float, ...] = (math.inf,)
    """Upper position limit per joint [rad or m]; finite values required in position mode,
    except for a joint without position limits (both infinite: a continuous joint)."""
    velocity_limit: Tuple[float, ...] = (math.inf,)
    """Absolute velocity limit per joint; finite values required in velocity mode."""
    effort_limit: Tuple[float, ...] = (math.inf,)
    """Absolute effort limit per joint; finite values required in effort mode."""
    max_position_step: Tuple[float, ...] = (math.inf,)
    """Position mode: largest allowed |command - measured position|. The bound used is the
    smaller of this and effort_limit / servo_kp (core.command_limits); one of them must be
    finite in position mode."""
    servo_kp: Tuple[float, ...] = (0.0,)
    """Position mode: the driver's servo stiffness per joint [effort / rad] (0: unknown); with
    effort_limit it bounds |command - measured position| by effort_limit / servo_kp."""
    max_command_rate: Tuple[float, ...] = (math.inf,)
    """Position mode: largest speed of the target itself [rad/s]; the bound used is the smaller
    of this and velocity_limit. Successive outputs move at most that times the time between
    them (which also makes the return from a fallback bumpless)."""
    exploration_limit_fraction: float = field(default=EXPLORATION_LIMIT_FRACTION,
                                              metadata={"range": (1e-3, 1.0)})
    """Exploration commands get this fraction of the position step and rate bounds."""
    hold_settle_s: float = field(default=0.3, metadata={"range": (0.0, 60.0)})
    """Position mode: once the robot has come to rest this long after a hold began (every
    joint slower than guard_velocity_deadband), the hold target moves once to where it
    rests, so a joint stopped short by friction is not left pushing against it."""
    resume_ramp_s: float = field(default=0.2, metadata={"range": (0.0, 10.0)})
    """Effort/velocity mode: on leaving a fallback the output blends from the fallback to the
    planner command over this time (bumpless transfer)."""
    driver_gravity_compensation: bool = False
    """Effort mode: the driver already compensates gravity; the gate's hold adds none."""
    clamp_margin: float = field(default=0.1, metadata={"range": (0.0, 10.0)})
    """Commands beyond a limit by at most this fraction of it (of the range for positions) are
    clamped; further out they follow ``out_of_limits``."""
    out_of_limits: str = "fallback"
    """Policy for commands beyond limits + margin: fallback or clamp."""
    limit_lookahead_s: float = field(default=0.05, metadata={"range": (0.0, 10.0)})
    """Position guard: fall back if a joint would cross a position limit within this time.
    The workspace check (effort and velocity mode) looks as far ahead."""
    guard_velocity_deadband: float = field(default=1e-3, metadata={"range": (0.0, 100.0)})
    """Position guard: joints slower than this are not considered moving."""
    velocity_guard_fraction: float = field(default=1.0, metadata={"range": (1e-3, 10.0)})
    """Velocity guard: fall back when |qd| >= this * velocity_limit and the command pushes on."""
    latching_faults: Tuple[str, ...] = ("invalid_command", "internal_error")
    """Faults (Fault values) that latch the fallback until reset."""

    def __post_init__(self) -> None:
        for name in SCALAR_FIELDS:
            value = getattr(self, name)
            try:
                if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                    raise TypeError(type(value).__name__)
                if name != "resume_ticks":
                    value = float(value)
                elif float(value).is_integer():
                    value = int(value)  # 3.0 from YAML is fine; 2.5 fails validate()
            except (TypeError, ValueError, OverflowError) as exc:
                raise ValueError(f"GateConfig.{name} must be a number, got {value!r}") from exc
            object.__setattr__(self, name, value)
        for name in ("joints", "latching_faults"):
            value = getattr(self, name)
            items = [value] if isinstance(value, str) else list(value)
            object.__setattr__(self, name, tuple(str(item) for item in items))
        for name in PER_JOINT_FIELDS:
            try:
                array = np.atleast_1d(np.asarray(getattr(self, name), dtype=np.float64))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"GateConfig.{name} must be numbers: {exc}") from exc
            object.__setattr__(self, name, tuple(float(v) for v in array.ravel()))

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def per_joint(self, name: str) -> np.ndarray:
        """The per-joint field ``name`` broadcast to ``[num_joints]`` float64."""
        return np.broadcast_to(np.asarray(getattr(self, name)), (self.num_joints,)).copy()

    def validate(self) -> None:
        """Raise ValueError with a clear message if any setting is unusable."""
        n = self.num_joints
        if n == 0 or len(set(self.joints)) != n or not all(self.joints):
            raise ValueError(f"joints must be non-empty, unique names, got {list(self.joints)}")
        for name in ("control_rate_hz", "watchdog_timeout_s", "state_timeout_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be finite and > 0, got {getattr(self, name)}")
        for name, allowed in (("control_mode", CONTROL_MODES), ("fallback", FALLBACK_POLICIES),
                              ("out_of_limits", OUT_OF_LIMITS_POLICIES),
                              ("plan_sampling", PLAN_SAMPLINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.control_mode != "effort" and self.fallback != "hold":
            raise ValueError(f"fallback {self.fallback!r} needs control_mode 'effort'; "
                             f"{self.control_mode} mode always holds position / stops")
        trust = trust_settings_error(self.disagreement_threshold, self.disagreement_resume,
                                     self.resume_ticks)
        if trust:
            raise ValueError(trust)
        for name in ("clamp_margin", "limit_lookahead_s", "guard_velocity_deadband",
                     "max_clock_offset_s", "resume_ramp_s", "hold_settle_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)}")
        if not 0.0 < self.exploration_limit_fraction <= 1.0:
            raise ValueError(f"exploration_limit_fraction must be in (0, 1], got "
                             f"{self.exploration_limit_fraction}")
        if not isinstance(self.driver_gravity_compensation, (bool, np.bool_)):
            raise ValueError("driver_gravity_compensation must be true or false, got "
                             f"{self.driver_gravity_compensation!r}")
        if not (math.isfinite(self.velocity_guard_fraction) and self.velocity_guard_fraction > 0):
            raise ValueError(f"velocity_guard_fraction must be > 0, got "
                             f"{self.velocity_guard_fraction}")
        unknown = set(self.latching_faults) - {fault.value for fault in Fault}
        if unknown:
            raise ValueError(f"latching_faults has unknown faults {sorted(unknown)}; "
                             f"known: {[fault.value for fault in Fault]}")
        self._validate_per_joint()

    def _validate_per_joint(self) -> None:
        n = self.num_joints
        for name in PER_JOINT_FIELDS:
            values = np.asarray(getattr(self, name))
            if len(values) not in (1, n):
                raise ValueError(f"{name} has {len(values)} values; need 1 or {n} (one per joint)")
            if np.isnan(values).any():
                raise ValueError(f"{name} contains NaN: {list(values)}")
        for name in ("hold_kp", "hold_kd", "servo_kp"):
            values = self.per_joint(name)
            if not (np.isfinite(values).all() and (values >= 0).all()):
                raise ValueError(f"{name} must be finite and >= 0, got {list(values)}")
        for name in ("velocity_limit", "effort_limit", "max_position_step", "max_command_rate"):
            if not (self.per_joint(name) > 0).all():
                raise ValueError(f"{name} must be > 0, got {list(self.per_joint(name))}")
        lower, upper = self.per_joint("position_lower"), self.per_joint("position_upper")
        if not (lower < upper).all():
            raise ValueError(f"need position_lower < position_upper, got {list(lower)} and "
                             f"{list(upper)}")
        required = {"effort": ("effort_limit",), "velocity": ("velocity_limit",),
                    "position": ("position_lower", "position_upper")}
        # position mode: a joint without position limits (a continuous joint: both infinite)
        # is bounded by the step bound alone; one infinite bound of two is a missing setting
        unlimited = np.isinf(lower) & np.isinf(upper) if self.control_mode == "position" \
            else np.zeros(n, dtype=bool)
        for name in required[self.control_mode]:
            if not (np.isfinite(self.per_joint(name)) | unlimited).all():
                raise ValueError(f"{name} must be finite in {self.control_mode} mode (set it from "
                                 f"the robot config), got {list(self.per_joint(name))}")
        if self.control_mode == "position" and not np.isfinite(self.position_step()).all():
            raise ValueError("position mode needs a bound on |command - measured position| per "
                             "joint: servo_kp (with effort_limit, from the URDF) or "
                             f"max_position_step; got servo_kp {list(self.per_joint('servo_kp'))}"
                             f", max_position_step {list(self.per_joint('max_position_step'))}")

    def position_step(self) -> np.ndarray:
        """[num_joints] bound on |command - measured position| (core.command_limits rule)."""
        return position_step_bound(self.per_joint("effort_limit"), self.per_joint("servo_kp"),
                                   self.per_joint("max_position_step"))

    def command_rate(self) -> np.ndarray:
        """[num_joints] bound on the speed of position targets (core.command_limits rule)."""
        return command_rate_bound(self.per_joint("velocity_limit"),
                                  self.per_joint("max_command_rate"))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any],
                  urdf_limits: Optional[Mapping[str, Any]] = None) -> "GateConfig":
        """Build and validate a config from a mapping (robot config YAML or node parameters).

        Limits may also come as ``joint_limits``: either arrays keyed like the fields
        (``position_lower``, ``velocity_limit``, ...) or per joint name, URDF style
        (``{joint: {lower, upper, velocity, effort, max_step}}``); missing URDF keys mean no limit.
        ``urdf_limits`` (joint name -> mapping or object with lower/upper/velocity/effort, e.g.
        ``urdf_resolver.JointLimits``) supplies ``joints`` when none are given (all, in order)
        and every limit still at its default.
        """
        values = dict(values)
        limits = values.pop("joint_limits", None)
        if limits is not None:
            for key, value in _limits_from_mapping(limits, values.get("joints", ())).items():
                if key in values:
                    raise ValueError(f"{key} is given both flat and in joint_limits")
                values[key] = value
        if urdf_limits:
            _fill_from_urdf(values, urdf_limits, cls())
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown safety gate settings: {sorted(unknown)}")
        config = cls(**values)
        config.validate()
        return config


def _fill_from_urdf(values: Dict[str, Any], urdf_limits: Mapping[str, Any],
                    defaults: GateConfig) -> None:
    """Set ``joints`` and the limits left at their defaults in ``values`` from URDF limits."""
    joints = values.get("joints") or list(urdf_limits)
    joints = [joints] if isinstance(joints, str) else list(joints)
    missing = [joint for joint in joints if joint not in urdf_limits]
    if missing:
        raise ValueError(f"joints {missing} are not actuated joints of the URDF")
    values["joints"] = joints
    for key, name in URDF_LIMIT_KEYS.items():
        if tuple(np.atleast_1d(values.get(name, ()))) not in ((), getattr(defaults, name)):
            continue  # set explicitly: the parameter wins over the URDF
        entries = [urdf_limits[joint] for joint in joints]
        found = [entry.get(key) if isinstance(entry, Mapping) else getattr(entry, key, None)
                 for entry in entries]
        if all(value is not None for value in found):
            values[name] = [float(value) for value in found]


def _limits_from_mapping(limits: Mapping[str, Any], joints: Sequence[str]) -> Dict[str, list]:
    """``joint_limits`` (arrays by field, or URDF-style per joint) -> per-joint field arrays."""
    if not isinstance(limits, Mapping):
        raise ValueError(f"joint_limits must be a mapping, got {type(limits).__name__}")
    if set(limits) & set(LIMIT_FIELDS):
        unknown = set(limits) - set(LIMIT_FIELDS)
        if unknown:
            raise ValueError(f"joint_limits has unknown keys {sorted(unknown)}")
        return {key: list(np.atleast_1d(value)) for key, value in limits.items()}
    joints = [joints] if isinstance(joints, str) else list(joints)
    missing = [joint for joint in joints if joint not in limits]
    if missing:
        raise ValueError(f"joint_limits has no entry for joints {missing}")
    defaults = {"lower": -math.inf, "upper": math.inf, "velocity": math.inf,
                "effort": math.inf, "max_step": math.inf}
    result: Dict[str, list] = {field_name: [] for field_name in URDF_LIMIT_KEYS.values()}
    for joint in joints:
        entry = dict(limits[joint] or {})
        unknown = set(entry) - set(URDF_LIMIT_KEYS)
        if unknown:
            raise ValueError(f"joint_limits[{joint}] has unknown keys {sorted(unknown)}; "
                             f"known: {sorted(URDF_LIMIT_KEYS)}")
        for key, field_name in URDF_LIMIT_KEYS.items():
            result[field_name].append(float(entry.get(key, defaults[key])))
    return result
