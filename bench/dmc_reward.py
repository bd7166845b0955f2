"""Learned reward head ``(state, action) -> reward`` for the dm_control benchmark.

Bench-local adapter: ``mbrl_ros.core.value_policy`` has no ``RewardModel`` yet; when it lands
this module should be replaced by it. An MLP (one-member :class:`EnsembleMLP`) on z-scored
states and actions scaled to [-1, 1], trained by MSE on replay transitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch

from mbrl_ros.core.ensemble_layers import EnsembleMLP, check_activation
from mbrl_ros.core.normalizer import Normalizer
from mbrl_ros.core.types import TransitionBatch


@dataclass(frozen=True)
class RewardHeadConfig:
    """Settings of :class:`RewardHead`."""

    hidden_sizes: Tuple[int, ...] = (128, 128)
    """Hidden layer widths."""
    activation: str = "silu"
    """Hidden activation (see mbrl_ros.core.ensemble_layers.ACTIVATIONS)."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 256
    """Transitions per gradient step."""
    normalizer_min_std: float = 1e-6
    """Features with a smaller std are only centred."""

    def validate(self) -> "RewardHeadConfig":
        """Raise ValueError on an unusable setting; return self."""
        if not self.hidden_sizes or any(int(h) < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers, got {self.hidden_sizes}")
        check_activation(self.activation)
        for name in ("learning_rate", "batch_size", "normalizer_min_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        return self


class RewardHead(torch.nn.Module):
    """Reward regression ``r(state, action)``; the state normaliser is fitted at the first fit."""

    def __init__(self, state_dim: int, action_dim: int, config: RewardHeadConfig,
                 device: torch.device | str = "cpu", seed: int = 0) -> None:
        super().__init__()
        self.config = config.validate()
        self.state_dim, self.action_dim = state_dim, action_dim
        self.device = torch.device(device)
        generator = torch.Generator().manual_seed(seed)
        self.net = EnsembleMLP(1, state_dim + action_dim, config.hidden_sizes, 1,
                               config.activation, self.device, generator)
        self.state_normalizer = Normalizer(state_dim, config.normalizer_min_std, self.device)
        self.action_normalizer = Normalizer(action_dim, config.normalizer_min_std, self.device)
        self.fitted = False
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.learning_rate)

    def _forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([self.state_normalizer.normalize(state),
                            self.action_normalizer.normalize(action)], dim=-1)
        flat = inputs.reshape(1, -1, inputs.shape[-1])
        return self.net(flat)[0, :, 0].reshape(inputs.shape[:-1])

    def predict(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``state [..., S]``, ``action [..., A]`` -> reward ``[...]`` (no gradients)."""
        with torch.no_grad():
            return self._forward(state.float(), action.float())

    def fit(self, data: TransitionBatch, num_steps: int, seed: int = 0) -> float:
        """``num_steps`` Adam steps on minibatches of ``data`` (needs rewards).

        Returns the mean MSE over the steps. Raises ValueError without rewards or rows.
        """
        if data.reward is None or len(data) == 0:
            raise ValueError("RewardHead.fit needs transitions with rewards")
        keep = data.finite_mask() & np.isfinite(data.reward)
        data = data[keep]
        state = torch.as_tensor(data.state, device=self.device)
        action = torch.as_tensor(data.action, device=self.device)
        reward = torch.as_tensor(data.reward, device=self.device)
        if not self.fitted:
            self.state_normalizer.fit(state)
            self.action_normalizer.fit(action)
            self.fitted = True
        generator = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(num_steps):
            rows = torch.randint(len(data), (self.config.batch_size,),
                                 generator=generator).to(self.device)
            loss = (self._forward(state[rows], action[rows]) - reward[rows]).square().mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        return float(np.mean(losses)) if losses else float("nan")
