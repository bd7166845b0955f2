"""Smooth random exploration within limits, used before any learned model exists.

The robot is driven toward joint targets that are redrawn at random every ``target_period_s``
and approached along a first-order filter, with temporally correlated (AR(1)) noise on top.
In effort mode the tracking law is inertia-aware when the robot's model is given:
``tau = g(q) + m(q) * (w^2 (target - q) - 2 w qd + noise)``, with ``m`` each joint's
effective inertia ``1 / (M^-1)_ii`` and the bandwidth ``w`` limited by the control rate, so
light distal links are not thrown around by gains meant for heavy proximal ones. The output
always respects the limits. Optionally (``goal_sampler``) a task draws the random targets
itself, e.g. around a posture the robot must not leave (a legged robot that should not fall).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

CONTROL_MODES = ("effort", "position", "velocity")


@dataclass(frozen=True)
class ExplorationConfig:
    """Settings of :class:`SmoothExplorer`."""

    target_period_s: float = 1.5
    """Seconds between two random joint targets."""
    target_range_fraction: float = 0.7
    """Targets are drawn within this fraction of each joint's range, around its centre."""
    target_filter_s: float = 0.4
    """Time constant of the filter that moves the tracked target toward the drawn one."""
    kp: float = 60.0
    """Effort mode without a robot model: proportional gain of the PD law (N m / rad)."""
    kd: float = 8.0
    """Effort mode without a robot model: derivative gain of the PD law (N m s / rad)."""
    bandwidth_fraction: float = 0.1
    """Effort mode with a robot model: tracking bandwidth w = fraction x 2 pi x control rate."""
    noise_acceleration: float = 3.0
    """Effort mode with a robot model: amplitude of the correlated noise [rad/s^2]."""
    noise_fraction: float = 0.1
    """Amplitude of the correlated noise otherwise, as a fraction of each command limit."""
    max_speed_fraction: float = 0.3
    """The tracked target moves at most this fraction of each joint's velocity limit."""
    max_position_lead: float = 0.3
    """Position mode: the tracked target stays within this distance of the measured position
    [rad or m], so a robot that is held back (by the safety gate, a contact) is never sent
    ever-further targets."""
    noise_correlation_s: float = 0.2
    """Correlation time of the noise (AR(1) time constant)."""
    seed: int = 0
    """Seed of the exploration's random generator."""

    def validate(self) -> "ExplorationConfig":
        """Raise ValueError on an out-of-range field; return self."""
        for name in ("target_period_s", "target_filter_s", "noise_correlation_s"):
            if not getattr(self, name) > 0.0:
                raise ValueError(
                    f"ExplorationConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.max_speed_fraction <= 1.0:
            raise ValueError("ExplorationConfig.max_speed_fraction must be in (0, 1], "
                             f"got {self.max_speed_fraction}")
        if not 0.0 <= self.target_range_fraction <= 1.0:
            raise ValueError("ExplorationConfig.target_range_fraction must be in [0, 1], "
                             f"got {self.target_range_fraction}")
        if not 0.0 < self.bandwidth_fraction <= 0.25:
            raise ValueError("ExplorationConfig.bandwidth_fraction must be in (0, 0.25], "
                             f"got {self.bandwidth_fraction}")
        if not self.max_position_lead > 0.0:
            raise ValueError("ExplorationConfig.max_position_lead must be > 0, "
                             f"got {self.max_position_lead}")
        for name in ("kp", "kd", "noise_fraction", "noise_acceleration"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(
                    f"ExplorationConfig.{name} must be >= 0, got {getattr(self, name)}")
        return self


class SmoothExplorer:
    """Smooth random commands within limits, one per control tick."""

    def __init__(self, config: ExplorationConfig, control_mode: str, position_lower: np.ndarray,
                 position_upper: np.ndarray, command_limit: np.ndarray, control_period_s: float,
                 dynamics_terms: Optional[Callable[[np.ndarray], Tuple[np.ndarray,
                                                                       np.ndarray]]] = None,
                 velocity_limit: Optional[np.ndarray] = None,
                 position_lead: Optional[np.ndarray] = None,
                 goal_sampler: Optional[Callable[[np.random.Generator], np.ndarray]] = None):
        """
        Args:
            dynamics_terms: effort mode: ``q -> (gravity torque [J], effective inertia [J])``
                of the robot's model, for the inertia-aware law (None: plain PD gains).
            velocity_limit: [J] joint velocity limits; the tracked target moves slower
                than ``max_speed_fraction`` of them (None: no cap).
            control_mode: "effort", "position" or "velocity".
            position_lower, position_upper: [J] joint position limits.
            command_limit: [J] symmetric bound of the command (effort or velocity limit; for
                position mode the position limits apply instead).
            control_period_s: seconds per tick.
            position_lead: position mode: [J] bound on |command - measured position| (e.g.
                ``command_limits.exploration_lead``, what the safety gate passes for
                exploration); the smaller of it and ``max_position_lead`` applies.
            goal_sampler: ``rng -> [J]`` draws each random joint target (clipped to the
                position limits) with the explorer's seeded generator; None: uniform within
                ``target_range_fraction`` of the range around its centre.
        """
        if control_mode not in CONTROL_MODES:
            raise ValueError(f"control_mode must be one of {CONTROL_MODES}, got {control_mode!r}")
        self.config = config.validate()
        self.mode = control_mode
        self.lower = np.asarray(position_lower, dtype=np.float64)
        self.upper = np.asarray(position_upper, dtype=np.float64)
        self.limit = np.abs(np.asarray(command_limit, dtype=np.float64))
        self.dt = float(control_period_s)
        self.dynamics_terms = dynamics_terms
        self.goal_sampler = goal_sampler
        lead = np.inf if position_lead is None else np.asarray(position_lead, np.float64)
        self.lead = np.minimum(config.max_position_lead, lead)
        self.max_target_step = (np.inf if velocity_limit is None else
                                config.max_speed_fraction * np.abs(velocity_limit) * self.dt)
        self.bandwidth = config.bandwidth_fraction * 2.0 * np.pi / self.dt
        centre, half = 0.5 * (self.lower + self.upper), 0.5 * (self.upper - self.lower)
        self._target_low = centre - config.target_range_fraction * half
        self._target_high = centre + config.target_range_fraction * half
        self._rng = np.random.default_rng(config.seed)
        self._filter_gain = 1.0 - np.exp(-self.dt / config.target_filter_s)
        self._noise_keep = np.exp(-self.dt / config.noise_correlation_s)
        self.reset()

    def reset(self) -> None:
        """Forget targets and noise; the next call draws new ones around the current state."""
        self._goal = None
        self._tracked = None
        self._time_to_next = 0.0
        self._noise = np.zeros_like(self.limit)

    def __call__(self, position: np.ndarray, velocity: np.ndarray) -> np.ndarray:
        """Command [J] for the current joint positions and velocities [J]."""
        if self._tracked is None:
            self._tracked = np.clip(position, self.lower, self.upper)
        if self._time_to_next <= 0.0:
            self._goal = (self._rng.uniform(self._target_low, self._target_high)
                          if self.goal_sampler is None else
                          np.clip(self.goal_sampler(self._rng), self.lower, self.upper))
            self._time_to_next = self.config.target_period_s
        self._time_to_next -= self.dt
        step = self._filter_gain * (self._goal - self._tracked)
        self._tracked = self._tracked + np.clip(step, -self.max_target_step, self.max_target_step)
        innovation = self._rng.standard_normal(self.limit.shape)
        self._noise = (self._noise_keep * self._noise
                       + np.sqrt(1.0 - self._noise_keep ** 2) * innovation)
        if self.mode == "position":
            lead = self.lead
            self._tracked = np.clip(self._tracked, position - lead, position + lead)
            span = self.config.noise_fraction * (self.upper - self.lower)
            command = np.clip(self._tracked + span * self._noise, position - lead,
                              position + lead)
            return np.clip(command, self.lower, self.upper)
        if self.mode == "effort" and self.dynamics_terms is not None:
            gravity, inertia = self.dynamics_terms(position)
            w = self.bandwidth
            acceleration = (w * w * (self._tracked - position) - 2.0 * w * velocity
                            + self.config.noise_acceleration * self._noise)
            return np.clip(gravity + inertia * acceleration, -self.limit, self.limit)
        noise = self.config.noise_fraction * self.limit * self._noise
        if self.mode == "velocity":
            command = (self._tracked - position) / max(self.config.target_filter_s, self.dt)
        else:
            command = self.config.kp * (self._tracked - position) - self.config.kd * velocity
        return np.clip(command + noise, -self.limit, self.limit)
