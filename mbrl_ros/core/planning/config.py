"""Settings of the planner (MPPI / CEM / iCEM / iLQR over a learned dynamics ensemble)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

METHODS = ("mppi", "cem", "icem", "ilqr")
"""Planner update rules (see docs/planner.md#planning-methods)."""

PROPAGATIONS = ("ensemble", "mean", "partition")
"""How a sampled action sequence is propagated through the ensemble (see docs/planner.md)."""

BF16_ACTION_TOLERANCE = 1e-3
"""bfloat16 rollouts are used only if the first planned action moves by at most this fraction
of the action range (per dimension) against float32 (``PlannerConfig.bf16_rollouts``)."""


@dataclass(frozen=True)
class PlannerConfig:
    """Settings of :class:`mbrl_ros.core.planning.Planner`.

    Action noise, standard deviations and the gradient step size are expressed in *normalised*
    action units: ``[-1, 1]`` spans ``[action_low, action_high]``.
    """

    method: str = "mppi"
    """Update rule: "mppi" (exponentially weighted mean of all samples), "cem" (elite mean),
    "icem" (CEM with colored noise, elite reuse and a shrinking population) or "ilqr"
    (control-limited iLQR / box-DDP from the warm start; ``num_iterations`` iterations)."""
    horizon: int = 16
    """Number of planned control steps H."""
    num_samples: int = 512
    """Action sequences scored per iteration, policy-prior trajectories included."""
    num_iterations: int = 3
    """Sample / score / update rounds per planning step."""
    num_policy_trajectories: int = 24
    """Samples per step drawn by rolling out the policy prior (ignored without a policy)."""
    policy_noise_std: float = 0.05
    """Std (normalised units) of the noise added to policy-prior actions, for diversity."""
    elite_fraction: float = 0.125
    """CEM: fraction of the samples kept as elites."""
    temperature: float = 0.5
    """MPPI: temperature lambda in cost units; smaller trusts the best samples more."""
    momentum: float = 0.1
    """Weight of the previous mean in each update: mean = m * old + (1 - m) * new."""
    init_std: float = 1.0
    """Sampling std (normalised units) at the start of every planning step."""
    min_std: float = 0.05
    """Lower clamp on the sampling std (normalised units)."""
    max_std: float = 2.0
    """Upper clamp on the sampling std (normalised units)."""
    discount: float = 0.99
    """Discount applied to the disagreement penalty per step and to the terminal value."""
    disagreement_weight: float = 0.0
    """Cost per unit of ensemble disagreement (per step, discounted); 0 disables the penalty."""
    propagation: str = "ensemble"
    """"ensemble": every member propagates every sample ([E, N, S]), cost averaged over members;
    "mean": one trajectory per sample, next state = mean of the members' predictions;
    "partition": sample n is propagated by member n % E only (E times cheaper, no disagreement
    penalty while sampling; the returned plan is still evaluated with all members)."""
    action_low: Tuple[float, ...] = (-1.0,)
    """Lower action bound, one value (all dims) or one per action dim; a hard constraint."""
    action_high: Tuple[float, ...] = (1.0,)
    """Upper action bound, one value (all dims) or one per action dim; a hard constraint."""
    state_low: Tuple[float, ...] = ()
    """Lower limits on predicted states (joint positions / velocities), one per state dim
    (-inf where free); empty for none. Samples that violate them are infeasible."""
    state_high: Tuple[float, ...] = ()
    """Upper limits on predicted states, one per state dim (+inf where free); empty for none."""
    constraint_tolerance: float = 1e-6
    """State-limit violations up to this size are still counted as feasible."""
    gradient_steps: int = 0
    """Adam steps of gradient refinement on the chosen plan after sampling; 0 disables it."""
    gradient_lr: float = 0.05
    """Adam learning rate of the refinement (normalised action units)."""
    seed: int = 0
    """Seed of the planner's torch.Generator (sampling noise)."""
    rollout_chunk_rows: int = 0
    """Samples per block of the rollout kernel: each block goes through every layer while its
    activations are in cache; 0: all samples at once."""
    noise_exponent: float = 2.0
    """iCEM: exponent beta of the sampling noise's power spectrum along the horizon
    (power ~ 1 / frequency^beta): 0 is white noise, larger is smoother (Pinneri et al. 2020)."""
    keep_elites_fraction: float = 0.3
    """iCEM: fraction of the elites carried into the next iteration, and (shifted one step)
    into the next plan's first iteration."""
    population_decay: float = 1.25
    """iCEM: iteration i samples num_samples / population_decay^i sequences (at least twice
    the elites); 1 keeps the population fixed."""
    ilqr_regularization: float = 1e-3
    """iLQR: initial Levenberg-Marquardt term mu added to Q_uu (normalised action units)."""
    ilqr_regularization_factor: float = 2.0
    """iLQR: base factor of the regularisation schedule (Tassa et al. 2012): mu grows after a
    failed step or a non-positive-definite Q_uu, shrinks after an accepted one."""
    ilqr_line_search_steps: int = 8
    """iLQR: step sizes 1, 1/2, 1/4, ... tried per iteration, all rolled out in one batch on
    the model (the lowest cost is accepted if it lowers the cost)."""
    bf16_rollouts: bool = False
    """Score the samples with bfloat16 matmuls (CPUs with avx512_bf16 or AMX, GPUs). Used only
    when a check on the first plan with each model finds the plan's first action within
    ``BF16_ACTION_TOLERANCE`` of the action range of the float32 plan's, and bfloat16
    sampling faster than float32 (logged either way); the final choice of the plan is always
    scored in float32."""

    def validate(self) -> "PlannerConfig":
        """Raise ValueError with a clear message if a field is out of range; return self."""
        if self.method not in METHODS:
            raise ValueError(f"PlannerConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.propagation not in PROPAGATIONS:
            raise ValueError(f"PlannerConfig.propagation must be one of {PROPAGATIONS}, "
                             f"got {self.propagation!r}")
        for name in ("horizon", "num_samples", "num_iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PlannerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.num_policy_trajectories < self.num_samples:
            raise ValueError("PlannerConfig.num_policy_trajectories must be in [0, num_samples), "
                             f"got {self.num_policy_trajectories} with {self.num_samples} samples")
        if not 0.0 < self.elite_fraction <= 1.0:
            raise ValueError(f"PlannerConfig.elite_fraction must be in (0, 1], "
                             f"got {self.elite_fraction}")
        if not self.temperature > 0.0:
            raise ValueError(f"PlannerConfig.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"PlannerConfig.momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 < self.min_std <= self.max_std:
            raise ValueError(f"PlannerConfig needs 0 < min_std <= max_std, "
                             f"got {self.min_std}, {self.max_std}")
        if not self.min_std <= self.init_std <= self.max_std:
            raise ValueError(f"PlannerConfig.init_std must be in [min_std, max_std], "
                             f"got {self.init_std}")
        if not 0.0 < self.discount <= 1.0:
            raise ValueError(f"PlannerConfig.discount must be in (0, 1], got {self.discount}")
        for name in ("disagreement_weight", "policy_noise_std", "constraint_tolerance",
                     "gradient_steps", "rollout_chunk_rows"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"PlannerConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.gradient_steps > 0 and not self.gradient_lr > 0.0:
            raise ValueError(f"PlannerConfig.gradient_lr must be > 0, got {self.gradient_lr}")
        if not (math.isfinite(self.noise_exponent) and self.noise_exponent >= 0.0):
            raise ValueError(f"PlannerConfig.noise_exponent must be finite and >= 0, "
                             f"got {self.noise_exponent}")
        if not 0.0 <= self.keep_elites_fraction <= 1.0:
            raise ValueError(f"PlannerConfig.keep_elites_fraction must be in [0, 1], "
                             f"got {self.keep_elites_fraction}")
        if not (math.isfinite(self.population_decay) and self.population_decay >= 1.0):
            raise ValueError(f"PlannerConfig.population_decay must be finite and >= 1, "
                             f"got {self.population_decay}")
        if not (math.isfinite(self.ilqr_regularization) and self.ilqr_regularization >= 0.0):
            raise ValueError(f"PlannerConfig.ilqr_regularization must be finite and >= 0, "
                             f"got {self.ilqr_regularization}")
        if not (math.isfinite(self.ilqr_regularization_factor)
                and self.ilqr_regularization_factor > 1.0):
            raise ValueError(f"PlannerConfig.ilqr_regularization_factor must be finite and > 1, "
                             f"got {self.ilqr_regularization_factor}")
        if int(self.ilqr_line_search_steps) < 1:
            raise ValueError(f"PlannerConfig.ilqr_line_search_steps must be >= 1, "
                             f"got {self.ilqr_line_search_steps}")
        if self.propagation == "partition" and self.disagreement_weight > 0.0:
            raise ValueError("PlannerConfig: propagation='partition' evaluates one member per "
                             "sample, so it cannot penalise disagreement; use 'ensemble' or "
                             "'mean', or set disagreement_weight to 0")
        if not self.action_low or len(self.action_low) != len(self.action_high):
            raise ValueError("PlannerConfig.action_low and action_high must be non-empty and of "
                             f"equal length, got {len(self.action_low)} and "
                             f"{len(self.action_high)}")
        for low, high in zip(self.action_low, self.action_high):
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"PlannerConfig action bounds must be finite with low < high, "
                                 f"got low={low}, high={high}")
        if len(self.state_low) != len(self.state_high):
            raise ValueError(f"PlannerConfig.state_low and state_high must have equal length, "
                             f"got {len(self.state_low)} and {len(self.state_high)}")
        for low, high in zip(self.state_low, self.state_high):
            if math.isnan(low) or math.isnan(high) or not low < high:
                raise ValueError(f"PlannerConfig state limits need low < high, "
                                 f"got low={low}, high={high}")
        return self

    @property
    def num_elites(self) -> int:
        """CEM: number of elite samples (at least 1)."""
        return max(1, int(round(self.elite_fraction * self.num_samples)))

    @property
    def num_kept_elites(self) -> int:
        """iCEM: elites carried into the next iteration and the next plan."""
        return int(round(self.keep_elites_fraction * self.num_elites))
