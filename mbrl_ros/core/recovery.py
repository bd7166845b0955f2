"""The controller's recovery mode: back to where the learned model is trusted, then the task.

When the task's plans become untrusted (their ensemble disagreement trips the same hysteresis
the safety gate runs, :mod:`mbrl_ros.core.trust`), the gate holds the robot, and planning on
for the same goal from the same place gives the same untrusted plans: the robot would stay
held for good. Instead the controller switches to recovery: it plans, with the same learned
model and limits, for a different cost: reach the oldest pose of a short record of poses where
the task's plans were trusted, and pay ``disagreement_weight`` per unit of disagreement (far
more than the task does), so the plan it sends is one the ensemble agrees on, which the gate
passes. It returns to the task once the plans it sends have been trusted for ``resume_ticks``
ticks (the gate's rule for resuming).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, List, Optional

import numpy as np

from mbrl_ros.core.costs import JointPositionCost, TaskCost, VelocityCost
from mbrl_ros.core.trust import (DEFAULT_DISAGREEMENT_RESUME, DEFAULT_DISAGREEMENT_THRESHOLD,
                                 DEFAULT_RESUME_TICKS, RESUME_TICKS_RANGE, trust_settings_error)

MODE_TASK = "task"
"""Planning for the task (the goal)."""
MODE_RECOVERY = "recovery"
"""Planning back toward trusted poses (the task's plans were untrusted)."""
MODE_EXPLORING = "exploring"
"""No model or no goal yet: smooth random exploration."""


@dataclass(frozen=True)
class RecoveryConfig:
    """Settings of the controller's recovery mode. ``disagreement_threshold``,
    ``disagreement_resume`` and ``resume_ticks`` must equal the safety gate's."""

    enabled: bool = True
    """Switch to recovery when the task's plans are untrusted (false: keep planning for the
    task; the gate holds the robot as long as they stay untrusted)."""
    disagreement_threshold: float = DEFAULT_DISAGREEMENT_THRESHOLD
    """Enter recovery when a task plan's disagreement (the largest along the plan, as sent to
    the gate) exceeds this: the safety gate's disagreement_threshold."""
    disagreement_resume: float = DEFAULT_DISAGREEMENT_RESUME
    """Return to the task once the plans sent stay below this...: the gate's
    disagreement_resume."""
    resume_ticks: int = field(default=DEFAULT_RESUME_TICKS,
                              metadata={"range": RESUME_TICKS_RANGE})
    """...for this many consecutive planner ticks: the gate's resume_ticks."""
    history_ticks: int = field(default=25, metadata={"range": (1, 100_000)})
    """Trusted poses remembered (one per planner tick whose task plan was below
    disagreement_resume); recovery heads for the oldest, well inside the trusted region."""
    position_weight: float = 100.0
    """Recovery cost per step per squared joint distance [rad^2 or m^2] from that pose."""
    velocity_weight: float = 0.05
    """Recovery cost per step per squared joint velocity: arrive slowly."""
    disagreement_weight: float = 100.0
    """Recovery cost per unit of ensemble disagreement per plan step (replaces the planner's
    disagreement_weight while recovering): recovery plans stay where the ensemble agrees."""

    def validate(self) -> "RecoveryConfig":
        """Raise ValueError on a bad setting; return self."""
        if not isinstance(self.enabled, (bool, np.bool_)):
            raise ValueError(f"recovery.enabled must be true or false, got {self.enabled!r}")
        error = trust_settings_error(self.disagreement_threshold, self.disagreement_resume,
                                     self.resume_ticks)
        if error:
            raise ValueError(f"recovery: {error}")
        if isinstance(self.history_ticks, bool) or not isinstance(self.history_ticks, int) \
                or self.history_ticks < 1:
            raise ValueError(f"recovery.history_ticks must be an integer >= 1, "
                             f"got {self.history_ticks!r}")
        for name in ("position_weight", "velocity_weight", "disagreement_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"recovery.{name} must be finite and >= 0, got {value}")
        if not self.disagreement_weight > 0.0:
            raise ValueError("recovery.disagreement_weight must be > 0: recovery plans must "
                             "avoid disagreement")
        return self


@dataclass
class RecoveryStats:
    """How often the controller recovered and how long it took (times from the stamps passed
    to ``ModelPredictiveController.step``: ROS or simulated time)."""

    recoveries: int = 0
    """Times recovery began."""
    recovered: int = 0
    """Times it ended with trusted plans (the rest ended by a reset or are still running)."""
    interrupted: int = 0
    """Times it ended because the robot was reset or moved by hand."""
    times_s: List[float] = field(default_factory=list)
    """Time to recover [s] of each completed recovery (nan where a tick had no stamp)."""
    started_s: Optional[float] = None
    """Stamp of the tick the current recovery began (None when not recovering)."""

    @property
    def last_time_s(self) -> float:
        """The last completed recovery's time [s] (nan if none)."""
        return self.times_s[-1] if self.times_s else math.nan

    @property
    def mean_time_s(self) -> float:
        """Mean time to recover over the completed recoveries with a known time (nan if none)."""
        known = [t for t in self.times_s if math.isfinite(t)]
        return float(np.mean(known)) if known else math.nan

    def begin(self, stamp: Optional[float]) -> None:
        self.recoveries += 1
        self.started_s = math.nan if stamp is None else float(stamp)

    def end(self, stamp: Optional[float], recovered: bool) -> float:
        """Close the current recovery; returns its duration (nan if unknown)."""
        started = math.nan if self.started_s is None else self.started_s
        elapsed = math.nan if stamp is None else float(stamp) - started
        self.started_s = None
        if recovered:
            self.recovered += 1
            self.times_s.append(elapsed)
        else:
            self.interrupted += 1
        return elapsed


class TrustedPoses:
    """The last ``size`` joint poses where the task's plans were trusted."""

    def __init__(self, size: int) -> None:
        self._poses: Deque[np.ndarray] = deque(maxlen=int(size))

    def __len__(self) -> int:
        return len(self._poses)

    def add(self, position: np.ndarray) -> None:
        self._poses.append(np.array(position, dtype=np.float64))

    def anchor(self, fallback: np.ndarray) -> np.ndarray:
        """The oldest remembered pose of the right size, else ``fallback`` (hold there)."""
        fallback = np.asarray(fallback, dtype=np.float64)
        for pose in self._poses:
            if pose.shape == fallback.shape:
                return pose.copy()
        return fallback.copy()


def recovery_cost(config: RecoveryConfig, target: np.ndarray, state_dim: int,
                  device=None) -> TaskCost:
    """Cost of recovery plans: joint positions (state dims ``0..J-1``) toward ``target [J]``,
    joint velocities (dims ``J..2J-1``) small. Retarget with ``cost.term("joint_position")``."""
    joints = len(target)
    return TaskCost([
        JointPositionCost(range(joints), np.asarray(target, dtype=np.float64).tolist(),
                          config.position_weight, state_dim, device),
        VelocityCost(range(joints, 2 * joints), config.velocity_weight, state_dim, device)])
