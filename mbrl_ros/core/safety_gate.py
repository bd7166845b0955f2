"""Safety gate between the planner and the robot (ROS-free).

Modelled on nav2 MPPI's ``OptimalTrajectoryValidator`` (SUCCESS / SOFT_RESET / FAILURE): every
control tick the gate judges the latest planner command and either passes it (PASS), passes it
clamped to the limits (CLAMPED), or replaces it with a fallback command (FALLBACK, ESTOP).
Transient faults (stale command, stale state, high disagreement, a failed plan, limits) recover
by themselves like a soft reset; faults named in ``GateConfig.latching_faults`` and the e-stop
latch like a failure until :meth:`SafetyGate.reset` succeeds. :meth:`SafetyGate.tick` never
raises.

Each command is judged by its own fields (:class:`GateCommand`, the ROS-free form of
``mbrl_ros/msg/PlannedCommand``): its age from the stamp of the joint state the plan started
from, its status (a failed or infeasible plan asks for a hold; exploration gets tighter limits),
and the disagreement of the plan point it forwards. A plan of several timed points is sampled
at the current time (each point held until the next one's time, or linearly interpolated:
``plan_sampling``; never past its last point).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from mbrl_ros.core.command_limits import rate_limited
from mbrl_ros.core.safety_gate_config import (  # noqa: F401 - re-exported API
    CONTROL_MODES, FALLBACK_POLICIES, HOLD_REQUESTS, CommandStatus, Fault, GateConfig, GateState)
from mbrl_ros.core.trust import DisagreementHysteresis
from mbrl_ros.core.workspace import WorkspaceGuard

logger = logging.getLogger(__name__)

RATE_LIMIT_MAX_PERIODS = 2.0
"""The rate limit lets a target move for at most this many control periods between two outputs
(a gap in the output stream never releases a jump)."""
GravityFn = Callable[[np.ndarray], np.ndarray]
"""``gravity(positions [J]) -> [J]`` joint efforts that hold the robot still (gate order)."""


@dataclass(frozen=True)
class GateCommand:
    """One planner command: timed points of a plan, in the gate's joint order."""

    points: np.ndarray
    """[P, num_joints] commands; the first applies at ``times[0]`` after ``source_stamp``."""
    times: np.ndarray
    """[P] seconds after ``source_stamp``, non-decreasing."""
    disagreement: np.ndarray
    """[P] the plan's ensemble disagreement from each point on (message units)."""
    status: int
    """A :class:`CommandStatus` value."""
    source_stamp: float
    """Header stamp of the joint state the plan started from [s, gate clock]."""
    reason: str = ""
    """Why, for FAILED / INFEASIBLE."""

    @classmethod
    def single(cls, command: Any, source_stamp: float, disagreement: float = 0.0,
               status: int = CommandStatus.PLANNED, **kwargs: Any) -> "GateCommand":
        """A one-point command (``command: [num_joints]``); garbage is kept for the gate to
        judge."""
        try:
            points = np.array(command, dtype=np.float64)
            points = points.reshape(1, -1) if points.ndim == 1 else points.reshape(-1, 0) \
                if points.size == 0 else points
        except Exception:  # noqa: BLE001 - judged (and refused) by the gate
            points = np.full((1, 0), np.nan)
        try:
            spread = float(disagreement)
        except Exception:  # noqa: BLE001 - unreadable disagreement is untrusted
            spread = math.inf
        return cls(points=points, times=np.zeros(1), disagreement=np.array([spread]),
                   status=status, source_stamp=source_stamp, **kwargs)


@dataclass(frozen=True)
class GateOutput:
    """What one control tick decided."""

    command: Optional[np.ndarray]
    """[num_joints] command to publish, finite and within limits; None only in position mode
    when no safe position is known yet (never any joint state and no command passed)."""
    state: GateState
    reason: str
    """Human-readable cause of the state."""
    fault: Optional[Fault]
    """Why the planner command was not passed; None for PASS/CLAMPED and ESTOP."""
    disagreement: float
    """Disagreement of the judged plan point (inf when untrusted or unreadable)."""
    command_age_s: float
    """Age of the latest planner command from its source state's stamp (inf when none)."""
    interventions: int
    """Transitions into FALLBACK or ESTOP."""
    commands_passed: int
    latched: bool
    """True while a latched fault or the e-stop needs a reset."""
    commands_clamped: int = 0
    """Ticks that passed a planner command clamped (limits, step or rate bound)."""


