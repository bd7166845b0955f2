"""The ``tdmpc2`` agent of the dm_control benchmark: a TD-MPC2-style latent world model
(:mod:`mbrl_ros.core.latent_model`) trained jointly on sub-trajectories and MPPI in its latent
space (:mod:`mbrl_ros.core.latent_planner`).

It follows the agent protocol of :mod:`bench.dmc_agent` and ignores the explicit-state
configs it is handed (ensemble, planner, value, reward), except the planner's seed; its own
settings are :data:`BENCH_MODEL_CONFIG` and :data:`BENCH_PLANNER_CONFIG`. The discount is
TD-MPC2's heuristic of the episode length in agent steps (0.98 for 250 steps).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Tuple

import numpy as np
import torch

from bench.dmc_agent import LoopConfig
from bench.dmc_env import DMCEnv
from mbrl_ros.core.ensemble import EnsembleConfig
from mbrl_ros.core.latent_config import (LatentModelConfig, LatentPlannerConfig,
                                         heuristic_discount)
from mbrl_ros.core.latent_model import LatentWorldModel
from mbrl_ros.core.latent_planner import LatentPlanner
from mbrl_ros.core.latent_training import LatentTrainer, SequenceSampler
from mbrl_ros.core.planning import PlannerConfig
from mbrl_ros.core.replay_buffer import ReplayBuffer, ReplayBufferConfig
from mbrl_ros.core.reward_model import RewardModelConfig
from mbrl_ros.core.value_policy import ValuePolicyConfig

logger = logging.getLogger("bench.dmc")

BENCH_MODEL_CONFIG = LatentModelConfig(mlp_hidden=(128, 128), activation="silu")
"""The model of the benchmark: the core defaults (latent 64, encoder 256, 5 Qs, horizon 3,
batch 256) with MLPs of 128-128 instead of 256-256 and SiLU instead of Mish: about 3x cheaper
per update and per plan on one CPU thread (the benchmark machine is a shared 2-core one)."""
BENCH_PLANNER_CONFIG = LatentPlannerConfig()
"""The planner of the benchmark: horizon 3, 6 iterations of 256 samples, 32 elites, 16
policy-prior trajectories."""


class LatentAgent:
    """Latent world model + latent MPPI, trained from a replay buffer (``--agent tdmpc2``)."""

    def __init__(self, env: DMCEnv, loop: LoopConfig, ensemble_config: EnsembleConfig,
                 planner_config: PlannerConfig, value_config: ValuePolicyConfig,
                 reward_config: RewardModelConfig, device: torch.device, seed: int,
                 model_config: LatentModelConfig = BENCH_MODEL_CONFIG,
                 latent_planner_config: LatentPlannerConfig = BENCH_PLANNER_CONFIG) -> None:
        del ensemble_config, value_config, reward_config  # explicit-state settings: unused
        self.loop, self.seed = loop, seed
        discount = model_config.discount or heuristic_discount(env.max_agent_steps)
        self.model = LatentWorldModel(env.state_dim, env.action_dim, model_config,
                                      seed=seed).to(device)
        self.trainer = LatentTrainer(self.model, discount, seed=seed + 1)
        latent_planner_config = dataclasses.replace(latent_planner_config,
                                                    seed=planner_config.seed)
        self.planner = LatentPlanner(self.model, latent_planner_config, discount,
                                     env.action_low, env.action_high)
        self.replay = ReplayBuffer(env.state_dim, env.action_dim,
                                   ReplayBufferConfig(capacity=max(loop.total_steps, 1)))
        self.action_low, self.action_high = env.action_low, env.action_high
        self.rng = np.random.default_rng(seed + 2)
        self.device = device
        self.trained = False
        logger.info("tdmpc2 agent: discount %.3f, %d parameters", discount,
                    sum(p.numel() for p in self.model.parameters()))

    def act(self, state: np.ndarray) -> np.ndarray:
        """Planned action ``[A]`` (physical units) for ``state [S]``."""
        return self.planner.plan(state)

    def reset(self) -> None:
        """A new episode: the planner forgets its warm start."""
        self.planner.reset()

    def _fit(self, steps: int) -> Tuple[float, float]:
        sampler = SequenceSampler(self.replay.all(), self.model.config.horizon,
                                  self.action_low, self.action_high, self.device)
        report = self.trainer.fit(sampler, max(1, steps), self.rng)
        logger.debug("latent model: consistency %.4g, reward %.4g, value %.4g, policy %.4g",
                     report.consistency, report.reward, report.value, report.policy)
        return report.reward, report.value

    def fit_models(self) -> None:
        """First call (end of the seed phase): as many joint updates as agent steps collected
        (TD-MPC2's pre-training); later calls do nothing, the updates run in
        :meth:`train_heads`."""
        if self.trained:
            return
        steps = round(len(self.replay) * self.loop.updates_per_agent_step)
        reward_loss, value_loss = self._fit(steps)
        logger.info("latent model pre-trained with %d updates: reward loss %.4g, value loss "
                    "%.4g", steps, reward_loss, value_loss)
        self.trained = True

    def train_heads(self, agent_steps: int) -> Tuple[float, float]:
        """``updates_per_agent_step`` joint model + policy updates per new agent step;
        returns (reward loss, value loss)."""
        return self._fit(round(agent_steps * self.loop.updates_per_agent_step))
