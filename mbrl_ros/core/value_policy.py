"""Terminal value and policy prior for the planner (TD-MPC-like, on the real state space).

A batched ensemble of Q functions and a deterministic tanh-bounded policy are trained by TD
learning on real transitions mixed with short model rollouts (Dyna / MBPO style) through any
:class:`~mbrl_ros.core.dynamics_model.DynamicsModel` and a reward function
``reward_fn(state [N, S], action [N, A], next_state [N, S]) -> [N]``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from mbrl_ros.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mbrl_ros.core.ensemble_layers import EnsembleMLP, check_activation
from mbrl_ros.core.normalizer import Normalizer
from mbrl_ros.core.types import TransitionBatch

logger = logging.getLogger(__name__)

RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``reward_fn(state [N, S], action [N, A], next_state [N, S]) -> reward [N]``."""


@dataclass(frozen=True)
class ValuePolicyConfig:
    """Settings of a :class:`ValuePolicy` and its TD training."""

    num_q: int = 2
    """Q-ensemble members (batched)."""
    q_target_members: int = 2
    """Random members whose minimum forms the TD target (clipped double-Q / REDQ)."""
    hidden_sizes: Tuple[int, ...] = (256, 256)
    """Hidden layer widths of the Q networks and the policy."""
    activation: str = "silu"
    """Hidden activation: silu, relu, elu, gelu or tanh."""
    q_learning_rate: float = 3e-4
    """Adam learning rate of the Q ensemble."""
    policy_learning_rate: float = 3e-4
    """Adam learning rate of the policy."""
    discount: float = 0.99
    """Per-step discount factor."""
    target_tau: float = 0.01
    """EMA rate of the target Q networks per update."""
    batch_size: int = 256
    """Transitions per TD update (real + model)."""
    real_ratio: float = 0.5
    """Share of each batch from real data when model rollouts are used."""
    rollout_horizon: int = 1
    """Model-rollout length in steps (MBPO uses 1-5); 0 disables rollouts."""
    rollout_action_noise: float = 0.1
    """Gaussian exploration noise on rollout actions, as a fraction of the action half-range."""
    rollout_sample_noise: bool = True
    """Sample rollout next states from the member's Gaussian (else use its mean)."""
    value_aggregation: str = "mean"
    """How ``value`` combines Q members: mean or min."""
    max_grad_norm: float = 10.0
    """Gradient-norm clip of both optimisers."""
    normalizer_min_std: float = 1e-6
    """Features with a smaller std are treated as constant (std set to 1)."""

    def validate(self) -> None:
        """Raise ValueError on inconsistent settings."""
        if self.num_q < 1 or not 1 <= self.q_target_members <= self.num_q:
            raise ValueError(f"need num_q >= 1 and 1 <= q_target_members <= num_q, got "
                             f"{self.num_q}, {self.q_target_members}")
        if not self.hidden_sizes or any(int(h) < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers, got {self.hidden_sizes}")
        check_activation(self.activation)
        for name in ("q_learning_rate", "policy_learning_rate", "batch_size", "max_grad_norm",
                     "normalizer_min_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"discount must be in [0, 1), got {self.discount}")
        if not 0.0 < self.target_tau <= 1.0:
            raise ValueError(f"target_tau must be in (0, 1], got {self.target_tau}")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"real_ratio must be in [0, 1], got {self.real_ratio}")
        if self.rollout_horizon < 0 or self.rollout_action_noise < 0:
            raise ValueError("rollout_horizon and rollout_action_noise must be >= 0")
        if self.value_aggregation not in ("mean", "min"):
            raise ValueError(f"value_aggregation must be mean or min, "
                             f"got {self.value_aggregation!r}")

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly dict."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ValuePolicyConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ValuePolicyConfig keys: {sorted(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})


@dataclass
class ValueFitReport:
    """What one call of :meth:`ValuePolicy.fit` did."""

    steps: int = 0
    """Gradient updates made."""
    q_loss: List[float] = field(default_factory=list)
    """Per update: mean squared TD error over Q members."""
    policy_loss: List[float] = field(default_factory=list)
    """Per update: minus the mean Q value of the policy's actions."""
    model_transitions: int = 0
    """Model-rollout transitions used in total."""


class ValuePolicy(torch.nn.Module):
    """Q ensemble + deterministic policy over the real state space.

    Actions live in the box ``[action_low, action_high]``; the policy is ``tanh``-bounded to it.
    """

    def __init__(self, state_dim: int, action_dim: int, action_low: Sequence[float],
                 action_high: Sequence[float], config: ValuePolicyConfig = ValuePolicyConfig(),
                 device: torch.device | str = "cpu", seed: int = 0) -> None:
        super().__init__()
        config.validate()
        low = torch.as_tensor(action_low, dtype=torch.float32).reshape(-1)
        high = torch.as_tensor(action_high, dtype=torch.float32).reshape(-1)
        if len(low) != action_dim or len(high) != action_dim or not bool((high > low).all()):
            raise ValueError(f"action bounds must have {action_dim} entries with high > low")
        self.config = config
        self.state_dim, self.action_dim = state_dim, action_dim
        self.device = torch.device(device)
        generator = torch.Generator().manual_seed(seed)
        self.q = EnsembleMLP(config.num_q, state_dim + action_dim, config.hidden_sizes, 1,
                             config.activation, self.device, generator)
        self.actor = EnsembleMLP(1, state_dim, config.hidden_sizes, action_dim,
                                 config.activation, self.device, generator)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.state_normalizer = Normalizer(state_dim, config.normalizer_min_std, self.device)
        self.register_buffer("normalizer_fitted", torch.zeros((), dtype=torch.bool,
                                                              device=self.device))
        self.register_buffer("action_center", ((high + low) / 2).to(self.device))
        self.register_buffer("action_half_range", ((high - low) / 2).to(self.device))
        self.q_optimizer = torch.optim.Adam(self.q.parameters(), lr=config.q_learning_rate)
        self.policy_optimizer = torch.optim.Adam(self.actor.parameters(),
                                                 lr=config.policy_learning_rate)

    # ------------------------------------------------------------------------ evaluation
    def _policy(self, state: torch.Tensor) -> torch.Tensor:
        """``[N, S] -> [N, A]`` with gradients."""
        normalized = self.state_normalizer.normalize(state).unsqueeze(0)
        return self.action_center + self.action_half_range * torch.tanh(self.actor(normalized)[0])

    def q_values(self, state: torch.Tensor, action: torch.Tensor,
                 target: bool = False) -> torch.Tensor:
        """``state [N, S]``, ``action [N, A]`` -> ``[num_q, N]`` (with gradients)."""
        scaled = (action - self.action_center) / self.action_half_range
        inputs = torch.cat([self.state_normalizer.normalize(state), scaled], dim=-1)
        network = self.q_target if target else self.q
        return network(inputs.unsqueeze(0).expand(self.config.num_q, -1, -1))[..., 0]

    def policy(self, state: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Policy prior ``state [..., S] -> action [..., A]`` within the action bounds."""
        state = torch.as_tensor(state, dtype=torch.float32, device=self.device)
        with torch.set_grad_enabled(grad):
            flat = self._policy(state.reshape(-1, self.state_dim))
        return flat.reshape(*state.shape[:-1], self.action_dim)

    def value(self, state: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Terminal value ``V(s) = agg_members Q(s, policy(s))``: ``[..., S] -> [...]``."""
        state = torch.as_tensor(state, dtype=torch.float32, device=self.device)
        with torch.set_grad_enabled(grad):
            flat = state.reshape(-1, self.state_dim)
            q = self.q_values(flat, self._policy(flat))
            agg = q.mean(0) if self.config.value_aggregation == "mean" else q.min(0).values
        return agg.reshape(state.shape[:-1])

    # ------------------------------------------------------------------------- training
    def _rollouts(self, start: torch.Tensor, model: Any, reward_fn: RewardFn,
                  generator: torch.Generator) -> Tuple[torch.Tensor, ...]:
        """Model rollouts from ``start [M, S]``; returns (s, a, r, s', done), ``H * M`` rows."""
        states, actions, rewards, next_states = [], [], [], []
        state = start
        rows = torch.arange(len(start), device=self.device)
        with torch.no_grad():
            for _ in range(self.config.rollout_horizon):
                noise = torch.randn(state.shape[0], self.action_dim, generator=generator)
                action = self._policy(state) + self.config.rollout_action_noise \
                    * self.action_half_range * noise.to(self.device)
                action = torch.maximum(torch.minimum(action, self.action_center
                                                     + self.action_half_range),
                                       self.action_center - self.action_half_range)
                mean, var = model.predict(state, action)
                member = torch.randint(mean.shape[0], (len(state),), generator=generator)
                next_state = mean[member.to(self.device), rows]
                if self.config.rollout_sample_noise:
                    eps = torch.randn(next_state.shape, generator=generator).to(self.device)
                    next_state = next_state + var[member.to(self.device), rows].sqrt() * eps
                reward = reward_fn(state, action, next_state).reshape(-1)
                states.append(state)
                actions.append(action)
                rewards.append(reward)
                next_states.append(next_state)
                state = next_state
        done = torch.zeros(len(start) * self.config.rollout_horizon, device=self.device)
        return (torch.cat(states), torch.cat(actions), torch.cat(rewards),
                torch.cat(next_states), done)

    def update(self, state: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
               next_state: torch.Tensor, done: torch.Tensor,
               generator: torch.Generator) -> Tuple[float, float]:
        """One TD update of the Q ensemble, one policy step and the target EMA.

        Args: ``state [N, S]``, ``action [N, A]``, ``reward [N]``, ``next_state [N, S]``,
        ``done [N]`` (1 where no bootstrapping). Returns ``(q_loss, policy_loss)``.
        """
        config = self.config
        with torch.no_grad():
            subset = torch.randperm(config.num_q, generator=generator)[:config.q_target_members]
            next_q = self.q_target_values(next_state)[subset.to(self.device)].min(0).values
            target = reward + config.discount * (1.0 - done) * next_q
        q_loss = (self.q_values(state, action) - target).square().mean()
        self.q_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.q.parameters(), config.max_grad_norm)
        self.q_optimizer.step()

        policy_loss = -self.q_values(state, self._policy(state)).mean()
        self.policy_optimizer.zero_grad(set_to_none=True)
        policy_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.actor.parameters(), config.max_grad_norm)
        self.policy_optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.q_target.parameters()), list(self.q.parameters()),
                                 config.target_tau)
        return float(q_loss.detach()), float(policy_loss.detach())

    def q_target_values(self, next_state: torch.Tensor) -> torch.Tensor:
        """Target-network ``Q'(s', policy(s'))``: ``[N, S] -> [num_q, N]``."""
        return self.q_values(next_state, self._policy(next_state), target=True)

    def fit(self, data: TransitionBatch, num_steps: int, model: Any = None,
            reward_fn: Optional[RewardFn] = None, seed: int = 0,
            progress: Optional[Callable[[int, Dict[str, float]], None]] = None
            ) -> ValueFitReport:
        """Run ``num_steps`` TD updates on ``data`` plus rollouts through ``model``.

        Args:
            data: real transitions; ``reward`` is used when present, else ``reward_fn``.
                ``terminal`` rows do not bootstrap. Non-finite rows are dropped (warning).
            num_steps: gradient updates.
            model: a DynamicsModel for rollouts (None: real data only).
            reward_fn: reward of model transitions (and of real ones without reward).
            seed: seeds sampling and rollout noise.
            progress: ``progress(step, {"q_loss", "policy_loss"})`` after every update.

        Raises:
            ValueError: no finite rows, or rewards unavailable.
        """
        config = self.config
        finite = data.finite_mask()
        if data.reward is not None:
            finite &= np.isfinite(data.reward)
        if not finite.all():
            logger.warning("ValuePolicy.fit: dropped %d of %d non-finite transitions",
                           int((~finite).sum()), len(data))
            data = data[finite]
        if len(data) == 0:
            raise ValueError("ValuePolicy.fit needs at least one finite transition")
        if data.reward is None and reward_fn is None:
            raise ValueError("transitions carry no reward: pass reward_fn")
        tensor = {name: torch.as_tensor(getattr(data, name), dtype=torch.float32,
                                        device=self.device)
                  for name in ("state", "action", "next_state")}
        if data.reward is not None:
            real_reward = torch.as_tensor(data.reward, device=self.device)
        else:
            with torch.no_grad():
                real_reward = reward_fn(tensor["state"], tensor["action"],
                                        tensor["next_state"]).reshape(-1).float()
        real_done = torch.as_tensor(data.terminal if data.terminal is not None
                                    else np.zeros(len(data)), dtype=torch.float32,
                                    device=self.device)
        if not bool(self.normalizer_fitted):
            self.state_normalizer.fit(tensor["state"])
            self.normalizer_fitted.fill_(True)
        use_model = model is not None and reward_fn is not None and config.rollout_horizon > 0
        num_real = round(config.batch_size * config.real_ratio) if use_model \
            else config.batch_size
        num_model = config.batch_size - num_real
        num_starts = math.ceil(num_model / config.rollout_horizon) if use_model else 0
        generator = torch.Generator().manual_seed(seed)
        report = ValueFitReport()
        for step in range(1, num_steps + 1):
            rows = torch.randint(len(data), (num_real,), generator=generator).to(self.device)
            parts = [(tensor["state"][rows], tensor["action"][rows], real_reward[rows],
                      tensor["next_state"][rows], real_done[rows])]
            if num_model > 0:
                starts = torch.randint(len(data), (num_starts,), generator=generator)
                rollout = self._rollouts(tensor["state"][starts.to(self.device)], model,
                                         reward_fn, generator)
                parts.append(tuple(x[:num_model] for x in rollout))
                report.model_transitions += num_model
            batch = [torch.cat(columns) for columns in zip(*parts)]
            q_loss, policy_loss = self.update(*batch, generator=generator)
            report.q_loss.append(q_loss)
            report.policy_loss.append(policy_loss)
            report.steps = step
            if progress is not None:
                progress(step, {"q_loss": q_loss, "policy_loss": policy_loss})
        return report

    # ----------------------------------------------------------------------- checkpoints
    def save(self, path: str, metadata: Optional[Mapping[str, Any]] = None) -> str:
        """Write the networks (not optimiser state) to a checkpoint; returns its sha256."""
        header = {"config": self.config.to_dict(), "state_dim": self.state_dim,
                  "action_dim": self.action_dim,
                  "action_low": (self.action_center - self.action_half_range).tolist(),
                  "action_high": (self.action_center + self.action_half_range).tolist(),
                  "metadata": dict(metadata or {})}
        return save_checkpoint(path, type(self).__name__, dict(self.state_dict()), header)

    @classmethod
    def load(cls, path: str, expected_sha256: Optional[str] = None,
             device: Optional[torch.device | str] = None) -> "ValuePolicy":
        """Read a checkpoint written by :meth:`save`. Raises CheckpointError."""
        checkpoint = load_checkpoint(path, expected_sha256)
        header = checkpoint.require_class(cls.__name__)
        try:
            model = cls(int(header["state_dim"]), int(header["action_dim"]),
                        header["action_low"], header["action_high"],
                        ValuePolicyConfig.from_dict(header["config"]), device or "cpu")
            model.load_state_dict(checkpoint.tensors, strict=True)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{path} does not describe a valid ValuePolicy: {exc}") \
                from exc
        return model
