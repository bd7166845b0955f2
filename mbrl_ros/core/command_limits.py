"""The one rule for how far and how fast a joint position target may move (ROS-free).

A position-controlled joint is a servo: its driver applies ``kp * (target - position)`` (plus
damping and, usually, gravity compensation). Two bounds follow from the robot's own numbers:

- **target-to-measured bound**: a target further than ``effort_limit / kp`` from the measured
  position asks the servo for more than its effort limit (with kp = 400 N m/rad and 87 N m,
  0.22 rad); a larger step is a torque step the actuator cannot deliver as commanded.
- **rate bound**: successive targets may move at most ``velocity_limit * dt`` apart, so the
  target itself never moves faster than the joint is allowed to.

The safety gate enforces both (scaled down for exploration commands), and any generated robot
configuration uses the same functions, so the two never disagree.
"""

from __future__ import annotations

import numpy as np

EXPLORATION_LIMIT_FRACTION = 0.5
"""Exploration commands get this fraction of the step and rate bounds (the gate's default)."""
EXPLORER_HEADROOM = 0.9
"""An explorer keeps its targets within this fraction of the gate's exploration bound, so the
joint moving between the planner's tick and the gate's check does not push a command out."""


def position_step_bound(effort_limit, servo_kp, explicit=np.inf) -> np.ndarray:
    """Per joint, the largest allowed ``|target - measured position|``.

    ``min(explicit, effort_limit / servo_kp)``; a joint whose ``servo_kp`` is 0 (unknown) or
    whose effort limit is infinite is bounded by ``explicit`` alone.
    """
    effort_limit = np.asarray(effort_limit, dtype=np.float64)
    servo_kp = np.asarray(servo_kp, dtype=np.float64)
    effort_limit, servo_kp, explicit = np.broadcast_arrays(effort_limit, servo_kp,
                                                           np.asarray(explicit, np.float64))
    derived = np.full(effort_limit.shape, np.inf)
    known = (servo_kp > 0) & np.isfinite(effort_limit)
    derived[known] = effort_limit[known] / servo_kp[known]
    return np.minimum(explicit, derived)


def command_rate_bound(velocity_limit, explicit=np.inf) -> np.ndarray:
    """Per joint, the largest allowed speed of the position target itself [unit/s]:
    ``min(explicit, velocity_limit)``."""
    velocity_limit = np.asarray(velocity_limit, dtype=np.float64)
    return np.minimum(np.asarray(explicit, dtype=np.float64), velocity_limit)


def rate_limited(target: np.ndarray, previous: np.ndarray, rate: np.ndarray,
                 dt: float) -> np.ndarray:
    """``target`` moved at most ``rate * dt`` away from ``previous`` (element-wise)."""
    step = np.asarray(rate, dtype=np.float64) * max(float(dt), 0.0)
    return np.clip(target, previous - step, previous + step)


def exploration_lead(effort_limit, servo_kp, explicit=np.inf,
                     fraction: float = EXPLORATION_LIMIT_FRACTION) -> np.ndarray:
    """Per joint, how far an explorer's position target may lead the measured position so that
    the safety gate passes it: ``EXPLORER_HEADROOM * fraction * position_step_bound``."""
    return EXPLORER_HEADROOM * fraction * position_step_bound(effort_limit, servo_kp, explicit)
