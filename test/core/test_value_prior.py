"""The planner's view of a learned value/policy: stages, goal binding, compatibility."""

import numpy as np
import pytest
import torch

from mbrl_ros.core.checkpoint import CheckpointError
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.core.value_policy import ValuePolicy, ValuePolicyConfig
from mbrl_ros.core.value_prior import (STAGE_FULL, STAGE_MPC, STAGE_POLICY_ONLY,
                                       STAGE_POLICY_PRIOR, STAGE_VALUE, PlanningPrior,
                                       ValuePriorConfig, compatibility_error)

CONFIG = ValuePolicyConfig(hidden_sizes=(16,), batch_size=32)
META = dict(task="reach", task_cost_hash="abc", state_dim=4, action_dim=2, goal_dim=3,
            joints=["a", "b"], model_period_s=0.04)


def goal_agent() -> ValuePolicy:
    agent = ValuePolicy(4, 2, [-1.0, -1.0], [1.0, 1.0], CONFIG, seed=0, goal_dim=3)
    rng = np.random.default_rng(0)
    data = TransitionBatch(rng.normal(size=(64, 4)), rng.uniform(-1, 1, (64, 2)),
                           rng.normal(size=(64, 4)), episode=np.repeat([0, 1], 32))

    def reward(state, action, next_state, goal):
        return -(next_state[:, :3] - goal).square().sum(-1)

    agent.fit(data, 20, reward_fn=reward, achieved_goal=lambda s: s[:, :3])
    return agent


def test_stages_follow_the_three_settings():
    assert ValuePriorConfig().stage(True) == STAGE_MPC
    assert ValuePriorConfig(policy_prior=True).stage(True) == STAGE_POLICY_PRIOR
    assert ValuePriorConfig(terminal_value=True).stage(True) == STAGE_VALUE
    assert ValuePriorConfig(True, True).stage(True) == STAGE_FULL
    assert ValuePriorConfig(True, True, policy_only=True).stage(True) == STAGE_POLICY_ONLY
    # nothing deployed: pure MPC whatever the settings
    assert ValuePriorConfig(True, True, policy_only=True).stage(False) == STAGE_MPC


def test_prior_binds_the_goal_and_reports_value_disagreement():
    agent = goal_agent()
    prior = PlanningPrior(agent, 3)
    assert prior.needs_goal and not prior.ready
    prior.set_goal(np.array([0.1, 0.2, 0.3]))
    assert prior.ready
    states = torch.randn(5, 4)
    goal = torch.tensor([0.1, 0.2, 0.3])
    assert torch.equal(prior.value(states), agent.value(states, goal))
    assert torch.equal(prior.policy(states), agent.policy(states, goal))
    spread = prior.disagreement(states[0])
    q = agent.q_values(agent.observation(states[:1], goal),
                       agent.policy(states[:1], goal)).detach()
    assert spread == pytest.approx(float(q.var(0, unbiased=False)[0]
                                         / agent.target_variance), rel=1e-5)
    assert spread >= 0.0


def test_checkpoint_round_trip_keeps_goals_scales_and_metadata(tmp_path):
    agent = goal_agent()
    path = str(tmp_path / "vp.ckpt")
    sha = agent.save(path, metadata=META)
    loaded = ValuePolicy.load(path, expected_sha256=sha)
    assert loaded.goal_dim == 3 and loaded.metadata == META
    assert float(loaded.value_scale) == float(agent.value_scale) != 1.0
    states, goal = torch.randn(3, 4), torch.zeros(3)
    assert torch.equal(loaded.value(states, goal), agent.value(states, goal))
    assert ValuePolicy.load(path, sha).metadata == META
    with pytest.raises(CheckpointError):
        ValuePolicy.load(path, expected_sha256="0" * 64)


def test_compatibility_names_the_first_difference():
    assert compatibility_error(META, META) is None
    assert compatibility_error(META, {**META, "joints": ("a", "b")}) is None
    assert compatibility_error(META, {**META, "model_period_s": 0.04 + 1e-12}) is None
    assert "task_cost_hash" in compatibility_error({**META, "task_cost_hash": "x"}, META)
    assert "joints" in compatibility_error({**META, "joints": ["b", "a"]}, META)
    assert "state_dim" in compatibility_error({k: v for k, v in META.items()
                                               if k != "state_dim"}, META)


def test_relative_actions_are_offsets_from_the_joint_positions(tmp_path):
    """Position targets: the policy outputs position + offset (within bounds), the Q networks
    see target - position; the setting survives a checkpoint."""
    agent = ValuePolicy(4, 2, [-3.0, -3.0], [3.0, 3.0], CONFIG, seed=0, relative_action=(0, 1))
    data = TransitionBatch(np.zeros((8, 4)), np.zeros((8, 2)), np.zeros((8, 4)),
                           reward=np.zeros(8))
    agent.fit(data, 1)
    states = torch.tensor([[2.5, -2.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    actions = agent.policy(states)
    assert bool((actions.abs() <= 3.0).all())
    offsets = agent._action_features(states, actions) * agent.action_half_range
    torch.testing.assert_close(offsets, actions - states[:, :2])
    # the same offset from a different position is the same input to the Q networks
    shifted = states.clone()
    shifted[:, :2] += 0.1
    torch.testing.assert_close(agent._action_features(shifted, actions + 0.1),
                               agent._action_features(states, actions))
    path = str(tmp_path / "relative.ckpt")
    agent.save(path)
    loaded = ValuePolicy.load(path)
    assert loaded.relative_action == (0, 1)
    torch.testing.assert_close(loaded.policy(states), actions)
    with pytest.raises(ValueError, match="relative_action"):
        ValuePolicy(4, 2, [-1.0, -1.0], [1.0, 1.0], CONFIG, relative_action=(0, 4))