@dataclass(frozen=True)
class _Verdict:
    state: GateState
    fault: Optional[Fault]
    reason: str
    command: Optional[np.ndarray] = None


@dataclass
class _Sample:
    """The latest command sampled at one instant."""

    command: Optional[np.ndarray] = None
    disagreement: float = math.inf
    age: float = math.inf
    error: str = ""
    fault: Optional[Fault] = None


class SafetyGate:
    """Judges planner commands against freshness, validity, disagreement, joint limits and
    the workspace.

    Feed it with :meth:`set_command`, :meth:`set_joint_state`, :meth:`estop`; call :meth:`tick`
    at the control rate. Times are seconds on one clock (the node's, so simulation time works);
    stamps are the messages' header stamps. Not thread-safe: the caller serialises calls.
    ``gravity`` (effort mode) adds gravity compensation to the hold when the driver does not.
    ``workspace`` (joint positions in the gate's order) refuses commands that would take the
    robot's links below the floor or its end effector out of its box (None: no such check).
    """

    def __init__(self, config: GateConfig, gravity: Optional[GravityFn] = None,
                 workspace: Optional[WorkspaceGuard] = None) -> None:
        config.validate()
        self.config = config
        self._workspace = workspace
        n = config.num_joints
        self._index = {name: i for i, name in enumerate(config.joints)}
        self._lower, self._upper = config.per_joint("position_lower"), \
            config.per_joint("position_upper")
        width = self._upper - self._lower
        self._has_range = np.isfinite(width)
        """[J] joints with both position limits (a continuous joint has none)."""
        self._range_width = np.where(self._has_range, width, 1.0)
        """[J] position range widths, 1 where unbounded (the range excess is 0 there)."""
        self._velocity_limit = config.per_joint("velocity_limit")
        self._effort_limit = config.per_joint("effort_limit")
        self._max_step = config.position_step()
        self._rate = config.command_rate()
        self._kp, self._kd = config.per_joint("hold_kp"), config.per_joint("hold_kd")
        self._gravity = None if config.driver_gravity_compensation else gravity
        self._period = 1.0 / config.control_rate_hz
        self._command: Optional[GateCommand] = None
        self._command_error = ""
        self._command_received = False
        self._positions, self._velocities = np.zeros(n), np.zeros(n)
        self._state_stamps = np.full(n, -math.inf)
        self._disagreement = math.inf
        self._trust = DisagreementHysteresis.of(config)
        """The disagreement hysteresis, the same class (and settings) as the planner's."""
        self._estop = False
        self._latched_reason: Optional[str] = None
        self._state, self._fault = GateState.FALLBACK, Fault.NO_COMMAND
        self._hold: Optional[np.ndarray] = None
        self._hold_since, self._hold_settled = -math.inf, True
        self._last_output: Optional[np.ndarray] = None
        self._last_output_time = -math.inf
        self._ramp_from: Optional[np.ndarray] = None
        self._ramp_start = -math.inf
        self.interventions = 0
        self.commands_passed = 0
        self.commands_clamped = 0

    # ----------------------------------------------------------------------------- inputs
    def set_command(self, command: Any, stamp: Optional[float] = None,
                    disagreement: float = 0.0,
                    status: int = CommandStatus.PLANNED) -> None:
        """Store the latest planner command: a :class:`GateCommand`, or the values of a one-point
        command ``[num_joints]`` whose source state was stamped ``stamp``.

        Anything is accepted; unreadable, non-finite or wrong-size commands are judged by tick.
        """
        if not isinstance(command, GateCommand):
            command = GateCommand.single(command, _as_time(stamp), disagreement, status)
        error = _malformed(command, self.config.num_joints)
        if error:
            self.set_invalid_command(error)
        else:
            self._command_received = True
            self._command, self._command_error = command, ""

    def set_invalid_command(self, reason: str) -> None:
        """A command arrived that could not be read (e.g. unknown joint names)."""
        self._command_received = True
        self._command, self._command_error = None, reason

    def set_joint_state(self, names: Sequence[str], positions: Any, velocities: Any,
                        stamp: float) -> None:
        """Update joints by name from a JointState stamped ``stamp`` (its header stamp); unknown
        names are ignored.

        A joint whose position or velocity is missing or non-finite becomes unavailable
        until a good reading arrives. Never raises.
        """
        try:
            time = _as_time(stamp)
            positions = np.asarray(positions, dtype=np.float64).ravel()
            velocities = np.asarray(velocities, dtype=np.float64).ravel()
            for i, name in enumerate(names):
                j = self._index.get(str(name))
                if j is None:
                    continue
                if i < len(positions) and i < len(velocities) \
                        and math.isfinite(positions[i]) and math.isfinite(velocities[i]):
                    self._positions[j], self._velocities[j] = positions[i], velocities[i]
                    self._state_stamps[j] = time
                else:
                    self._state_stamps[j] = -math.inf
        except Exception as exc:  # noqa: BLE001 - garbage input must not escape
            logger.warning("ignoring unreadable joint state: %s", exc)

    def estop(self) -> None:
        """Latch the e-stop: fallback output until :meth:`reset` succeeds."""
        self._estop = True

    def reset(self, now: float) -> Tuple[bool, str]:
        """Clear the e-stop and latched faults, only if the inputs would pass right now."""
        try:
            now = _as_time(now)
            verdict = self._evaluate(now, self._sample(now), honour_latches=False)
        except Exception as exc:  # noqa: BLE001
            return False, f"reset refused: internal error {exc!r}"
        if verdict.state not in (GateState.PASS, GateState.CLAMPED):
            return False, f"reset refused: {verdict.reason}"
        was = "e-stop" if self._estop else (self._latched_reason or "nothing latched")
        self._estop, self._latched_reason = False, None
        return True, f"reset done (cleared: {was})"

    # ----------------------------------------------------------------------------- tick
    def tick(self, now: float) -> GateOutput:
        """Decide the command for this control tick at time ``now``; never raises."""
        try:
            return self._tick(_as_time(now, strict=True))
        except Exception as exc:  # noqa: BLE001 - the gate must always produce an output
            logger.exception("safety gate tick failed; publishing the emergency fallback")
            reason = f"internal error: {exc!r}"
            if Fault.INTERNAL_ERROR.value in self.config.latching_faults:
                self._latched_reason = reason
            self._enter(GateState.FALLBACK, Fault.INTERNAL_ERROR)
            return self._output(self._emergency_command(), reason, math.inf)

    def final_command(self, now: float) -> Optional[np.ndarray]:
        """The command to leave the robot with when the gate stops: hold where it is (position
        mode), gravity compensation only (effort mode), zero velocity. Never raises."""
        try:
            cfg, n = self.config, self.config.num_joints
            state_ok = not self._stale_joints(_as_time(now))
            if cfg.control_mode == "velocity":
                command = np.zeros(n)
            elif cfg.control_mode == "effort":
                command = self._gravity_effort() if state_ok else np.zeros(n)
            elif self._state in (GateState.FALLBACK, GateState.ESTOP) and self._hold is not None:
                command = self._hold
            elif state_ok:
                command = self._measured_hold()
            else:
                command = self._last_output
            return self._bounded(command)
        except Exception:  # noqa: BLE001
            logger.exception("final command failed; using the emergency command")
            return self._emergency_command()

    def _tick(self, now: float) -> GateOutput:
        sample = self._sample(now)
        if sample.command is not None:  # only a usable command says anything of the model
            self._disagreement = sample.disagreement
            self._trust.update(self._disagreement)
        verdict = self._evaluate(now, sample, honour_latches=True)
        if verdict.fault is not None and verdict.fault.value in self.config.latching_faults:
            self._latched_reason = verdict.reason
        was_passing = self._state in (GateState.PASS, GateState.CLAMPED)
        state, reason = verdict.state, verdict.reason
        if state in (GateState.PASS, GateState.CLAMPED):
            command = self._resume_ramp(verdict.command, now, was_passing)
            ramping = command is not verdict.command
            if ramping:
                state, reason = GateState.CLAMPED, f"resuming after a fallback ({reason})"
            self._enter(state, verdict.fault)
            self._hold = None
            self.commands_passed += 1
            self.commands_clamped += int(state == GateState.CLAMPED)
        else:
            self._enter(state, verdict.fault)
            command = self._fallback_command(now)
        output = self._output(self._bounded(command), reason, sample.age)
        self._last_output_time = now
        return output

    def _output(self, command: Optional[np.ndarray], reason: str, age: float) -> GateOutput:
        self._last_output = None if command is None else command.copy()
        return GateOutput(command=command, state=self._state, reason=reason, fault=self._fault,
                          disagreement=self._disagreement, command_age_s=age,
                          interventions=self.interventions, commands_passed=self.commands_passed,
                          commands_clamped=self.commands_clamped,
                          latched=self._estop or self._latched_reason is not None)

    def _enter(self, state: GateState, fault: Optional[Fault]) -> None:
        taken = (GateState.FALLBACK, GateState.ESTOP)
        if state in taken and self._state not in taken:
            self.interventions += 1
        self._state, self._fault = state, fault

    # ----------------------------------------------------------------------------- judging
    def _sample(self, now: float) -> _Sample:
        """The latest command at ``now``: checked, and sampled along its plan
        (``plan_sampling``)."""
        cfg, command = self.config, self._command
        if not self._command_received:
            return _Sample(error="no planner command yet", fault=Fault.NO_COMMAND)
        if command is None:
            return _Sample(error=self._command_error, fault=Fault.INVALID_COMMAND)
        age = now - float(command.source_stamp)
        status = CommandStatus(int(command.status))
        if status in HOLD_REQUESTS:
            return _Sample(age=age, fault=Fault.PLANNER_FAILED,
                           error=f"planner reports {status.name.lower()}: "
                                 f"{command.reason or 'no reason given'}")
        if age < -cfg.max_clock_offset_s:
            return _Sample(age=age, fault=Fault.STALE_COMMAND,
                           error=f"command stamped {-age:.3f} s in the future (clock offset "
                                 f"tolerance {cfg.max_clock_offset_s} s)")
        if age > cfg.watchdog_timeout_s:
            return _Sample(age=age, fault=Fault.STALE_COMMAND,
                           error=f"command is {age:.3f} s older than its source state "
                                 f"(watchdog {cfg.watchdog_timeout_s} s)")
        times = np.asarray(command.times, dtype=np.float64)
        elapsed = min(max(age, float(times[0])), float(times[-1]))
        after = int(np.searchsorted(times, elapsed, side="right"))
        before, after = max(after - 1, 0), min(after, len(times) - 1)
        if cfg.plan_sampling == "hold":
            after = before  # the point applies until the next one's time
        span = times[after] - times[before]
        weight = 0.0 if span <= 0.0 else (elapsed - times[before]) / span
        points = np.asarray(command.points, dtype=np.float64)
        values = (1.0 - weight) * points[before] + weight * points[after]
        spread = np.asarray(command.disagreement, dtype=np.float64)[[before, after]]
        disagreement = float(spread.max()) if np.all(np.isfinite(spread)) \
            and np.all(spread >= 0.0) else math.inf
        return _Sample(command=values, disagreement=disagreement, age=age)

    def _evaluate(self, now: float, sample: _Sample, honour_latches: bool) -> _Verdict:
        """Judge the sampled command at ``now`` without changing any state."""
        cfg, fallback = self.config, GateState.FALLBACK
        if honour_latches and self._estop:
            return _Verdict(GateState.ESTOP, None, "e-stop latched; call reset")
        if honour_latches and self._latched_reason is not None:
            return _Verdict(fallback, None, f"latched: {self._latched_reason}; call reset")
        if sample.command is None:
            return _Verdict(fallback, sample.fault, sample.error)
        stale = self._stale_joints(now)
        if stale:
            return _Verdict(fallback, Fault.STATE_UNAVAILABLE, self._state_reason(now, stale))
        if self._trust.tripped:
            return _Verdict(fallback, Fault.DISAGREEMENT,
                            f"disagreement {self._disagreement:.3g} (enter > "
                            f"{cfg.disagreement_threshold}, resume < {cfg.disagreement_resume} "
                            f"for {cfg.resume_ticks} ticks)")
        exploring = int(self._command.status) == CommandStatus.EXPLORING
        command = sample.command
        clamped, excess, bounds = self._clamp(command, now, exploring)
        if excess > cfg.clamp_margin and cfg.out_of_limits == "fallback":
            return _Verdict(fallback, Fault.OUT_OF_LIMITS,
                            f"command beyond limits by {excess:.3g} (margin {cfg.clamp_margin})")
        guard = self._limit_guard(clamped)
        if guard:
            return _Verdict(fallback, Fault.LIMIT_GUARD, guard)
        outside = self._workspace_refusal(clamped)
        if outside:
            return _Verdict(fallback, Fault.WORKSPACE, outside)
        if np.array_equal(clamped, command):
            return _Verdict(GateState.PASS, None, "ok", clamped)
        return _Verdict(GateState.CLAMPED, None, f"clamped by the {bounds} (excess {excess:.3g})",
                        clamped)

    def _stale_joints(self, now: float) -> list:
        age = now - self._state_stamps
        fresh = (age >= -self.config.max_clock_offset_s) & (age <= self.config.state_timeout_s)
        return [self.config.joints[i] for i in np.flatnonzero(~fresh)]

    def _state_reason(self, now: float, stale: list) -> str:
        ages = now - self._state_stamps[[self._index[j] for j in stale]]
        if np.all(np.isinf(ages)):
            return f"no joint state for {stale}"
        finite = ages[np.isfinite(ages)]
        if finite.min() < -self.config.max_clock_offset_s:
            return (f"joint state for {stale} stamped {-finite.min():.3f} s in the future "
                    f"(tolerance {self.config.max_clock_offset_s} s)")
        return (f"joint state for {stale} is {finite.max():.3f} s old "
                f"(state_timeout_s {self.config.state_timeout_s})")

    def _clamp(self, command: np.ndarray, now: float,
               exploring: bool) -> Tuple[np.ndarray, float, str]:
        """Clamp ``command: [num_joints]`` to the mode's limits; returns it, the max excess
        beyond the limits (effort, velocity or position range, relative) and the bounds that
        changed it (for the reason)."""
        mode = self.config.control_mode
        if mode in ("effort", "velocity"):
            limit = self._effort_limit if mode == "effort" else self._velocity_limit
            excess = (np.abs(command) - limit) / limit
            return np.clip(command, -limit, limit), float(max(excess.max(), 0.0)), \
                f"{mode} limit"
        scale = self.config.exploration_limit_fraction if exploring else 1.0
        position, step = self._positions, self._max_step * scale
        # relative to the range; a joint without position limits is never beyond them
        beyond = np.maximum(command - self._upper, self._lower - command)
        range_excess = np.where(self._has_range, beyond / self._range_width, 0.0)
        stages = [("position range", np.clip(command, self._lower, self._upper))]
        if self._last_output is not None:
            dt = min(now - self._last_output_time, RATE_LIMIT_MAX_PERIODS * self._period)
            stages.append(("rate bound", rate_limited(stages[-1][1], self._last_output,
                                                      self._rate * scale, dt)))
        # the target-to-measured bound wins: it only moves the target toward the robot
        stages.append(("step bound", np.clip(stages[-1][1], position - step, position + step)))
        stages.append(("position range", np.clip(stages[-1][1], self._lower, self._upper)))
        active, previous = [], command
        for name, values in stages:
            if not np.array_equal(values, previous) and name not in active:
                active.append(name)
            previous = values
        # the step and rate bounds saturate the target (as the actuator saturates its effort);
        # only a target outside the joint range counts as beyond the limits
        excess = max(range_excess.max(), 0.0)
        return previous, float(excess), ", ".join(active)

    def _limit_guard(self, command: np.ndarray) -> str:
        """Reason if a joint is near/over a position or velocity limit and moving further out."""
        cfg, q, qd = self.config, self._positions, self._velocities
        predicted = q + qd * cfg.limit_lookahead_s
        position_out = ((qd > cfg.guard_velocity_deadband) & (predicted >= self._upper)) \
            | ((qd < -cfg.guard_velocity_deadband) & (predicted <= self._lower))
        push = {"effort": command, "velocity": command - qd, "position": command - q}
        velocity_out = (np.abs(qd) >= cfg.velocity_guard_fraction * self._velocity_limit) \
            & (push[cfg.control_mode] * qd > 0)
        reasons = []
        if position_out.any():
            reasons.append(f"moving out of position limits: "
                           f"{[cfg.joints[i] for i in np.flatnonzero(position_out)]}")
        if velocity_out.any():
            reasons.append(f"pushed beyond velocity limits: "
                           f"{[cfg.joints[i] for i in np.flatnonzero(velocity_out)]}")
        return "; ".join(reasons)

    def _workspace_refusal(self, command: np.ndarray) -> str:
        """Reason if ``command`` takes the robot further out of its workspace ("" if not).

        The target judged: the commanded positions (position mode), where the commanded
        velocity leads within ``limit_lookahead_s`` (velocity mode), or where the robot's own
        motion does (effort mode; joints slower than ``guard_velocity_deadband`` stand still).
        A robot outside its workspace may stay or move back; it may not go further out."""
        if self._workspace is None:
            return ""
        cfg, q = self.config, self._positions
        if cfg.control_mode == "position":
            target = command
        else:
            moving = command if cfg.control_mode == "velocity" else np.where(
                np.abs(self._velocities) > cfg.guard_velocity_deadband, self._velocities, 0.0)
            target = q + moving * cfg.limit_lookahead_s
        return self._workspace.refusal(target, q)

    def _resume_ramp(self, command: np.ndarray, now: float, was_passing: bool) -> np.ndarray:
        """Effort/velocity mode: blend from the last fallback output to the planner command over
        ``resume_ramp_s`` after a fallback (position mode is bumpless through the rate limit)."""
        cfg = self.config
        if cfg.control_mode == "position" or cfg.resume_ramp_s <= 0.0:
            return command
        if not was_passing:
            self._ramp_from, self._ramp_start = self._last_output, now
        if self._ramp_from is None or self._ramp_from.shape != command.shape:
            return command
        alpha = (now - self._ramp_start) / cfg.resume_ramp_s
        if alpha >= 1.0:
            self._ramp_from = None
            return command
        return (1.0 - alpha) * self._ramp_from + alpha * command

    # ----------------------------------------------------------------------------- fallback
    def _fallback_command(self, now: float) -> Optional[np.ndarray]:
        """Fallback command ``[num_joints]`` for the control mode and policy."""
        cfg, n = self.config, self.config.num_joints
        state_ok = not self._stale_joints(now)
        if state_ok and self._hold is None:
            self._hold = self._measured_hold()
            self._hold_since, self._hold_settled = now, False
        if state_ok and cfg.control_mode == "position" and not self._hold_settled \
                and now - self._hold_since >= cfg.hold_settle_s \
                and np.all(np.abs(self._velocities) < cfg.guard_velocity_deadband):
            self._hold, self._hold_settled = self._measured_hold(), True  # where it rests
        if cfg.control_mode == "velocity":
            return np.zeros(n)
        if cfg.control_mode == "position":
            return self._hold.copy() if self._hold is not None else self._last_output
        if not state_ok or cfg.fallback == "zero_effort":
            return np.zeros(n)
        if cfg.fallback == "damping":
            effort = -self._kd * self._velocities
        else:
            effort = self._kp * (self._hold - self._positions) - self._kd * self._velocities
        return np.clip(effort + self._gravity_effort(), -self._effort_limit, self._effort_limit)

    def _measured_hold(self) -> np.ndarray:
        """A position target where the robot is (within the joint range)."""
        return np.clip(self._positions, self._lower, self._upper)

    def _gravity_effort(self) -> np.ndarray:
        """[num_joints] efforts that hold the robot against gravity (zeros when the driver
        compensates or no model is known; a failing or non-finite model gives zeros too)."""
        n = self.config.num_joints
        if self._gravity is None:
            return np.zeros(n)
        try:
            effort = np.asarray(self._gravity(self._positions.copy()), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - the hold must not depend on the model
            logger.error("gravity model failed: %r", exc)
            return np.zeros(n)
        if effort.shape != (n,) or not np.isfinite(effort).all():
            return np.zeros(n)
        return effort

    def _emergency_command(self) -> Optional[np.ndarray]:
        """Simplest safe command after an internal error: zero effort / zero velocity / hold."""
        n = self.config.num_joints
        if self.config.control_mode != "position":
            return np.zeros(n)
        for candidate in (self._hold, self._last_output):
            if candidate is not None and np.shape(candidate) == (n,) \
                    and np.isfinite(candidate).all():
                return np.clip(candidate, self._lower, self._upper)
        return None

    def _bounded(self, command: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """Last line: any output is finite, [num_joints] and within the mode's limits."""
        if command is None:
            return None
        command = np.asarray(command, dtype=np.float64)
        if command.shape != (self.config.num_joints,) or not np.isfinite(command).all():
            return self._emergency_command()
        mode = self.config.control_mode
        if mode == "position":
            return np.clip(command, self._lower, self._upper)
        limit = self._effort_limit if mode == "effort" else self._velocity_limit
        return np.clip(command, -limit, limit)


def _as_time(stamp: Any, strict: bool = False) -> float:
    """A time in seconds; unreadable/non-finite stamps become -inf (always stale) or raise."""
    try:
        value = float(stamp)
    except Exception:  # noqa: BLE001
        value = math.nan
    if math.isfinite(value):
        return value
    if strict:
        raise ValueError(f"non-finite time {stamp!r}")
    return -math.inf


def _malformed(command: GateCommand, num_joints: int) -> str:
    """Why ``command`` cannot be used at all ("" when it can)."""
    try:
        status = int(command.status)
        CommandStatus(status)
    except (TypeError, ValueError):
        return f"unknown command status {command.status!r}"
    if status in HOLD_REQUESTS:
        return ""  # a hold request needs no points
    try:
        points = np.asarray(command.points, dtype=np.float64)
        times = np.asarray(command.times, dtype=np.float64)
        spread = np.asarray(command.disagreement, dtype=np.float64)
        stamp = float(command.source_stamp)
    except (TypeError, ValueError) as exc:
        return f"unreadable command: {exc}"
    if points.ndim != 2 or points.shape[0] == 0:
        return f"command has no points (shape {points.shape})"
    if points.shape[1] != num_joints:
        return f"command has {points.shape[1]} values, expected {num_joints}"
    if times.shape != (points.shape[0],) or spread.shape != (points.shape[0],):
        return (f"{points.shape[0]} points need as many times and disagreements, got "
                f"{times.shape} and {spread.shape}")
    if not np.isfinite(points).all():
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(points))[:, 1]})
        return f"non-finite command for joints {bad}"
    if not (np.isfinite(times).all() and np.all(np.diff(times) >= 0.0) and times[0] >= 0.0):
        return f"point times must be finite, >= 0 and non-decreasing, got {times.tolist()}"
    if not math.isfinite(stamp):
        return f"non-finite source stamp {stamp!r}"
    return ""
