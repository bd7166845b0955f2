"""Model error measures shared by the trainer (deployment decisions) and the evaluate tool.

All errors are normalised the same way: each state dimension is divided by the std of its
one-step change in the evaluated batch (:func:`delta_scale`), so models with different
normalisers, and errors at different horizons, compare on one scale. The model's wrapping
angles (its ``angle_wrap``, e.g. continuous joints' positions, which the robot reports beyond
+-pi and the model predicts in [-pi, pi)) are compared modulo a turn (:func:`state_error`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from mbrl_ros.core.types import TransitionBatch

MIN_DELTA_STD = 1e-9
"""A state dimension whose one-step change has a smaller std is not normalised (divided by 1)."""
PREDICT_CHUNK_ROWS = 8192
"""Rows per model evaluation (bounds memory)."""
ONE_SIGMA, TWO_SIGMA = 1.0, 2.0
"""The two error bounds of :class:`Calibration`, in predicted standard deviations."""
GAUSSIAN_WITHIN_1_SIGMA = math.erf(ONE_SIGMA / math.sqrt(2.0))
"""Share of a Gaussian's samples within 1 std of its mean (0.683): a calibrated model's
``Calibration.within_1_sigma``."""
GAUSSIAN_WITHIN_2_SIGMA = math.erf(TWO_SIGMA / math.sqrt(2.0))
"""Share of a Gaussian's samples within 2 std of its mean (0.954)."""


@dataclass(frozen=True)
class Calibration:
    """How well a model's predicted one-step variance matches its one-step errors.

    The predicted variance is the ensemble's total: the members' mean aleatoric variance plus
    the variance of the member means. Every field is NaN when the model gives no usable
    variance (none, or zero or non-finite for some entry) or there is no data.
    """

    within_1_sigma: float = math.nan
    """Share of (transition, state entry) errors within 1 predicted std (calibrated: 0.683;
    below: overconfident)."""
    within_2_sigma: float = math.nan
    """Share within 2 predicted std (calibrated: 0.954)."""
    variance_ratio: float = math.nan
    """Mean of squared error / predicted variance (calibrated: 1; above: overconfident)."""

    def summary(self) -> str:
        """One line for logs."""
        return (f"{self.within_1_sigma:.1%} of one-step errors within 1 sigma "
                f"({GAUSSIAN_WITHIN_1_SIGMA:.1%} if calibrated), "
                f"{self.within_2_sigma:.1%} within 2 sigma "
                f"({GAUSSIAN_WITHIN_2_SIGMA:.1%}), squared error / predicted variance "
                f"{self.variance_ratio:.3g} (1)")


def angle_dims(model) -> Tuple[int, ...]:
    """State dims ``model`` treats as wrapping angles: its config's ``angle_wrap`` (a residual
    model's: its ensemble's; through wrappers that forward attributes); () for none."""
    for holder in (model, getattr(model, "model", None)):
        for part in (holder, getattr(holder, "ensemble", None)):
            wrap = getattr(getattr(part, "config", None), "angle_wrap", None)
            if wrap is not None:
                return tuple(int(i) for i in wrap)
    return ()


def state_error(predicted: np.ndarray, recorded: np.ndarray,
                angles: Sequence[int] = ()) -> np.ndarray:
    """``predicted - recorded`` ``[..., S]``, the ``angles`` dims wrapped to [-pi, pi)."""
    error = np.asarray(predicted, dtype=np.float64) - np.asarray(recorded, dtype=np.float64)
    if len(angles):
        index = list(angles)
        error[..., index] = np.remainder(error[..., index] + math.pi, 2 * math.pi) - math.pi
    return error


def delta_scale(batch: TransitionBatch, angles: Sequence[int] = ()) -> np.ndarray:
    """[S] std of the state change per dimension (1 where a dimension never changes); the
    ``angles`` dims' changes taken modulo a turn."""
    scale = np.std(state_error(batch.next_state, batch.state, angles), axis=0)
    return np.where(scale > MIN_DELTA_STD, scale, 1.0)


def predict_mean(model, state: np.ndarray, action: np.ndarray,
                 chunk: int = PREDICT_CHUNK_ROWS) -> tuple:
    """Ensemble-mean prediction and disagreement for rows ``state [N, S]``, ``action [N, A]``.

    Returns ``(mean [N, S], member_means [E, N, S], variance [E, N, S])`` as numpy arrays;
    ``variance`` is NaN where the model returns none.
    """
    means, variances = [], []
    with torch.no_grad():
        for start in range(0, len(state), chunk):
            s = torch.as_tensor(state[start:start + chunk], device=model.device)
            a = torch.as_tensor(action[start:start + chunk], device=model.device)
            mean, var = model.predict(s, a)
            means.append(mean.cpu().numpy())
            variances.append(np.full(means[-1].shape, np.nan) if var is None
                             else var.cpu().numpy())
    member_means = np.concatenate(means, axis=1)
    return member_means.mean(0), member_means, np.concatenate(variances, axis=1)


