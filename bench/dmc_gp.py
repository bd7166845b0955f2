"""The dm_control benchmark's Gaussian-process agent (``--agent gp-planner``).

The default agent's loop, learned reward head and planner, with
:class:`~mbrl_ros.core.gp_dynamics.GPDynamics` in place of the network ensemble: an exact GP
per state dimension (sparse beyond ``max_exact_points`` transitions) whose posterior function
samples are the planner's members, the data-efficient choice for a few hundred transitions.
No value function or policy prior (the planner's horizon and the learned reward only).
"""

from __future__ import annotations

import logging
from typing import Tuple

import torch

from bench.dmc_agent import Agent
from bench.dmc_env import DMCEnv
from mbrl_ros.core.ensemble import EnsembleConfig
from mbrl_ros.core.gp_dynamics import GPDynamics, GPDynamicsConfig, fit_gp_dynamics
from mbrl_ros.core.value_policy import ValuePolicyConfig

logger = logging.getLogger("bench.dmc")

__all__ = ["GPPlannerAgent", "gp_config_for"]

BENCH_RANDOM_FEATURES = 128
"""Random features of each member's prior draw: fewer than the default halve the planner's
time per step; they only shape the members away from the data."""
BENCH_FIT_ITERATIONS = 100
"""Adam steps per refit: each refit starts from the previous hyperparameters, so half the
default keeps refits short on a loaded machine."""
BENCH_HYPER_POINTS = 300
"""Transitions whose marginal likelihood sets the hyperparameters (the posterior conditions on
the whole buffer): a 5,000-step run has 625, and a step's cost grows with the cube."""


def gp_config_for(ensemble_config: EnsembleConfig) -> GPDynamicsConfig:
    """The GP settings of the benchmark: as many posterior samples as the ensemble has
    members, the same wrapped angle dims, :data:`BENCH_RANDOM_FEATURES`,
    :data:`BENCH_FIT_ITERATIONS` and :data:`BENCH_HYPER_POINTS`, the other settings at their
    defaults."""
    return GPDynamicsConfig(num_members=ensemble_config.num_members,
                            angle_wrap=tuple(ensemble_config.angle_wrap),
                            num_random_features=BENCH_RANDOM_FEATURES,
                            iterations=BENCH_FIT_ITERATIONS,
                            max_hyper_points=BENCH_HYPER_POINTS)


class GPPlannerAgent(Agent):
    """GP dynamics + learned reward + planner (no value / policy prior), trained from a replay
    buffer; built like :class:`bench.dmc_agent.Agent` (``value_config`` only gives the
    planner's reward discount)."""

    def make_dynamics(self, state_dim: int, action_dim: int, ensemble_config: EnsembleConfig,
                      device: torch.device, seed: int) -> GPDynamics:
        """GP dynamics with :func:`gp_config_for` the ensemble's settings."""
        self.gp_config = gp_config_for(ensemble_config)
        return GPDynamics(state_dim, action_dim, self.gp_config, device)

    def make_value_policy(self, env: DMCEnv, value_config: ValuePolicyConfig,
                          device: torch.device, seed: int) -> None:
        """No value / policy prior: the planner's horizon and the learned reward only."""
        return None

    def fit_models(self) -> None:
        """Refit the GP on the whole replay buffer (hyperparameters warm-started)."""
        data = self.replay.all()
        report = fit_gp_dynamics(self.dynamics, data, seed=self.seed * 1000 + self.fit_count)
        self.fit_count += 1
        logger.info("gp dynamics refit on %d transitions (%s): %d steps, train rmse %.4g, "
                    "%.1f s", len(data), "sparse" if report.sparse else "exact",
                    report.iterations_run, report.train_rmse, report.seconds)
        self.trained = True

    def train_heads(self, agent_steps: int) -> Tuple[float, float]:
        """Reward-model updates for ``agent_steps`` new agent steps; returns
        ``(reward_loss, nan)`` (there is no Q function)."""
        data = self.replay.all()
        steps = max(1, round(agent_steps * self.loop.reward_updates_per_agent_step))
        return self.reward.update(data, steps, seed=self.seed + len(data)), float("nan")
