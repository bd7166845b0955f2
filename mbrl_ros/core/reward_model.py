"""Learned reward head for benchmark tasks whose reward is not closed-form."""

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

    def validate(self) -> None:
        """Raise ValueError on inconsistent settings."""
        if not self.hidden_sizes or any(int(h) < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers, got {self.hidden_sizes}")
        check_activation(self.activation)
        for name in ("learning_rate", "batch_size", "epochs", "normalizer_min_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


class RewardModel(torch.nn.Module):
    """MLP ``r(state, action, next_state)``; an instance is a valid ``reward_fn``."""

    def __init__(self, state_dim: int, action_dim: int,
                 config: RewardModelConfig = RewardModelConfig(),
                 device: torch.device | str = "cpu", seed: int = 0) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.state_dim, self.action_dim = state_dim, action_dim
        self.device = torch.device(device)
        input_dim = 2 * state_dim + action_dim
        self.net = EnsembleMLP(1, input_dim, config.hidden_sizes, 1, config.activation,
                               self.device, torch.Generator().manual_seed(seed))
        self.input_normalizer = Normalizer(input_dim, config.normalizer_min_std, self.device)
        self.reward_normalizer = Normalizer(1, config.normalizer_min_std, self.device)

    def _normalized(self, state: torch.Tensor, action: torch.Tensor,
                    next_state: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([state, action, next_state], dim=-1)
        return self.net(self.input_normalizer.normalize(inputs).unsqueeze(0))[0, :, 0]

    def forward(self, state: torch.Tensor, action: torch.Tensor,
                next_state: torch.Tensor) -> torch.Tensor:
        """``state [N, S]``, ``action [N, A]``, ``next_state [N, S]`` -> reward ``[N]``."""
        with torch.no_grad():
            args = [torch.as_tensor(x, dtype=torch.float32, device=self.device)
                    for x in (state, action, next_state)]
            normalized = self._normalized(*args)
            return self.reward_normalizer.denormalize(normalized[:, None])[:, 0]

    def fit(self, batch: TransitionBatch, seed: int = 0) -> List[float]:
        """Regress ``batch.reward`` (MSE); returns the mean normalised loss per epoch.

        Non-finite rows are dropped with a warning. Raises ValueError without rewards.
        """
        if batch.reward is None:
            raise ValueError("RewardModel.fit needs transitions with rewards")
        finite = batch.finite_mask() & np.isfinite(batch.reward)
        if not finite.all():
            logger.warning("RewardModel.fit: dropped %d of %d non-finite transitions",
                           int((~finite).sum()), len(batch))
            batch = batch[finite]
        if len(batch) == 0:
            raise ValueError("RewardModel.fit needs at least one finite transition")
        tensors = [torch.as_tensor(x, device=self.device)
                   for x in (batch.state, batch.action, batch.next_state)]
        reward = torch.as_tensor(batch.reward, device=self.device)[:, None]
        self.input_normalizer.fit(torch.cat(tensors, dim=-1))
        self.reward_normalizer.fit(reward)
        target = self.reward_normalizer.normalize(reward)[:, 0]
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.learning_rate,
                                     weight_decay=self.config.weight_decay)
        generator = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(self.config.epochs):
            order = torch.randperm(len(batch), generator=generator).to(self.device)
            total, count = 0.0, 0
            for start in range(0, len(batch), self.config.batch_size):
                rows = order[start:start + self.config.batch_size]
                loss = (self._normalized(*(t[rows] for t in tensors)) - target[rows]) \
                    .square().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(rows)
                count += len(rows)
            losses.append(total / count)
        return losses

    def save(self, path: str, metadata: Optional[Mapping[str, Any]] = None) -> str:
        """Write a checkpoint; returns its sha256."""
        config: Dict[str, Any] = {k: (list(v) if isinstance(v, tuple) else v)
                                  for k, v in dataclasses.asdict(self.config).items()}
        header = {"config": config, "state_dim": self.state_dim, "action_dim": self.action_dim,
                  "metadata": dict(metadata or {})}
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
        return model
