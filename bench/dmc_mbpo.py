"""MBPO agent for the dm_control benchmark (Janner et al. 2019): SAC trained on real
transitions plus short rollouts of the learned dynamics ensemble, acting with its policy.

The dynamics ensemble, the learned reward head and their fitting are the default agent's
(:class:`bench.dmc_agent.Agent`); the SAC policy and Q ensemble are
:class:`~mbrl_ros.core.value_policy.ValuePolicy` with ``policy_kind="sac"``, MBPO's growing
rollout horizon and its model buffer (:class:`MBPOSettings`). ``bench.dmc --agent mbpo``.

Acting: while collecting, a sample of the policy (the loop adds its ``--exploration-std``
noise on top); while evaluating, the policy's mean action. The loop calls ``act(state)`` for
both, so the agent tells them apart by the state: a collected episode's states are the next
states of the transitions the loop has just stored (or the first state after it ended an
episode); an evaluation episode's are not.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from bench.dmc_agent import Agent, LoopConfig
from bench.dmc_env import DMCEnv
from mbrl_ros.core.ensemble import EnsembleConfig
from mbrl_ros.core.planning import PlannerConfig
from mbrl_ros.core.replay_buffer import ReplayBuffer
from mbrl_ros.core.reward_model import RewardModelConfig
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.core.value_policy import ValuePolicyConfig

logger = logging.getLogger("bench.dmc")

SAMPLER_SEED_OFFSET = 3
"""Seed of the action sampler: the agent's seed plus this (the models use + 0, 1, 2)."""


@dataclass(frozen=True)
class MBPOSettings:
    """MBPO's schedule on top of the benchmark's value / policy settings (counts of real
    transitions are agent steps)."""

    updates_per_agent_step: float = 10.0
    """SAC updates per agent step (MBPO: 20; halved for a CPU)."""
    real_ratio: float = 0.05
    """Share of real transitions in each SAC batch (MBPO: 0.05)."""
    rollout_horizon_max: int = 5
    """Rollout length reached at ``rollout_schedule_end`` (from ``--dyna-horizon``, 1)."""
    rollout_schedule_start: int = 250
    """Real transitions at which the rollout length starts to grow (2000 env steps at action
    repeat 8)."""
    rollout_schedule_end: int = 1000
    """Real transitions at which it reaches ``rollout_horizon_max`` (8000 env steps)."""
    model_buffer_size: int = 100_000
    """Model transitions kept (about one episode's worth of rollouts, MBPO's retain 1)."""
    model_rollouts_per_update: float = 20.0
    """Rollout start states per SAC update (MBPO: 400 per env step at 20 updates)."""

    def validate(self) -> "MBPOSettings":
        """Raise ValueError on an unusable setting; return self."""
        if not self.updates_per_agent_step > 0:
            raise ValueError(f"updates_per_agent_step must be positive, "
                             f"got {self.updates_per_agent_step}")
        self.value_config(ValuePolicyConfig()).validate()
        return self

    def value_config(self, base: ValuePolicyConfig) -> ValuePolicyConfig:
        """``base`` (networks, discount, first rollout length) as MBPO's SAC."""
        return dataclasses.replace(
            base, policy_kind="sac", behaviour_cloning_weight=0.0, real_ratio=self.real_ratio,
            rollout_horizon=max(base.rollout_horizon, 1),
            rollout_horizon_max=max(self.rollout_horizon_max, base.rollout_horizon, 1),
            rollout_schedule_start=self.rollout_schedule_start,
            rollout_schedule_end=self.rollout_schedule_end,
            model_buffer_size=self.model_buffer_size,
            model_rollouts_per_update=self.model_rollouts_per_update)


class _TrackingReplay(ReplayBuffer):
    """A replay buffer that remembers the next state of the last transition added."""

    last_next_state: Optional[np.ndarray] = None

    def add(self, batch: TransitionBatch) -> int:
        stored = super().add(batch)
        if len(batch):
            self.last_next_state = np.array(batch.next_state[-1], dtype=np.float32)
        return stored


class MBPOAgent(Agent):
    """Dynamics ensemble + reward head (the default agent's) + SAC trained MBPO style; acts
    with the SAC policy (no planning)."""

    def __init__(self, env: DMCEnv, loop: LoopConfig, ensemble_config: EnsembleConfig,
                 planner_config: PlannerConfig, value_config: ValuePolicyConfig,
                 reward_config: RewardModelConfig, device: torch.device, seed: int,
                 settings: MBPOSettings = MBPOSettings()) -> None:
        settings.validate()
        self.settings = settings
        loop = dataclasses.replace(loop, updates_per_agent_step=settings.updates_per_agent_step)
        super().__init__(env, loop, ensemble_config, planner_config,
                         settings.value_config(value_config), reward_config, device, seed)
        self.replay = _TrackingReplay(env.state_dim, env.action_dim, self.replay.config)
        self.sampler = torch.Generator().manual_seed(seed + SAMPLER_SEED_OFFSET)
        self._episode_start = False
        self._reset_episode = self.replay.current_episode

    def collecting(self, state: np.ndarray) -> bool:
        """Whether ``state`` continues the collected data (explore) rather than an
        evaluation episode: the first state after the loop ended an episode, or the next
        state of the transition it stored last."""
        if self._episode_start:
            self._episode_start = False
            return True
        last = self.replay.last_next_state
        return last is not None and np.array_equal(np.asarray(state, np.float32), last)

    def act(self, state: np.ndarray) -> np.ndarray:
        """A sampled action while collecting, the policy's mean while evaluating: ``[A]``."""
        explore = self.collecting(state)
        tensor = torch.as_tensor(state, dtype=torch.float32, device=self.device)
        if explore:
            action = self.value_policy.sample_policy(tensor, generator=self.sampler)
        else:
            action = self.value_policy.policy(tensor)
        return action.cpu().numpy()

    def reset(self) -> None:
        """A new episode: a collected one when the loop has just ended one in the replay
        buffer, else an evaluation episode."""
        super().reset()
        episode = self.replay.current_episode
        self._episode_start = episode != self._reset_episode
        self._reset_episode = episode

    def train_heads(self, agent_steps: int) -> Tuple[float, float]:
        """The default agent's reward-head and value / policy updates (SAC, MBPO's count)."""
        losses = super().train_heads(agent_steps)
        config = self.value_policy.config
        logger.debug("SAC: temperature %.3g, entropy %.3g, rollout horizon %d",
                     float(self.value_policy.temperature), self.value_policy.last_entropy,
                     config.rollout_horizon_at(len(self.replay)))
        return losses
