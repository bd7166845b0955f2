"""When the safety gate's next output is due: one per control period, in step with the robot.

The gate answers each joint state with a fresh gated command, judged on the joint state's own
stamp (the robot's tick), and its control-rate timer fills in when joint states are late. A
tick may come up to ``early_fraction`` of a period before the next output is due and still be
answered, so joint states at the control rate each get exactly one output while their stamps
jitter by less than a quarter period either way, and joint states faster than the control
rate still get outputs at the control rate. The schedule keeps its phase while outputs are on
time and starts afresh from an output further off (a missed tick is not made up with a burst).
"""

from __future__ import annotations

import math

EARLY_FRACTION = 0.5
"""How early (a fraction of the period) a tick may come and still be answered."""


class TickSchedule:
    """``due(t)``: may the gate publish for time ``t``; ``sent(t)``: it did (seconds)."""

    def __init__(self, period: float, early_fraction: float = EARLY_FRACTION) -> None:
        if not period > 0.0:
            raise ValueError(f"period must be > 0, got {period}")
        if not 0.0 <= early_fraction < 1.0:
            raise ValueError(f"early_fraction must be in [0, 1), got {early_fraction}")
        self.period = float(period)
        self.slack = early_fraction * self.period
        self.next_due = -math.inf

    def due(self, t: float) -> bool:
        """True from ``slack`` before the next output is due on (and after a jump back in
        time of more than a period, e.g. a restarted simulation)."""
        return t >= self.next_due - self.slack or t < self.next_due - 2.0 * self.period

    def sent(self, t: float) -> None:
        """An output went out for time ``t``: the next is due a period after this one's
        scheduled time, or a period after ``t`` when it was off schedule (or the first)."""
        on_time = self.next_due - self.slack <= t <= self.next_due + self.slack
        self.next_due = (self.next_due if on_time else t) + self.period
