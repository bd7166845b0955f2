"""When a plan is trusted: the disagreement hysteresis shared by the safety gate and the planner.

A plan is untrusted once the ensemble disagreement of the plan point the planner forwards
exceeds ``disagreement_threshold``; it is trusted again only after ``resume_ticks``
consecutive ticks below ``disagreement_resume``. The safety gate
(:mod:`mbrl_ros.core.safety_gate`) holds the robot while untrusted; the controller
(:mod:`mbrl_ros.core.controller`) switches to its recovery mode at the same moment, because
both run this one class on the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_DISAGREEMENT_THRESHOLD = 1.0
"""Default ``disagreement_threshold`` of the gate and of the planner's recovery."""
DEFAULT_DISAGREEMENT_RESUME = 0.5
"""Default ``disagreement_resume`` of the gate and of the planner's recovery."""
DEFAULT_RESUME_TICKS = 10
"""Default ``resume_ticks`` of the gate and of the planner's recovery."""
RESUME_TICKS_RANGE = (1, 1_000_000)
"""Allowed ``resume_ticks`` (parameter range)."""


def trust_settings_error(threshold: Any, resume: Any, resume_ticks: Any) -> str:
    """Why the three hysteresis settings are unusable ("" when they are fine)."""
    try:
        threshold, resume = float(threshold), float(resume)
    except (TypeError, ValueError):
        return f"disagreement_threshold and disagreement_resume must be numbers, got " \
               f"{threshold!r} and {resume!r}"
    if not 0.0 <= resume <= threshold:
        return ("need 0 <= disagreement_resume <= disagreement_threshold, got "
                f"{resume} and {threshold}")
    if isinstance(resume_ticks, bool) or not isinstance(resume_ticks, int) \
            or resume_ticks < RESUME_TICKS_RANGE[0]:
        return f"resume_ticks must be an integer >= 1, got {resume_ticks!r}"
    return ""


def plan_disagreement(values: Any) -> float:
    """The disagreement a gate judges for a plan: the largest of its per-step values
    (0 for an empty plan); anything non-finite or negative is untrusted (inf)."""
    spread = [float(v) for v in values]
    if not spread:
        return 0.0
    if all(math.isfinite(v) and v >= 0.0 for v in spread):
        return max(spread)
    return math.inf


class DisagreementHysteresis:
    """Enter "untrusted" above ``threshold``; leave it after ``resume_ticks`` consecutive
    values below ``resume``. NaN counts as untrusted (inf)."""

    def __init__(self, threshold: float, resume: float, resume_ticks: int) -> None:
        error = trust_settings_error(threshold, resume, resume_ticks)
        if error:
            raise ValueError(error)
        self.threshold, self.resume = float(threshold), float(resume)
        self.resume_ticks = int(resume_ticks)
        self.tripped = False
        """True while plans are untrusted."""
        self.ticks_below_resume = 0
        """Consecutive values below ``resume`` since the last one that was not."""

    @classmethod
    def of(cls, config: Any) -> "DisagreementHysteresis":
        """From any config with ``disagreement_threshold``, ``disagreement_resume`` and
        ``resume_ticks`` (the gate's ``GateConfig``, the planner's ``RecoveryConfig``)."""
        return cls(config.disagreement_threshold, config.disagreement_resume,
                   config.resume_ticks)

    def update(self, disagreement: float) -> bool:
        """Feed one tick's disagreement; returns :attr:`tripped` after it."""
        value = float(disagreement)
        value = math.inf if math.isnan(value) else value
        if not self.tripped:
            self.tripped = value > self.threshold
            self.ticks_below_resume = 0
        elif value < self.resume:
            self.ticks_below_resume += 1
            if self.ticks_below_resume >= self.resume_ticks:
                self.tripped, self.ticks_below_resume = False, 0
        else:
            self.ticks_below_resume = 0
        return self.tripped

    def reset(self) -> None:
        """Trusted again, with no history."""
        self.tripped, self.ticks_below_resume = False, 0
