"""Learned reward ``r(state, action[, next_state])`` for tasks whose reward is not closed-form
(the dm_control benchmark, model rollouts of :mod:`mbrl_ros.core.value_policy`)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from mbrl_ros.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mbrl_ros.core.ensemble_layers import EnsembleMLP, check_activation
from mbrl_ros.core.normalizer import Normalizer
from mbrl_ros.core.types import TransitionBatch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardModelConfig:
    """Settings of a :class:`RewardModel`."""

    hidden_sizes: Tuple[int, ...] = (128, 128)
    """Hidden layer widths."""
    activation: str = "silu"
    """Hidden activation: silu, relu, elu, gelu or tanh."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam (L2) weight decay."""
    batch_size: int = 256
    """Minibatch size."""
    epochs: int = 50
    """Passes over the data per call to ``fit``."""
    normalizer_min_std: float = 1e-6
    """Features with a smaller std are treated as constant (std set to 1)."""
    use_next_state: bool = True
    """Inputs ``(state, action, next_state)``; False: ``(state, action)`` only (the reward of
    the transition's start, as planners that score state sequences use it)."""
    normalize_reward: bool = True
    """Regress the z-scored reward; False: the raw reward."""

    def validate(self) -> "RewardModelConfig":
        """Raise ValueError on inconsistent settings; return self."""
        if not self.hidden_sizes or any(int(h) < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers, got {self.hidden_sizes}")
        check_activation(self.activation)
        for name in ("learning_rate", "batch_size", "epochs", "normalizer_min_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        return self


class RewardModel(torch.nn.Module):
    """MLP ``r(state, action, next_state)`` (or ``r(state, action)``, see
    :attr:`RewardModelConfig.use_next_state`); an instance is a valid ``reward_fn``.

    Two ways to train: :meth:`fit` (epochs over a batch, normalisers refitted) and
    :meth:`update` (a number of gradient steps on random minibatches, normalisers fitted once,
    one optimiser across calls), for agents that learn as their replay buffer grows.
    """

    def __init__(self, state_dim: int, action_dim: int,
                 config: RewardModelConfig = RewardModelConfig(),
                 device: torch.device | str = "cpu", seed: int = 0) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.state_dim, self.action_dim = state_dim, action_dim
        self.device = torch.device(device)
        input_dim = (2 if config.use_next_state else 1) * state_dim + action_dim
        self.net = EnsembleMLP(1, input_dim, config.hidden_sizes, 1, config.activation,
                               self.device, torch.Generator().manual_seed(seed))
        self.input_normalizer = Normalizer(input_dim, config.normalizer_min_std, self.device)
        self.reward_normalizer = Normalizer(1, config.normalizer_min_std, self.device)
        self.fitted = False
        """Whether the normalisers hold data statistics (set by fit, update and load)."""
        self._optimizer: Optional[torch.optim.Optimizer] = None

    def _inputs(self, state: torch.Tensor, action: torch.Tensor,
                next_state: Optional[torch.Tensor]) -> torch.Tensor:
        if not self.config.use_next_state:
            return torch.cat([state, action], dim=-1)
        if next_state is None:
            raise ValueError("this RewardModel needs next_state (use_next_state is set)")
        return torch.cat([state, action, next_state], dim=-1)

    def _normalized(self, inputs: torch.Tensor) -> torch.Tensor:
        """Normalised reward ``[...]`` of raw inputs ``[..., input_dim]``."""
        flat = self.input_normalizer.normalize(inputs).reshape(1, -1, inputs.shape[-1])
        return self.net(flat)[0, :, 0].reshape(inputs.shape[:-1])

    def forward(self, state: torch.Tensor, action: torch.Tensor,
                next_state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``state [..., S]``, ``action [..., A]``, ``next_state [..., S]`` -> reward ``[...]``
        (``next_state`` is ignored unless ``use_next_state``). Gradients flow to the inputs
        that require them (a planner differentiating its cost), never to the model's weights
        otherwise."""
        args = [None if x is None else torch.as_tensor(x, dtype=torch.float32, device=self.device)
                for x in (state, action, next_state)]
        wanted = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in args)
        with torch.set_grad_enabled(wanted):
            normalized = self._normalized(self._inputs(*args))
            if not self.config.normalize_reward:
                return normalized
            return self.reward_normalizer.denormalize(normalized[..., None])[..., 0]

    def _training_data(self, batch: TransitionBatch, caller: str) -> Tuple[torch.Tensor, ...]:
        """``(inputs [N, D], reward [N, 1])`` of the finite rows of ``batch``."""
        if batch.reward is None:
            raise ValueError(f"RewardModel.{caller} needs transitions with rewards")
        finite = batch.finite_mask() & np.isfinite(batch.reward)
        if not finite.all():
            logger.warning("RewardModel.%s: dropped %d of %d non-finite transitions", caller,
                           int((~finite).sum()), len(batch))
            batch = batch[finite]
        if len(batch) == 0:
            raise ValueError(f"RewardModel.{caller} needs at least one finite transition")
        tensors = [torch.as_tensor(x, device=self.device)
                   for x in (batch.state, batch.action, batch.next_state)]
        reward = torch.as_tensor(batch.reward, device=self.device)[:, None]
        return self._inputs(*tensors), reward

    def _fit_normalizers(self, inputs: torch.Tensor, reward: torch.Tensor) -> None:
        self.input_normalizer.fit(inputs)
        if self.config.normalize_reward:
            self.reward_normalizer.fit(reward)
        self.fitted = True

    def _step(self, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
              target: torch.Tensor) -> float:
        loss = (self._normalized(inputs) - target).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def _adam(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.config.learning_rate,
                                weight_decay=self.config.weight_decay)

    def fit(self, batch: TransitionBatch, seed: int = 0) -> List[float]:
        """Regress ``batch.reward`` (MSE) for ``epochs`` passes, normalisers refitted on
        ``batch``; returns the mean (normalised) loss per epoch.

        Non-finite rows are dropped with a warning. Raises ValueError without rewards.
        """
        inputs, reward = self._training_data(batch, "fit")
        self._fit_normalizers(inputs, reward)
        target = self.reward_normalizer.normalize(reward)[:, 0]
        optimizer = self._adam()
        generator = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(self.config.epochs):
            order = torch.randperm(len(inputs), generator=generator).to(self.device)
            total, count = 0.0, 0
            for start in range(0, len(inputs), self.config.batch_size):
                rows = order[start:start + self.config.batch_size]
                total += self._step(optimizer, inputs[rows], target[rows]) * len(rows)
                count += len(rows)
            losses.append(total / count)
        return losses

    def update(self, batch: TransitionBatch, num_steps: int, seed: int = 0) -> float:
        """``num_steps`` Adam steps on minibatches of ``batch_size`` rows drawn from ``batch``
        with replacement; the normalisers are fitted at the first call only (or by
        :meth:`fit`), the optimiser state carries over between calls.

        Returns the mean (normalised) loss over the steps (NaN for 0 steps). Non-finite rows
        are dropped with a warning. Raises ValueError without rewards.
        """
        inputs, reward = self._training_data(batch, "update")
        if not self.fitted:
            self._fit_normalizers(inputs, reward)
        if self._optimizer is None:
            self._optimizer = self._adam()
        target = self.reward_normalizer.normalize(reward)[:, 0]
        generator = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(num_steps):
            rows = torch.randint(len(inputs), (self.config.batch_size,),
                                 generator=generator).to(self.device)
            losses.append(self._step(self._optimizer, inputs[rows], target[rows]))
        return float(np.mean(losses)) if losses else float("nan")

    def save(self, path: str, metadata: Optional[Mapping[str, Any]] = None) -> str:
        """Write a checkpoint; returns its sha256."""
        config: Dict[str, Any] = {k: (list(v) if isinstance(v, tuple) else v)
                                  for k, v in dataclasses.asdict(self.config).items()}
        header = {"config": config, "state_dim": self.state_dim, "action_dim": self.action_dim,
                  "fitted": self.fitted, "metadata": dict(metadata or {})}
        return save_checkpoint(path, type(self).__name__, dict(self.state_dict()), header)

    @classmethod
    def load(cls, path: str, expected_sha256: Optional[str] = None,
             device: Optional[torch.device | str] = None) -> "RewardModel":
        """Read a checkpoint written by :meth:`save`. Raises CheckpointError."""
        checkpoint = load_checkpoint(path, expected_sha256)
        header = checkpoint.require_class(cls.__name__)
        try:
            config = RewardModelConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                                          for k, v in header["config"].items()})
            model = cls(int(header["state_dim"]), int(header["action_dim"]), config,
                        device or "cpu")
            model.load_state_dict(checkpoint.tensors, strict=True)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{path} does not describe a valid RewardModel: {exc}") \
                from exc
        model.fitted = bool(header.get("fitted", True))
        return model
