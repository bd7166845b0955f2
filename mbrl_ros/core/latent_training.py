"""Joint training of the latent world model on sub-trajectories, as TD-MPC2 does.

One :meth:`LatentTrainer.update` on a batch of sub-trajectories ``s_0..s_H, a_0..a_{H-1},
r_0..r_{H-1}``:

1. targets, without gradients: ``z*_{t+1} = encode(s_{t+1})`` and the TD targets
   ``r_t + discount * min(Q_target_i, Q_target_j)(z*_{t+1}, pi(z*_{t+1}))`` (two of the EMA
   target heads drawn at random);
2. a latent rollout ``z_0 = encode(s_0)``, ``z_{t+1} = next(z_t, a_t)``, and the losses,
   step ``t`` weighed by ``rho^t``: latent consistency ``|z_{t+1} - z*_{t+1}|^2``, reward and
   value (two-hot cross-entropy of ``reward(z_t, a_t)`` and of every Q head at
   ``(z_t, a_t)``); one Adam step on their weighted sum (the encoder at a smaller rate);
3. the policy prior on the (detached) rollout latents: maximise the mean of two Q heads
   (divided by a running scale) plus ``entropy_coef`` times its entropy per action dimension;
4. the EMA step of the target Q heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from mbrl_ros.core.latent_layers import RunningScale
from mbrl_ros.core.latent_model import LatentWorldModel
from mbrl_ros.core.types import TransitionBatch

POLICY_ADAM_EPS = 1e-5
"""Adam epsilon of the policy optimiser (TD-MPC2)."""


@dataclass
class SequenceBatch:
    """Sub-trajectories, time first: ``states [H+1, B, S]``, normalised ``actions [H, B, A]``,
    ``rewards [H, B]``."""

    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor


class SequenceSampler:
    """Draws length-``horizon`` windows of consecutive transitions of one episode from a
    chronological :class:`TransitionBatch` (e.g. ``ReplayBuffer.all()``), with actions mapped
    from ``[action_low, action_high]`` to ``[-1, 1]``."""

    def __init__(self, data: TransitionBatch, horizon: int, action_low: np.ndarray,
                 action_high: np.ndarray, device: torch.device | str = "cpu") -> None:
        if data.reward is None:
            raise ValueError("the latent model needs rewards in the transitions")
        n = len(data)
        episode = np.zeros(n, np.int64) if data.episode is None else data.episode
        if n < horizon:
            self.starts = np.zeros(0, np.int64)
        else:
            first, last = episode[:n - horizon + 1], episode[horizon - 1:]
            self.starts = np.flatnonzero(first == last)
        if not len(self.starts):
            raise ValueError(f"no window of {horizon} consecutive transitions in one episode")
        low = np.asarray(action_low, np.float32)
        half = (np.asarray(action_high, np.float32) - low) / 2.0
        actions = (data.action - low - half) / half
        self.horizon = horizon
        self.state = torch.as_tensor(data.state, dtype=torch.float32, device=device)
        self.next_state = torch.as_tensor(data.next_state, dtype=torch.float32, device=device)
        self.action = torch.as_tensor(actions, dtype=torch.float32, device=device)
        self.reward = torch.as_tensor(data.reward, dtype=torch.float32, device=device)

    def __len__(self) -> int:
        return len(self.starts)

    def sample(self, batch_size: int, rng: np.random.Generator) -> SequenceBatch:
        """``batch_size`` windows drawn uniformly with replacement."""
        starts = self.starts[rng.integers(0, len(self.starts), size=batch_size)]
        index = torch.as_tensor(starts[None, :] + np.arange(self.horizon)[:, None],
                                device=self.state.device)  # [H, B]
        states = torch.cat([self.state[index[:1]], self.next_state[index]], dim=0)
        return SequenceBatch(states, self.action[index], self.reward[index])


@dataclass
class LatentUpdateReport:
    """Losses of one update (means over batch and horizon)."""

    consistency: float
    reward: float
    value: float
    policy: float


class LatentTrainer:
    """Optimisers and the update of a :class:`LatentWorldModel` (see the module docstring)."""

    def __init__(self, model: LatentWorldModel, discount: float, seed: int = 0) -> None:
        if not 0.0 <= discount < 1.0:
            raise ValueError(f"discount must be in [0, 1), got {discount}")
        self.model, self.discount = model, float(discount)
        c = model.config
        self.optimizer = torch.optim.Adam([
            {"params": model.encoder.parameters(), "lr": c.learning_rate * c.encoder_lr_scale},
            {"params": [*model.dynamics.parameters(), *model.reward_head.parameters(),
                        *model.qs.parameters()]},
        ], lr=c.learning_rate)
        self.policy_optimizer = torch.optim.Adam(model.policy.parameters(), lr=c.learning_rate,
                                                 eps=POLICY_ADAM_EPS)
        self.scale = RunningScale(c.tau).to(model.device)
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        rho = torch.tensor(c.rho, device=model.device)
        self.weights = rho ** torch.arange(c.horizon + 1, device=model.device)
        self.updates = 0

    @torch.no_grad()
    def td_targets(self, next_z: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """``r + discount * min of two target Qs at (z', pi(z'))``: ``[H, B, L], [H, B]``."""
        action = self.model.pi(next_z, self.generator).action
        return rewards + self.discount * self.model.q(next_z, action, "min", target=True,
                                                      generator=self.generator)

    def update(self, batch: SequenceBatch) -> LatentUpdateReport:
        """One joint model step, one policy step and one EMA step."""
        model, c = self.model, self.model.config
        horizon = batch.actions.shape[0]
        weights = self.weights[:horizon]
        with torch.no_grad():
            next_z = model.encode(batch.states[1:])
            targets = self.td_targets(next_z, batch.rewards)
        model.train()
        z = model.encode(batch.states[0])
        latents = [z]
        for t in range(horizon):
            latents.append(model.next(latents[-1], batch.actions[t]))
        zs = torch.stack(latents)  # [H+1, B, L]
        consistency = F.mse_loss(zs[1:], next_z, reduction="none").mean(dim=(1, 2))
        reward = model.two_hot.loss(model.reward_logits(zs[:-1], batch.actions),
                                    batch.rewards).mean(dim=1)
        q_logits = model.q_logits(zs[:-1], batch.actions)  # [E, H, B, bins]
        value = model.two_hot.loss(q_logits, targets.expand(c.num_q, *targets.shape))
        value = value.mean(dim=(0, 2))
        losses = [(loss * weights).sum() / horizon for loss in (consistency, reward, value)]
        total = (c.consistency_coef * losses[0] + c.reward_coef * losses[1]
                 + c.value_coef * losses[2])
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups
                                        for p in g["params"]], c.grad_clip_norm)
        self.optimizer.step()
        policy_loss = self.update_policy(zs.detach())
        model.soft_update_targets()
        model.eval()
        self.updates += 1
        return LatentUpdateReport(*(float(v.detach()) for v in losses), policy=policy_loss)

    def update_policy(self, zs: torch.Tensor) -> float:
        """One step of the policy prior on latents ``[H+1, B, L]``; returns its loss."""
        model, c = self.model, self.model.config
        sample = model.pi(zs, self.generator)
        q = model.q(zs, sample.action, "avg", generator=self.generator)  # [H+1, B]
        self.scale.update(q[0])
        entropy = -sample.log_prob * model.action_dim
        per_step = -(c.entropy_coef * entropy + self.scale(q)).mean(dim=1)
        loss = (per_step * self.weights[:zs.shape[0]]).mean()
        params = list(model.policy.parameters())
        grads = torch.autograd.grad(loss, params)  # the Q heads get no gradient
        for param, grad in zip(params, grads):
            param.grad = grad
        torch.nn.utils.clip_grad_norm_(params, c.grad_clip_norm)
        self.policy_optimizer.step()
        self.policy_optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def fit(self, sampler: SequenceSampler, steps: int, rng: np.random.Generator,
            batch_size: Optional[int] = None) -> LatentUpdateReport:
        """``steps`` updates on batches from ``sampler``; returns the mean losses."""
        batch_size = batch_size or self.model.config.batch_size
        reports = [self.update(sampler.sample(batch_size, rng)) for _ in range(steps)]
        return LatentUpdateReport(*(float(np.mean([getattr(r, f) for r in reports]))
                                    for f in ("consistency", "reward", "value", "policy")))
