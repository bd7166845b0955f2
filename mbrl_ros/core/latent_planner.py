"""MPPI in the latent space of a :class:`~mbrl_ros.core.latent_model.LatentWorldModel`
(TD-MPC2's planner).

Each step: encode the state; roll ``num_policy_trajectories`` sequences of the policy prior
out in latent space; then ``iterations`` times sample Gaussian sequences around the mean
(clamped to ``[-1, 1]``), score every sequence by its discounted predicted rewards plus the
discounted terminal Q (mean of two heads at the policy's action), keep the ``num_elites``
best and refit mean and std to them with MPPI weights (``mppi_update``; TD-MPC2's
``exp(temperature * (value - max))`` is MPPI's softmax with temperature ``1 / temperature``).
The action is the first step of an elite drawn by its weight. The mean, shifted by one step,
warm-starts the next call; :meth:`LatentPlanner.reset` forgets it (new episode).
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

from mbrl_ros.core.latent_config import LatentPlannerConfig
from mbrl_ros.core.latent_model import LatentWorldModel
from mbrl_ros.core.planning.mppi import mppi_update
from mbrl_ros.core.planning.sampling import shift_warm_start


class LatentPlanner:
    """Receding-horizon MPPI over a latent world model; ``plan(state)`` once per agent step."""

    def __init__(self, model: LatentWorldModel, config: LatentPlannerConfig, discount: float,
                 action_low: np.ndarray, action_high: np.ndarray) -> None:
        self.model, self.config = model, config.validate()
        self.discount = float(discount)
        device = model.device
        low = torch.as_tensor(np.asarray(action_low, np.float32), device=device)
        high = torch.as_tensor(np.asarray(action_high, np.float32), device=device)
        if low.shape != (model.action_dim,) or high.shape != low.shape:
            raise ValueError(f"action bounds must have shape ({model.action_dim},)")
        self.center, self.half = (high + low) / 2.0, (high - low) / 2.0
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.discounts = self.discount ** torch.arange(config.horizon + 1, device=device,
                                                       dtype=torch.float32)
        self.mean = torch.zeros(config.horizon, model.action_dim, device=device)
        self.warm = False

    def reset(self) -> None:
        """Forget the warm start (new episode)."""
        self.warm = False

    @torch.no_grad()
    def trajectory_values(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Discounted return of ``actions [N, H, A]`` from latents ``z [N, L]`` -> ``[N]``."""
        value = torch.zeros(actions.shape[0], device=z.device)
        for t in range(actions.shape[1]):
            value += self.discounts[t] * self.model.reward(z, actions[:, t])
            z = self.model.next(z, actions[:, t])
        final = self.model.pi(z, self.generator).action
        terminal = self.model.q(z, final, "avg", generator=self.generator)
        return value + self.discounts[actions.shape[1]] * terminal

    @torch.no_grad()
    def policy_actions(self, z: torch.Tensor) -> torch.Tensor:
        """Sequences of the policy prior from latent ``z [1, L]`` -> ``[P, H, A]``."""
        c = self.config
        current = z.expand(c.num_policy_trajectories, z.shape[-1])
        steps = []
        for t in range(c.horizon):
            steps.append(self.model.pi(current, self.generator).action)
            if t < c.horizon - 1:
                current = self.model.next(current, steps[-1])
        return torch.stack(steps, dim=1)

    @torch.no_grad()
    def plan_normalised(self, state: torch.Tensor) -> torch.Tensor:
        """First planned action ``[A]`` in ``[-1, 1]`` for ``state [S]``."""
        c, model = self.config, self.model
        z = model.encode(state.reshape(1, -1).to(self.center.device, torch.float32))
        num_prior = c.num_policy_trajectories
        candidates = torch.empty(c.num_samples, c.horizon, model.action_dim, device=z.device)
        if num_prior:
            candidates[:num_prior] = self.policy_actions(z)
        mean = torch.zeros_like(self.mean)
        if self.warm:
            shift_warm_start(self.mean, mean)
        std = torch.full_like(mean, c.max_std)
        latents = z.expand(c.num_samples, z.shape[-1])
        for _ in range(c.iterations):
            noise = torch.randn(c.num_samples - num_prior, *mean.shape,
                                generator=self.generator, device=z.device)
            candidates[num_prior:] = (mean + std * noise).clamp(-1.0, 1.0)
            values = torch.nan_to_num(self.trajectory_values(latents, candidates), nan=0.0)
            elite_values, elite = torch.topk(values, c.num_elites)
            mean, std = mppi_update(candidates[elite], -elite_values, 1.0 / c.temperature)
            std = std.clamp(c.min_std, c.max_std)
        weights = torch.softmax(c.temperature * (elite_values - elite_values.max()), dim=0)
        pick = torch.multinomial(weights, 1, generator=self.generator)
        self.mean.copy_(mean)
        self.warm = True
        return candidates[elite[pick[0]], 0]

    def plan(self, state: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
        """First planned action ``[A]`` in physical units for ``state [S]``."""
        action = self.plan_normalised(torch.as_tensor(state))
        return (self.center + self.half * action).cpu().numpy()
