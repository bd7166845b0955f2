"""Safety gate between the planner and the robot (ROS-free).

Modelled on nav2 MPPI's ``OptimalTrajectoryValidator`` (SUCCESS / SOFT_RESET / FAILURE): every
control tick the gate judges the latest planner command and either passes it (PASS), passes it
clamped to the limits (CLAMPED), or replaces it with a fallback command (FALLBACK, ESTOP).
Transient faults (stale command, stale state, high disagreement, limits) recover by themselves
like a soft reset; faults named in ``GateConfig.latching_faults`` and the e-stop latch like a
failure until :meth:`SafetyGate.reset` succeeds. :meth:`SafetyGate.tick` never raises.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from mbrl_ros.core.safety_gate_config import (  # noqa: F401 - re-exported API
    CONTROL_MODES, FALLBACK_POLICIES, Fault, GateConfig, GateState)

logger = logging.getLogger(__name__)


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
    """Latest gated disagreement (inf when untrusted or unreadable)."""
    command_age_s: float
    """Age of the latest planner command (inf when none)."""
    interventions: int
    commands_passed: int
    latched: bool
    """True while a latched fault or the e-stop needs a reset."""


@dataclass(frozen=True)
class _Verdict:
    state: GateState
    fault: Optional[Fault]
    reason: str
    command: Optional[np.ndarray] = None


class SafetyGate:
    """Judges planner commands against freshness, validity, disagreement and joint limits.

    Feed it with :meth:`set_command`, :meth:`set_joint_state`, :meth:`set_disagreement`,
    :meth:`estop`; call :meth:`tick` at the control rate. Times are seconds on one clock
    (the node's, so simulation time works). Not thread-safe: the caller serialises calls.
    """

    def __init__(self, config: GateConfig) -> None:
        config.validate()
        self.config = config
        n = config.num_joints
        self._index = {name: i for i, name in enumerate(config.joints)}
        self._lower, self._upper = config.per_joint("position_lower"), \
            config.per_joint("position_upper")
        self._velocity_limit = config.per_joint("velocity_limit")
        self._effort_limit = config.per_joint("effort_limit")
        self._max_step = config.per_joint("max_position_step")
        self._kp, self._kd = config.per_joint("hold_kp"), config.per_joint("hold_kd")
        self._command: Optional[np.ndarray] = None
        self._command_error = ""
        self._command_received = False
        self._command_stamp = -math.inf
        self._positions, self._velocities = np.zeros(n), np.zeros(n)
        self._state_stamps = np.full(n, -math.inf)
        self._disagreement = 0.0
        self._disagreement_tripped = False
        self._ticks_below_resume = 0
        self._estop = False
        self._latched_reason: Optional[str] = None
        self._state, self._fault = GateState.FALLBACK, Fault.NO_COMMAND
        self._hold: Optional[np.ndarray] = None
        self._last_output: Optional[np.ndarray] = None
        self.interventions = 0
        self.commands_passed = 0

    # ----------------------------------------------------------------------------- inputs
    def set_command(self, values: Any, stamp: float) -> None:
        """Store the latest planner command ``values: [num_joints]`` received at ``stamp``.

        Anything is accepted; unreadable, non-finite or wrong-size commands are judged by tick.
        """
        self._command_received = True
        self._command_stamp = _as_time(stamp)
        try:
            self._command = np.array(values, dtype=np.float64).ravel()
            self._command_error = ""
        except Exception as exc:  # noqa: BLE001 - garbage input must not escape
            self._command, self._command_error = None, f"unreadable command: {exc}"

    def set_joint_state(self, names: Sequence[str], positions: Any, velocities: Any,
                        stamp: float) -> None:
        """Update joints by name from a JointState; unknown names are ignored.

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

    def set_disagreement(self, mean_disagreement: Any, max_disagreement: Any) -> None:
        """Store the plan's ensemble disagreement; non-finite or negative counts as infinite."""
        value = max_disagreement if self.config.disagreement_signal == "max" \
            else mean_disagreement
        try:
            value = float(value)
        except Exception:  # noqa: BLE001
            value = math.inf
        self._disagreement = value if math.isfinite(value) and value >= 0 else math.inf

    def estop(self) -> None:
        """Latch the e-stop: fallback output until :meth:`reset` succeeds."""
        self._estop = True

    def reset(self, now: float) -> Tuple[bool, str]:
        """Clear the e-stop and latched faults, only if the inputs would pass right now."""
        try:
            verdict = self._evaluate(_as_time(now), honour_latches=False)
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

    def _tick(self, now: float) -> GateOutput:
        self._update_disagreement_hysteresis()
        verdict = self._evaluate(now, honour_latches=True)
        if verdict.fault is not None and verdict.fault.value in self.config.latching_faults:
            self._latched_reason = verdict.reason
        self._enter(verdict.state, verdict.fault)
        if verdict.state in (GateState.PASS, GateState.CLAMPED):
            self._hold = None
            self.commands_passed += 1
            command = verdict.command
        else:
            command = self._fallback_command(now)
        return self._output(self._bounded(command), verdict.reason, now - self._command_stamp)

    def _output(self, command: Optional[np.ndarray], reason: str, age: float) -> GateOutput:
        self._last_output = None if command is None else command.copy()
        return GateOutput(command=command, state=self._state, reason=reason, fault=self._fault,
                          disagreement=self._disagreement, command_age_s=age,
                          interventions=self.interventions, commands_passed=self.commands_passed,
                          latched=self._estop or self._latched_reason is not None)

    def _enter(self, state: GateState, fault: Optional[Fault]) -> None:
        if state != self._state and state != GateState.PASS:
            self.interventions += 1
        if state != self._state or fault != self._fault:
            log = logger.info if state == GateState.PASS else logger.warning
            log("safety gate: %s -> %s (%s)", self._state.name, state.name,
                fault.value if fault else "ok")
        self._state, self._fault = state, fault

    def _update_disagreement_hysteresis(self) -> None:
        if not self._disagreement_tripped:
            self._disagreement_tripped = self._disagreement > self.config.disagreement_threshold
            self._ticks_below_resume = 0
        elif self._disagreement < self.config.disagreement_resume:
            self._ticks_below_resume += 1
            if self._ticks_below_resume >= self.config.resume_ticks:
                self._disagreement_tripped, self._ticks_below_resume = False, 0
        else:
            self._ticks_below_resume = 0

    def _evaluate(self, now: float, honour_latches: bool) -> _Verdict:
        """Judge the inputs at ``now`` without changing any state."""
        cfg, fallback = self.config, GateState.FALLBACK
        if honour_latches and self._estop:
            return _Verdict(GateState.ESTOP, None, "e-stop latched; call reset")
        if honour_latches and self._latched_reason is not None:
            return _Verdict(fallback, None, f"latched: {self._latched_reason}; call reset")
        if not self._command_received:
            return _Verdict(fallback, Fault.NO_COMMAND, "no planner command yet")
        command = self._command
        if command is None:
            return _Verdict(fallback, Fault.INVALID_COMMAND, self._command_error)
        if command.shape != (cfg.num_joints,):
            return _Verdict(fallback, Fault.INVALID_COMMAND,
                            f"command has {command.size} values, expected {cfg.num_joints}")
        if not np.isfinite(command).all():
            bad = [cfg.joints[i] for i in np.flatnonzero(~np.isfinite(command))]
            return _Verdict(fallback, Fault.INVALID_COMMAND, f"non-finite command for {bad}")
        age = now - self._command_stamp
        if not 0.0 <= age <= cfg.watchdog_timeout_s:
            return _Verdict(fallback, Fault.STALE_COMMAND,
                            f"command age {age:.3f} s outside [0, {cfg.watchdog_timeout_s}] s")
        stale = self._stale_joints(now)
        if stale:
            return _Verdict(fallback, Fault.STATE_UNAVAILABLE, f"no fresh joint state for {stale}")
        if self._disagreement_tripped:
            return _Verdict(fallback, Fault.DISAGREEMENT,
                            f"disagreement {self._disagreement:.3g} (enter > "
                            f"{cfg.disagreement_threshold}, resume < {cfg.disagreement_resume} "
                            f"for {cfg.resume_ticks} ticks)")
        clamped, excess = self._clamp(command)
        if excess > cfg.clamp_margin and cfg.out_of_limits == "fallback":
            return _Verdict(fallback, Fault.OUT_OF_LIMITS,
                            f"command beyond limits by {excess:.3g} (margin {cfg.clamp_margin})")
        guard = self._limit_guard(clamped)
        if guard:
            return _Verdict(fallback, Fault.LIMIT_GUARD, guard)
        if np.array_equal(clamped, command):
            return _Verdict(GateState.PASS, None, "ok", clamped)
        return _Verdict(GateState.CLAMPED, None, f"clamped (excess {excess:.3g})", clamped)

    def _stale_joints(self, now: float) -> list:
        age = now - self._state_stamps
        fresh = (age >= 0.0) & (age <= self.config.state_timeout_s)
        return [self.config.joints[i] for i in np.flatnonzero(~fresh)]

    def _clamp(self, command: np.ndarray) -> Tuple[np.ndarray, float]:
        """Clamp ``command: [num_joints]`` to the mode's limits; returns it and the max excess."""
        mode = self.config.control_mode
        if mode in ("effort", "velocity"):
            limit = self._effort_limit if mode == "effort" else self._velocity_limit
            excess = (np.abs(command) - limit) / limit
            return np.clip(command, -limit, limit), float(max(excess.max(), 0.0))
        position = self._positions
        range_excess = np.maximum(command - self._upper, self._lower - command) \
            / (self._upper - self._lower)
        step_excess = (np.abs(command - position) - self._max_step) / self._max_step
        clamped = np.clip(command, self._lower, self._upper)
        clamped = np.clip(clamped, position - self._max_step, position + self._max_step)
        clamped = np.clip(clamped, self._lower, self._upper)
        excess = max(range_excess.max(), step_excess.max(), 0.0)
        return clamped, float(excess)

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

    # ----------------------------------------------------------------------------- fallback
    def _fallback_command(self, now: float) -> Optional[np.ndarray]:
        """Fallback command ``[num_joints]`` for the control mode and policy."""
        cfg, n = self.config, self.config.num_joints
        state_ok = not self._stale_joints(now)
        if state_ok and self._hold is None:
            self._hold = np.clip(self._positions, self._lower, self._upper)
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
        return np.clip(effort, -self._effort_limit, self._effort_limit)

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
