"""Settings of a :class:`~mbrl_ros.core.ensemble.ProbabilisticEnsemble` (architecture and
training), apart from the network so that the trainer (``model_training``) and the ensemble
both depend on it, and not on each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from mbrl_ros.core.config_values import DictConfig
from mbrl_ros.core.ensemble_layers import check_activation


@dataclass(frozen=True)
class EnsembleConfig(DictConfig):
    """Architecture and training settings of a :class:`ProbabilisticEnsemble`."""

    num_members: int = 5
    """Number of ensemble members (independently initialised, bootstrapped networks)."""
    num_elites: int = 4
    """Members with the lowest validation MSE, used by ``predict`` when ``use_elites`` is set."""
    hidden_sizes: Tuple[int, ...] = (200, 200, 200)
    """Width of each hidden layer."""
    activation: str = "silu"
    """Hidden activation: silu, relu, elu, gelu or tanh."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 5e-5
    """Adam (L2) weight decay."""
    batch_size: int = 256
    """Minibatch size per member."""
    max_epochs: int = 200
    """Upper bound on training epochs per call to ``fit``."""
    patience: int = 10
    """Stop after this many epochs without validation improvement of any member."""
    improvement_threshold: float = 0.01
    """Relative validation-MSE decrease that counts as an improvement."""
    validation_fraction: float = 0.1
    """Share of transitions held out for validation (0: validate on the training data)."""
    bootstrap: bool = True
    """Train each member on its own bootstrap resample of the training set."""
    min_logvar_init: float = -10.0
    """Initial soft lower bound of the log-variance (normalised units), learned."""
    max_logvar_init: float = 0.5
    """Initial soft upper bound of the log-variance (normalised units), learned."""
    logvar_bound_coef: float = 0.01
    """Weight of the penalty that pulls the learned log-variance bounds together."""
    angle_wrap: Tuple[int, ...] = ()
    """State indices that are wrapping angles in [-pi, pi): sin/cos inputs, wrapped deltas."""
    relative_action: Tuple[int, ...] = ()
    """One state index per action dim, subtracted from that action in the network input:
    joint position targets become target errors ``u - q``, which a servo's response depends on
    (in smooth exploration data ``u`` and ``q`` are nearly collinear, and a network fed both
    separates their effects poorly). Empty: actions as they are."""
    use_elites: bool = False
    """Default for ``predict``: elites only (True) or all members (False)."""
    normalizer_min_std: float = 1e-6
    """Features with a smaller std are treated as constant (std set to 1)."""
    eval_batch_size: int = 4096
    """Rows per forward pass when evaluating validation data."""

    def validate(self) -> None:
        """Raise ValueError on inconsistent settings."""
        if self.num_members < 1:
            raise ValueError(f"num_members must be >= 1, got {self.num_members}")
        if not 1 <= self.num_elites <= self.num_members:
            raise ValueError(f"num_elites must be in [1, num_members={self.num_members}], "
                             f"got {self.num_elites}")
        if not self.hidden_sizes or any(int(h) < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers, got {self.hidden_sizes}")
        check_activation(self.activation)
        for name in ("learning_rate", "batch_size", "max_epochs", "patience",
                     "normalizer_min_std", "eval_batch_size"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.weight_decay < 0 or self.improvement_threshold < 0 or self.logvar_bound_coef < 0:
            raise ValueError("weight_decay, improvement_threshold and logvar_bound_coef "
                             "must be >= 0")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), "
                             f"got {self.validation_fraction}")
        if not self.min_logvar_init < self.max_logvar_init:
            raise ValueError("min_logvar_init must be below max_logvar_init")
        if len(set(self.angle_wrap)) != len(self.angle_wrap) or min(self.angle_wrap,
                                                                    default=0) < 0:
            raise ValueError(f"angle_wrap must be distinct non-negative indices, "
                             f"got {self.angle_wrap}")
        if min(self.relative_action, default=0) < 0:
            raise ValueError(f"relative_action must be state indices >= 0, "
                             f"got {self.relative_action}")


ARCHITECTURE_FIELDS = ("num_members", "num_elites", "hidden_sizes", "activation", "angle_wrap",
                       "relative_action", "min_logvar_init", "max_logvar_init")
"""Config fields that define the network; they cannot change once a model is built."""