def _finite_or_inf(value: float) -> float:
    return value if np.isfinite(value) else float("inf")


def normalised_one_step_mse(model, batch: TransitionBatch) -> float:
    """Mean squared one-step error of the ensemble mean, each dimension divided by the std of
    its state change in ``batch``, so models with different normalisers compare fairly."""
    if model is None or len(batch) == 0:
        return float("inf")
    mean, _, _ = predict_mean(model, batch.state, batch.action)
    angles = angle_dims(model)
    error = state_error(mean, batch.next_state, angles) / delta_scale(batch, angles)
    return _finite_or_inf(float(np.mean(np.square(error))))


def run_ids(batch: TransitionBatch) -> np.ndarray:
    """[N] index of the run of consecutive transitions each row belongs to.

    Row ``i + 1`` continues row ``i``'s run when ``next_state[i] == state[i + 1]`` exactly and,
    where the batch has episode ids, both have the same episode; anything else (a reset, a
    gap, a dropped row, another recording) starts a new run.
    """
    if len(batch) == 0:
        return np.zeros(0, dtype=np.int64)
    linked = np.all(batch.next_state[:-1] == batch.state[1:], axis=1)
    if batch.episode is not None:
        linked &= batch.episode[:-1] == batch.episode[1:]
    return np.concatenate([[0], np.cumsum(~linked)]).astype(np.int64)


def consecutive_windows(batch: TransitionBatch, horizon: int) -> np.ndarray:
    """[W] first rows of every window of ``horizon`` consecutive transitions of one run (see
    :func:`run_ids`): rows ``i .. i + horizon - 1`` with no reset in between."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if len(batch) < horizon:
        return np.zeros(0, dtype=np.int64)
    runs = run_ids(batch)
    starts = np.arange(len(batch) - horizon + 1)
    return starts[runs[starts + horizon - 1] == runs[starts]]


def evenly_spaced(rows: np.ndarray, most: Optional[int]) -> np.ndarray:
    """At most ``most`` entries of ``rows``, evenly spaced over it (all of them for None)."""
    if most is None or len(rows) <= most:
        return rows
    return rows[np.unique(np.linspace(0, len(rows) - 1, most).round().astype(np.int64))]


def open_loop_mse(model, batch: TransitionBatch, horizon: int,
                  max_windows: Optional[int] = None) -> float:
    """Normalised mean squared ``horizon``-step open-loop error of the ensemble mean.

    From the first state of every window of ``horizon`` consecutive transitions
    (:func:`consecutive_windows`), the model's mean prediction is fed back as the next state
    with the recorded actions, and the state it reaches after ``horizon`` steps is compared
    with the recorded one; each dimension divided by the std of its one-step change in
    ``batch``, as :func:`normalised_one_step_mse` (which equals the 1-step value).

    Args:
        max_windows: roll out at most this many windows, evenly spaced (None: all).

    Returns:
        The error; inf without a model or for a rollout that diverged; NaN when ``batch`` has
        no window of ``horizon`` consecutive transitions.
    """
    if model is None or len(batch) == 0:
        return float("inf")
    starts = evenly_spaced(consecutive_windows(batch, horizon), max_windows)
    if len(starts) == 0:
        return float("nan")
    state = batch.state[starts]
    for step in range(horizon):
        state, _, _ = predict_mean(model, state, batch.action[starts + step])
    angles = angle_dims(model)
    with np.errstate(over="ignore", invalid="ignore"):
        error = state_error(state, batch.next_state[starts + horizon - 1], angles) \
            / delta_scale(batch, angles)
        return _finite_or_inf(float(np.mean(np.square(error))))


def calibration(model, batch: TransitionBatch) -> Calibration:
    """:class:`Calibration` of ``model``'s one-step predictions on ``batch``."""
    if model is None or len(batch) == 0:
        return Calibration()
    mean, member_means, variance = predict_mean(model, batch.state, batch.action)
    total = variance.mean(axis=0) + member_means.var(axis=0)
    if not (np.isfinite(total).all() and (total > 0).all()):
        return Calibration()
    squared_z = np.square(state_error(mean, batch.next_state, angle_dims(model))) / total
    return Calibration(within_1_sigma=float(np.mean(squared_z <= ONE_SIGMA ** 2)),
                       within_2_sigma=float(np.mean(squared_z <= TWO_SIGMA ** 2)),
                       variance_ratio=float(np.mean(squared_z)))
