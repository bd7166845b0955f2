"""The pieces every dm_control benchmark agent shares: the loop schedule and the default
agent (dynamics ensemble + learned reward + value / policy prior + planner).

An agent, whatever its kind, provides what :func:`bench.dmc.run` calls: ``replay``
(a :class:`~mbrl_ros.core.replay_buffer.ReplayBuffer` the loop fills), ``trained`` (False until
its first model fit; the loop acts uniformly at random until then), ``act(state) -> action``,
``reset()`` (new episode), ``fit_models()`` (every ``model_every`` environment steps) and
``train_heads(agent_steps) -> (reward_loss, q_loss)`` (every ``train_every``). Every kind is
built by ``Kind(env, loop, ensemble_config, planner_config, value_config, reward_config,
device, seed)`` and may ignore the configs it has no use for.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from bench.dmc_env import DMCEnv
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.model_training import fit_dynamics
from mbrl_ros.core.planning import Planner, PlannerConfig
from mbrl_ros.core.replay_buffer import ReplayBuffer, ReplayBufferConfig
from mbrl_ros.core.reward_model import RewardModel, RewardModelConfig
from mbrl_ros.core.value_policy import ValuePolicy, ValuePolicyConfig

logger = logging.getLogger("bench.dmc")


@dataclass(frozen=True)
class LoopConfig:
    """Schedule of the collect / train / plan loop (all counts in environment steps)."""

    total_steps: int = 20000
    """Environment steps of training (after action repeat)."""
    seed_steps: int = 1000
    """Initial environment steps with uniform random actions."""
    model_every: int = 1000
    """Refit the dynamics ensemble every this many environment steps."""
    model_epochs: int = 40
    """Maximum epochs per dynamics refit (warm start, early stopping)."""
    train_every: int = 200
    """Update reward model and value / policy every this many environment steps."""
    updates_per_agent_step: float = 1.0
    """Value / policy TD updates per agent step (update-to-data ratio)."""
    reward_updates_per_agent_step: float = 1.0
    """Reward-model gradient steps per agent step."""
    exploration_std: float = 0.3
    """Std of the Gaussian noise on planned actions while collecting (half-range units)."""
    eval_every: int = 2000
    """Evaluate every this many environment steps (and at step 0)."""
    eval_episodes: int = 2
    """Noise-free episodes per evaluation."""
    reward_scale: float = 0.0
    """Multiplier of environment rewards for learning (0: 1 / action_repeat, i.e. per
    simulator step, so returns stay in [0, episode_length])."""

    def validate(self) -> "LoopConfig":
        """Raise ValueError on an unusable schedule; return self."""
        for name in ("total_steps", "model_every", "model_epochs", "train_every",
                     "eval_every", "eval_episodes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("seed_steps", "updates_per_agent_step", "reward_updates_per_agent_step",
                     "exploration_std", "reward_scale"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        return self


def benchmark_reward_config(**settings) -> RewardModelConfig:
    """The reward model of this benchmark, ``settings`` on top: ``r(state, action)``, as the
    planner scores the states it visits, regressed on the raw reward and trained by
    :meth:`~mbrl_ros.core.reward_model.RewardModel.update` as the replay buffer grows (the
    settings of the curves in docs/benchmarks.md)."""
    return RewardModelConfig(**{"use_next_state": False, "normalize_reward": False, **settings})


class Agent:
    """Dynamics ensemble + reward model + value / policy + planner, trained from a replay
    buffer."""

    def __init__(self, env: DMCEnv, loop: LoopConfig, ensemble_config: EnsembleConfig,
                 planner_config: PlannerConfig, value_config: ValuePolicyConfig,
                 reward_config: RewardModelConfig, device: torch.device, seed: int) -> None:
        state_dim, action_dim = env.state_dim, env.action_dim
        self.loop, self.seed, self.device = loop, seed, device
        self.ensemble_config = ensemble_config
        self.dynamics = self.make_dynamics(state_dim, action_dim, ensemble_config, device, seed)
        self.reward = RewardModel(state_dim, action_dim, reward_config, device, seed=seed + 1)
        self.value_policy = self.make_value_policy(env, value_config, device, seed + 2)
        self.replay = ReplayBuffer(state_dim, action_dim,
                                   ReplayBufferConfig(capacity=max(loop.total_steps, 1)))
        self.discount = value_config.discount
        self.planner = Planner(self.dynamics, planner_config, cost_fn=self.plan_cost,
                               value=None, policy=None, device=device)
        self.trained = False
        self.fit_count = 0

    def make_dynamics(self, state_dim: int, action_dim: int, ensemble_config: EnsembleConfig,
                      device: torch.device, seed: int):
        """The dynamics model the planner plans with (kinds override it)."""
        return ProbabilisticEnsemble(state_dim, action_dim, ensemble_config, device, seed=seed)

    def make_value_policy(self, env: DMCEnv, value_config: ValuePolicyConfig,
                          device: torch.device, seed: int) -> Optional[ValuePolicy]:
        """The Q ensemble / policy prior (None: the kind has none)."""
        return ValuePolicy(env.state_dim, env.action_dim, env.action_low, env.action_high,
                           value_config, device, seed=seed)

    # ----------------------------------------------------------------------- planning terms
    def plan_cost(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Minus the discounted predicted reward: ``states [N, H+1, S]``, ``actions [N, H, A]``
        -> ``[N]``."""
        horizon = actions.shape[1]
        rewards = self.reward(states[:, :-1], actions, states[:, 1:])  # [N, H]
        discounts = self.discount ** torch.arange(horizon, device=rewards.device,
                                                  dtype=rewards.dtype)
        return -(rewards * discounts).sum(dim=1)

    def reward_fn(self, state: torch.Tensor, action: torch.Tensor,
                  next_state: torch.Tensor) -> torch.Tensor:
        """Learned reward for model rollouts: ``[N, S], [N, A], [N, S] -> [N]``."""
        return self.reward(state, action, next_state)

    def act(self, state: np.ndarray) -> np.ndarray:
        """Planned action ``[A]`` (physical units) for ``state [S]``."""
        return self.planner.plan(state).action.cpu().numpy()

    def reset(self) -> None:
        """A new episode: the planner forgets its warm start."""
        self.planner.reset()

    # ----------------------------------------------------------------------------- training
    def fit_models(self) -> None:
        """Refit the dynamics ensemble on the whole replay buffer (warm start)."""
        data = self.replay.all()
        config = dataclasses.replace(self.ensemble_config, max_epochs=self.loop.model_epochs)
        report = fit_dynamics(self.dynamics, data, config=config,
                              seed=self.seed * 1000 + self.fit_count)
        self.fit_count += 1
        logger.info("dynamics refit on %d transitions: %d epochs, val mse %.4g", len(data),
                    report.epochs_run, report.best_val_mse)
        if not self.trained:
            self.planner.set_models(value=self.value_policy.value,
                                    policy=self.value_policy.policy)
            self.trained = True

    def train_heads(self, agent_steps: int) -> Tuple[float, float]:
        """Reward-model and TD updates for ``agent_steps`` new agent steps; returns losses."""
        data = self.replay.all()
        reward_steps = max(1, round(agent_steps * self.loop.reward_updates_per_agent_step))
        reward_loss = self.reward.update(data, reward_steps, seed=self.seed + len(data))
        value_steps = max(1, round(agent_steps * self.loop.updates_per_agent_step))
        report = self.value_policy.fit(data, value_steps, model=self.dynamics,
                                       reward_fn=self.reward_fn, seed=self.seed + len(data))
        return reward_loss, float(np.mean(report.q_loss))
