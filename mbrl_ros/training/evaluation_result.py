"""What ``mbrl-ros evaluate`` measured: the result the evaluation computes
(:mod:`mbrl_ros.training.evaluate_command`) and the report renders
(:mod:`mbrl_ros.training.report`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List


@dataclass
class ModelErrors:
    """Open-loop errors of one model."""

    rmse: List[List[float]]
    """[max_horizon][state_dim] RMSE of each state entry after 1..max_horizon steps."""
    normalised_mse: List[float]
    """[max_horizon] MSE over all entries, each divided by the mean square of the recorded
    change over the same horizon (1 = no better than predicting no motion; at 1 step close to
    the trainer's held-out measure, which divides by the variance of the change)."""
    diverged: List[int]
    """[max_horizon] rollouts whose prediction was not finite (counted as infinite error)."""


@dataclass
class EvaluationResult:
    """Everything ``mbrl-ros evaluate`` measured (``metrics.json`` holds ``asdict(self)``)."""

    checkpoint: Dict[str, object]
    """Path, sha256, model class and the checkpoint's metadata."""
    joints: List[str]
    state_names: List[str]
    horizons: List[int]
    model_period_s: float
    num_transitions: int
    num_episodes: int
    alignment: str
    windows: List[int]
    """[max_horizon] rollouts long enough for each horizon."""
    model: ModelErrors
    baseline: ModelErrors
    """The analytical URDF model alone."""
    within_1_sigma: List[float]
    """[state_dim] share of one-step errors inside 1 predicted sigma (ideal 0.683)."""
    within_2_sigma: List[float]
    """[state_dim] share inside 2 sigma (ideal 0.954)."""
    coverage_levels: List[float]
    coverage_observed: List[float]
    """[levels] share of one-step errors inside the central interval of each level."""
    disagreement_pearson: float
    disagreement_spearman: float
    """Rank correlation of disagreement with the normalised one-step error."""
    disagreement_bin_error: List[float]
    """Mean normalised one-step error per disagreement quantile bin (low to high)."""
    warnings: List[str] = field(default_factory=list)
