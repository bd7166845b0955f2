"""Continuous joints (no position limits) between the robot and the learned models.

A continuous joint's angle has no end: the robot reports it as it accumulates (7.0 rad after a
turn and a bit), the learned models keep it in ``[-pi, pi)`` (its state dim is a wrapping
angle, see :func:`mbrl_ros.robots.robot_model.with_continuous_angles`). The controller plans
in the models' frame (:func:`wrap_positions`); a position target it sends is the equal angle
nearest where the joint is (:func:`nearest_turns`), so the joint never unwinds a turn to reach
a target that is a few degrees away.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

FULL_TURN = 2.0 * math.pi
"""One turn [rad]."""


def continuous_mask(flags: Optional[Sequence[bool]], num_joints: int) -> Optional[np.ndarray]:
    """``[num_joints]`` bool mask of the continuous joints, or None when there are none (so
    callers skip the conversions). Raises ValueError on a mask of the wrong length."""
    if flags is None:
        return None
    mask = np.asarray(flags, dtype=bool).reshape(-1)
    if mask.shape != (num_joints,):
        raise ValueError(f"continuous joint flags need {num_joints} values, got {mask.shape[0]}")
    return mask if mask.any() else None


def wrap(angles: np.ndarray) -> np.ndarray:
    """Angles (any shape) wrapped to ``[-pi, pi)``."""
    return np.remainder(np.asarray(angles, dtype=np.float64) + math.pi, FULL_TURN) - math.pi


def wrap_positions(positions: np.ndarray, continuous: np.ndarray) -> np.ndarray:
    """Joint positions ``[..., J]`` with the continuous joints' angles wrapped to ``[-pi, pi)``
    (the learned models' frame); the other joints as they are."""
    positions = np.asarray(positions, dtype=np.float64)
    return np.where(continuous, wrap(positions), positions)


def nearest_turns(targets: np.ndarray, start: np.ndarray, continuous: np.ndarray) -> np.ndarray:
    """Position targets ``[T, J]`` as sent to the robot: each continuous joint's target is the
    equal angle (modulo a turn) nearest the target before it, the first one nearest ``start``
    ``[J]`` (where the joint is, as the robot reports it); the other joints' targets as they
    are. A path of small steps stays a path of small steps across ``+-pi``."""
    targets = np.asarray(targets, dtype=np.float64)
    start = np.asarray(start, dtype=np.float64)
    if targets.ndim != 2 or targets.shape[1] != start.shape[-1]:
        raise ValueError(f"targets must be [T, {start.shape[-1]}], got {targets.shape}")
    steps = wrap(np.diff(np.concatenate([start[None], targets]), axis=0))
    return np.where(continuous, start + np.cumsum(steps, axis=0), targets)


__all__ = ["FULL_TURN", "continuous_mask", "nearest_turns", "wrap", "wrap_positions"]
