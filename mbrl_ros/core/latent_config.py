"""Settings of the TD-MPC2-style latent world model, its training and its latent-space planner.

Defaults follow TD-MPC2 (Hansen et al., 2024; ``nicklashansen/tdmpc2`` ``config.yaml``) where
they are cheap, and are smaller where they are not (latent 64 instead of 512, MLPs 256 wide
instead of 512, fewer planner samples), so that an agent trains and plans on one CPU thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

DISCOUNT_DENOMINATOR = 5.0
"""TD-MPC2's discount heuristic: an episode of T agent steps gets discount (f - 1) / f with
f = T / this, clipped to [DISCOUNT_MIN, DISCOUNT_MAX]."""
DISCOUNT_MIN = 0.95
DISCOUNT_MAX = 0.995
ACTIVATION_NAMES = ("mish", "silu")
"""Hidden-layer activations of the latent model's networks."""


def heuristic_discount(episode_agent_steps: int) -> float:
    """TD-MPC2's discount for episodes of ``episode_agent_steps`` agent steps (250 -> 0.98)."""
    frac = max(float(episode_agent_steps), 1.0) / DISCOUNT_DENOMINATOR
    return min(max((frac - 1.0) / frac, DISCOUNT_MIN), DISCOUNT_MAX)


@dataclass(frozen=True)
class LatentModelConfig:
    """Architecture and training of :class:`~mbrl_ros.core.latent_model.LatentWorldModel`."""

    latent_dim: int = 64
    """Size of the latent state z (a multiple of ``simnorm_dim``)."""
    encoder_hidden: Tuple[int, ...] = (256,)
    """Hidden sizes of the state encoder (TD-MPC2: one layer of 256)."""
    mlp_hidden: Tuple[int, ...] = (256, 256)
    """Hidden sizes of the dynamics, reward, policy and Q networks (TD-MPC2: 512, 512)."""
    activation: str = "mish"
    """Hidden-layer activation after LayerNorm: "mish" (TD-MPC2) or "silu" (cheaper on CPU)."""
    simnorm_dim: int = 8
    """Group size of the simplicial normalisation of latents (0: LayerNorm + Mish instead)."""
    num_q: int = 5
    """Q-functions in the ensemble; targets and the policy use two of them drawn at random."""
    q_dropout: float = 0.01
    """Dropout after the first layer of each Q-function (training only)."""
    num_bins: int = 101
    """Bins of the two-hot discrete regression of rewards and values in symlog space
    (1: plain MSE regression of symlog(target) instead)."""
    value_min: float = -10.0
    value_max: float = 10.0
    """Symlog range covered by the bins."""
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    """Range of the policy prior's log standard deviation (before the tanh squash)."""
    # ------------------------------------------------------------------------------ training
    horizon: int = 3
    """Length H of the sub-trajectories the model is trained on (latent rollout steps)."""
    batch_size: int = 256
    """Sub-trajectories per update."""
    rho: float = 0.5
    """Weight decay over the horizon: step t of the rollout weighs rho^t."""
    learning_rate: float = 3e-4
    encoder_lr_scale: float = 0.3
    """The encoder learns at this fraction of ``learning_rate``."""
    grad_clip_norm: float = 20.0
    consistency_coef: float = 20.0
    """Weight of the latent-consistency loss (predicted vs encoded next latents)."""
    reward_coef: float = 0.1
    value_coef: float = 0.1
    entropy_coef: float = 1e-4
    """Weight of the policy prior's entropy (per action dimension) in its loss."""
    tau: float = 0.01
    """EMA rate of the target Q-functions and of the running Q scale of the policy loss."""
    discount: float = 0.0
    """TD discount per agent step (0: :func:`heuristic_discount` of the episode length, set
    by the user of the model)."""

    def validate(self) -> "LatentModelConfig":
        """Raise ValueError on an unusable setting; return self."""
        for name in ("latent_dim", "num_q", "num_bins", "horizon", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_q < 2:
            raise ValueError(f"num_q must be >= 2 (two are drawn per target), got {self.num_q}")
        if any(int(h) < 1 for h in (*self.encoder_hidden, *self.mlp_hidden)):
            raise ValueError("hidden sizes must be >= 1")
        if self.activation not in ACTIVATION_NAMES:
            raise ValueError(f"activation must be one of {ACTIVATION_NAMES}, got "
                             f"{self.activation!r}")
        if not self.mlp_hidden:
            raise ValueError("mlp_hidden needs at least one layer")
        if self.simnorm_dim < 0 or (self.simnorm_dim and self.latent_dim % self.simnorm_dim):
            raise ValueError(f"latent_dim ({self.latent_dim}) must be a multiple of "
                             f"simnorm_dim ({self.simnorm_dim})")
        if not self.value_min < self.value_max:
            raise ValueError("value_min must be < value_max")
        if not self.log_std_min < self.log_std_max:
            raise ValueError("log_std_min must be < log_std_max")
        if not 0.0 <= self.q_dropout < 1.0:
            raise ValueError(f"q_dropout must be in [0, 1), got {self.q_dropout}")
        if not 0.0 < self.rho <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError("rho and tau must be in (0, 1]")
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"discount must be in [0, 1), got {self.discount}")
        for name in ("learning_rate", "encoder_lr_scale", "grad_clip_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("consistency_coef", "reward_coef", "value_coef", "entropy_coef"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        return self


@dataclass(frozen=True)
class LatentPlannerConfig:
    """MPPI in latent space (:class:`~mbrl_ros.core.latent_planner.LatentPlanner`)."""

    horizon: int = 3
    """Planning horizon in agent steps (TD-MPC2: 3; a terminal Q closes it)."""
    iterations: int = 6
    num_samples: int = 256
    """Action sequences per iteration, policy-prior ones included (TD-MPC2: 512)."""
    num_elites: int = 32
    """Best sequences the mean and std are refitted to (TD-MPC2: 64)."""
    num_policy_trajectories: int = 16
    """Sequences from the policy prior rolled out in latent space (TD-MPC2: 24)."""
    min_std: float = 0.05
    max_std: float = 2.0
    """Clamp of the sampling std (normalised action units); the first iteration uses max."""
    temperature: float = 0.5
    """TD-MPC2's (inverse) temperature: elite weights are exp(temperature * (value - max))."""
    seed: int = 0

    def validate(self) -> "LatentPlannerConfig":
        """Raise ValueError on an unusable setting; return self."""
        for name in ("horizon", "iterations", "num_samples", "num_elites"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.num_policy_trajectories < self.num_samples:
            raise ValueError("num_policy_trajectories must be in [0, num_samples)")
        if self.num_elites > self.num_samples:
            raise ValueError("num_elites must be <= num_samples")
        if not 0.0 < self.min_std <= self.max_std:
            raise ValueError("need 0 < min_std <= max_std")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        return self
