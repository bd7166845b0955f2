"""Settings of :class:`~mbrl_ros.core.gp_dynamics.GPDynamics` and its fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from mbrl_ros.core.config_values import DictConfig

KERNELS = ("rbf", "matern52")
"""Supported stationary ARD kernels (gpytorch ``RBFKernel`` / ``MaternKernel(nu=2.5)``)."""


@dataclass(frozen=True)
class GPDynamicsConfig(DictConfig):
    """Gaussian-process dynamics: kernel, exact / sparse switch, posterior samples, fit."""

    num_members: int = 5
    """Posterior function samples the model presents to the planner as ensemble members."""
    kernel: str = "rbf"
    """ARD kernel per output dimension: "rbf" or "matern52"."""
    angle_wrap: Tuple[int, ...] = ()
    """State indices of wrapping angles: fed as (sin, cos), deltas wrapped to [-pi, pi)."""
    max_exact_points: int = 3000
    """Exact GP up to this many transitions; above it a sparse variational GP (SVGP)."""
    max_hyper_points: int = 1000
    """Exact GP: the hyperparameters maximise the marginal likelihood of a random subset of at
    most this many transitions (the cost of a step grows with its cube); the posterior then
    conditions on all of them."""
    num_inducing: int = 256
    """Inducing points of the sparse GP (initialised on a random subset of the data)."""
    num_random_features: int = 512
    """Random Fourier features of each member's prior function sample."""
    iterations: int = 200
    """Maximum Adam steps of the marginal likelihood (exact) or ELBO (sparse) per fit."""
    learning_rate: float = 0.05
    """Adam learning rate of the hyperparameters (and variational parameters)."""
    patience: int = 20
    """Stop after this many steps without a relative loss improvement of ``min_improvement``."""
    min_improvement: float = 1e-4
    """Relative improvement of the (smoothed) loss that resets the patience counter."""
    loss_smoothing: float = 0.9
    """Exponential smoothing of the sparse GP's minibatch loss for early stopping."""
    batch_size: int = 1024
    """Minibatch size of the sparse GP."""
    initial_noise: float = 1e-2
    """Observation-noise variance a fit starts from without a warm start (standardised units;
    the lengthscales and signal variances start at 1, the scale of the standardised data)."""
    noise_floor: float = 1e-4
    """Lower bound of the observation-noise variance (standardised target units)."""
    jitter: float = 1e-6
    """Diagonal added to kernel matrices before Cholesky factorisation."""
    normalizer_min_std: float = 1e-6
    """Features with a smaller std are treated as constant (std set to 1)."""
    warm_start: bool = True
    """Start each fit from the previous fit's kernel hyperparameters."""
    log_every: int = 50
    """Log the fit's progress every this many steps."""

    def validate(self) -> "GPDynamicsConfig":
        """Raise ValueError on an unusable setting; return self."""
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        for name in ("num_members", "max_exact_points", "max_hyper_points", "num_inducing",
                     "num_random_features", "iterations", "patience", "batch_size",
                     "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "initial_noise", "noise_floor", "jitter",
                     "normalizer_min_std"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.initial_noise <= self.noise_floor:
            raise ValueError(f"initial_noise ({self.initial_noise}) must exceed noise_floor "
                             f"({self.noise_floor})")
        if not self.min_improvement >= 0.0:
            raise ValueError(f"min_improvement must be >= 0, got {self.min_improvement}")
        if not 0.0 <= self.loss_smoothing < 1.0:
            raise ValueError(f"loss_smoothing must be in [0, 1), got {self.loss_smoothing}")
        if any(int(i) < 0 for i in self.angle_wrap) or len(set(self.angle_wrap)) != len(
                self.angle_wrap):
            raise ValueError(f"angle_wrap must be distinct indices >= 0, got {self.angle_wrap}")
        return self
