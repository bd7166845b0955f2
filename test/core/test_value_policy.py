"""ValuePolicy (TD learning, model rollouts) and RewardModel."""

import logging

import numpy as np
import pytest
import torch

from mbrl_ros.core.checkpoint import CheckpointError
from mbrl_ros.core.reward_model import RewardModel, RewardModelConfig
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.core.value_policy import ValuePolicy, ValuePolicyConfig

# Tiny MDP: the state never changes, reward 1 + s/2 - (a - s/2)^2, discount 0.9.
# Optimal policy a* = s/2, optimal value V*(s) = (1 + s/2) / (1 - 0.9) = 10 + 5 s.
# plain TD learning from uniformly random actions: no pull toward the logged actions
CONFIG = ValuePolicyConfig(hidden_sizes=(32, 32), discount=0.9, target_tau=0.1, batch_size=64,
                           q_learning_rate=3e-3, policy_learning_rate=3e-3,
                           behaviour_cloning_weight=0.0)
STATES = torch.linspace(-0.9, 0.9, 7)[:, None]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reward_fn(state, action, next_state):
    return 1 + 0.5 * state[:, 0] - (action[:, 0] - 0.5 * state[:, 0]) ** 2


def static_batch(num: int, seed: int, with_reward: bool = True) -> TransitionBatch:
    rng = np.random.default_rng(seed)
    state = rng.uniform(-1, 1, (num, 1))
    action = rng.uniform(-1, 1, (num, 1))
    reward = reward_fn(torch.as_tensor(state), torch.as_tensor(action), None).numpy()
    return TransitionBatch(state, action, state, reward=reward if with_reward else None)


class StaticModel:
    """A perfect 3-member DynamicsModel of the tiny MDP (next_state = state)."""

    num_members = 3

    def predict(self, state, action):
        mean = state.unsqueeze(0).expand(3, -1, -1)
        return mean, torch.full_like(mean, 1e-6)


def check_optimal(agent: ValuePolicy) -> None:
    np.testing.assert_allclose(agent.value(STATES).numpy(), 10 + 5 * STATES[:, 0].numpy(),
                               atol=0.6)
    np.testing.assert_allclose(agent.policy(STATES)[:, 0].numpy(), 0.5 * STATES[:, 0].numpy(),
                               atol=0.1)


def test_td_learning_converges_to_known_value():
    agent = ValuePolicy(1, 1, [-1.0], [1.0], CONFIG, seed=0)
    report = agent.fit(static_batch(2000, seed=0), num_steps=800, seed=0)
    assert report.steps == 800 and report.model_transitions == 0
    assert np.mean(report.q_loss[-50:]) < 0.1 * np.mean(report.q_loss[:50])
    check_optimal(agent)


def test_td_learning_from_model_rollouts():
    config = ValuePolicyConfig(**{**CONFIG.to_dict(), "hidden_sizes": (32, 32),
                                  "real_ratio": 0.25, "rollout_horizon": 3})
    agent = ValuePolicy(1, 1, [-1.0], [1.0], config, seed=0)
    # Real data without rewards: they come from reward_fn; most of each batch from rollouts.
    report = agent.fit(static_batch(500, seed=1, with_reward=False), num_steps=800,
                       model=StaticModel(), reward_fn=reward_fn, seed=0)
    assert report.model_transitions == 800 * 48
    check_optimal(agent)


def test_policy_bounds_shapes_and_save_load(tmp_path):
    agent = ValuePolicy(3, 2, [-1.0, 0.0], [1.0, 2.0], CONFIG, seed=0)
    agent.fit(TransitionBatch(np.random.default_rng(0).normal(size=(50, 3)) * 100,
                              np.zeros((50, 2)), np.zeros((50, 3)), reward=np.ones(50)),
              num_steps=3)
    state = torch.randn(4, 6, 3) * 1000
    action = agent.policy(state)
    assert action.shape == (4, 6, 2) and agent.value(state).shape == (4, 6)
    assert bool((action[..., 0].abs() <= 1).all()) and bool((action[..., 1] >= 0).all())
    path = str(tmp_path / "vp.ckpt")
    sha = agent.save(path, metadata={"task": "reach"})
    loaded = ValuePolicy.load(path, expected_sha256=sha)
    assert torch.equal(loaded.value(state), agent.value(state))
    assert torch.equal(loaded.policy(state), agent.policy(state))
    with pytest.raises(CheckpointError, match="not RewardModel"):
        RewardModel.load(path)


def test_bad_input(caplog):
    agent = ValuePolicy(1, 1, [-1.0], [1.0], CONFIG)
    batch = static_batch(20, seed=0)
    batch.state[0, 0] = np.nan
    with caplog.at_level(logging.WARNING):
        agent.fit(batch, num_steps=1)
    assert "dropped 1 of 20" in caplog.text
    with pytest.raises(ValueError, match="reward_fn"):
        agent.fit(static_batch(5, seed=0, with_reward=False), num_steps=1)
    with pytest.raises(ValueError, match="action bounds"):
        ValuePolicy(1, 1, [1.0], [-1.0], CONFIG)
    with pytest.raises(ValueError, match="discount"):
        ValuePolicyConfig(discount=1.0).validate()
    with pytest.raises(ValueError, match="q_target_members"):
        ValuePolicyConfig(num_q=2, q_target_members=3).validate()


def test_reward_model_learns_and_round_trips(tmp_path):
    train, test = static_batch(1000, seed=0), static_batch(200, seed=1)
    model = RewardModel(1, 1, RewardModelConfig(hidden_sizes=(32, 32), epochs=40,
                                                batch_size=64, learning_rate=3e-3))
    losses = model.fit(train, seed=0)
    assert losses[-1] < 0.05 * losses[0]
    predicted = model(torch.as_tensor(test.state), torch.as_tensor(test.action),
                      torch.as_tensor(test.next_state))
    assert predicted.shape == (200,)
    assert float((predicted - torch.as_tensor(test.reward)).abs().mean()) < 0.05
    path = str(tmp_path / "reward.ckpt")
    model.save(path)
    loaded = RewardModel.load(path)
    assert torch.equal(loaded(test.state, test.action, test.next_state),
                       model(test.state, test.action, test.next_state))
    with pytest.raises(ValueError, match="rewards"):
        model.fit(static_batch(5, seed=0, with_reward=False))


def test_reward_model_of_state_and_action_learns_by_updates(tmp_path):
    """``r(state, action)`` on raw rewards, trained step by step as a replay buffer grows
    (the dm_control benchmark's reward model)."""
    config = RewardModelConfig(hidden_sizes=(32, 32), batch_size=64, learning_rate=3e-3,
                               use_next_state=False, normalize_reward=False)
    model = RewardModel(1, 1, config, seed=1)
    first = model.update(static_batch(200, seed=0), num_steps=20, seed=0)
    mean, std = model.input_normalizer.mean.clone(), model.input_normalizer.std.clone()
    last = model.update(static_batch(1000, seed=2), num_steps=600, seed=1)
    assert last < 0.05 * first
    # the normalisers are fitted once, at the first update; the reward is not normalised
    assert torch.equal(model.input_normalizer.mean, mean)
    assert torch.equal(model.input_normalizer.std, std)
    assert model.reward_normalizer.stats() == {"mean": [0.0], "std": [1.0]}
    test = static_batch(200, seed=3)
    state, action = torch.as_tensor(test.state), torch.as_tensor(test.action)
    predicted = model(state, action)
    assert float((predicted - torch.as_tensor(test.reward)).abs().mean()) < 0.05
    assert torch.equal(model(state, action, state + 5.0), predicted)  # next_state unused
    # any leading dims, as planners pass [N, H, S] sequences
    grid = model(state.reshape(20, 10, 1), action.reshape(20, 10, 1))
    assert grid.shape == (20, 10)
    assert torch.allclose(grid.reshape(-1), predicted, atol=1e-6)
    path = str(tmp_path / "reward.ckpt")
    model.save(path)
    loaded = RewardModel.load(path)
    assert loaded.config == config and loaded.fitted
    assert torch.equal(loaded(state, action), predicted)
    loaded.update(static_batch(50, seed=4), num_steps=1)  # no refit of the normalisers
    assert torch.equal(loaded.input_normalizer.mean, mean)
    assert np.isnan(model.update(test, num_steps=0))
    with pytest.raises(ValueError, match="rewards"):
        model.update(static_batch(5, seed=0, with_reward=False), num_steps=1)
    with pytest.raises(ValueError, match="needs next_state"):
        RewardModel(1, 1)(state, action)


def test_episode_ends_follow_runs_of_equal_ids():
    from mbrl_ros.core.value_policy import episode_ends
    np.testing.assert_array_equal(episode_ends(np.array([0, 0, 0, 1, 1, 0]), 6),
                                  [2, 2, 2, 4, 4, 5])
    np.testing.assert_array_equal(episode_ends(None, 3), [0, 1, 2])


def test_hindsight_goals_come_from_the_same_episodes_future():
    from mbrl_ros.core.value_policy import _HindsightGoals, episode_ends
    episode = np.repeat([0, 1], 50)
    reached = torch.arange(100, dtype=torch.float32)[:, None]  # goal of row i is i
    config = ValuePolicyConfig(goal_future_fraction=1.0, goal_future_steps=5)
    goals = _HindsightGoals(reached, episode_ends(episode, 100), config,
                            torch.Generator().manual_seed(0))
    rows = torch.arange(100).repeat(20)
    picked = goals(rows)[:, 0].long()
    assert bool((picked >= rows).all()) and bool((picked - rows <= 5).all())
    assert bool((torch.as_tensor(episode)[picked] == torch.as_tensor(episode)[rows]).all())
    assert int((picked > rows).sum()) > len(rows) // 2  # not just the own next state


def test_goal_conditioned_policy_heads_for_relabelled_goals():
    """1-D reaching, x' = x + 0.1 u, reward -(x' - g)^2 - 0.01 u^2: logged random walks with
    no goal at all; hindsight goals teach the policy to move toward any goal."""
    from mbrl_ros.core.costs import EffortCost, JointPositionCost, TaskCost
    from mbrl_ros.core.task_reward import TaskReward
    rng = np.random.default_rng(0)
    episodes = []
    for index in range(40):
        x = rng.uniform(-1, 1)
        for _ in range(50):
            u = rng.uniform(-1, 1)
            episodes.append((x, u, x + 0.1 * u, index))
            x = x + 0.1 * u
    state, action, next_state, episode = (np.array(c) for c in zip(*episodes))
    data = TransitionBatch(state[:, None], action[:, None], next_state[:, None],
                           episode=episode)
    reward = TaskReward(TaskCost([JointPositionCost([0], [0.0], 1.0, state_dim=1),
                                  EffortCost(0.01, action_dim=1)]), "joint_position")
    assert reward.goal_dim == 1
    config = ValuePolicyConfig(**{**CONFIG.to_dict(), "discount": 0.9, "rollout_horizon": 0})
    agent = ValuePolicy(1, 1, [-1.0], [1.0], config, seed=0, goal_dim=1)
    agent.fit(data, 600, reward_fn=reward, achieved_goal=reward.achieved_goal, seed=0)
    states = torch.tensor([[-0.5], [0.5], [0.0], [0.0]])
    goals = torch.tensor([[0.5], [-0.5], [0.6], [-0.6]])
    actions = agent.policy(states, goals)[:, 0]
    assert bool((torch.sign(actions) == torch.sign(goals - states)[:, 0]).all()), actions
    assert bool((actions.abs() > 0.5).all()), actions  # far goals: move fast
    near, far = agent.value(torch.tensor([[0.0], [0.0]]), torch.tensor([[0.05], [0.8]]))
    assert float(near) > float(far)
    with pytest.raises(ValueError, match="needs a goal"):
        agent.value(states)
    with pytest.raises(ValueError, match="achieved_goal"):
        agent.fit(data, 1, reward_fn=reward)


def test_behaviour_cloning_keeps_the_policy_where_the_model_was_fitted():
    """Logged actions are small (|a| <= 0.1); the model is wrong beyond them and promises a
    huge reward there. Without the pull toward the logged actions the policy goes for the
    model's error; with it (the default) it stays near the data."""
    rng = np.random.default_rng(0)
    state = rng.uniform(-1, 1, (400, 1))
    action = rng.uniform(-0.1, 0.1, (400, 1))
    data = TransitionBatch(state, action, state + action)

    class WrongOutsideData:
        num_members = 2

        def predict(self, state, action):
            excess = torch.relu(action.abs() - 0.1)
            mean = (state + action + 50.0 * excess).unsqueeze(0).expand(2, -1, -1)
            return mean, torch.full_like(mean, 1e-6)

    def reward(state, action, next_state):
        return next_state[:, 0] - state[:, 0]  # pay for moving up

    def largest_action(weight):
        config = ValuePolicyConfig(**{**CONFIG.to_dict(), "behaviour_cloning_weight": weight,
                                      "rollout_horizon": 1, "rollout_sample_noise": False})
        agent = ValuePolicy(1, 1, [-1.0], [1.0], config, seed=0)
        agent.fit(data, 400, model=WrongOutsideData(), reward_fn=reward, seed=0)
        return float(agent.policy(torch.linspace(-1, 1, 9)[:, None]).abs().max())

    assert ValuePolicyConfig().behaviour_cloning_weight > 0
    assert largest_action(0.0) > 0.8
    # a soft pull: the model's promise (50x the reward per unit beyond the data) still tempts
    assert largest_action(ValuePolicyConfig().behaviour_cloning_weight) < 0.5


def test_reward_model_gives_input_gradients_only_when_asked():
    """A planner differentiating its cost gets the reward's gradient in the actions; plain calls
    build no graph."""
    from mbrl_ros.core.reward_model import RewardModel, RewardModelConfig

    model = RewardModel(2, 1, RewardModelConfig(hidden_sizes=(8,), use_next_state=False),
                        torch.device("cpu"), seed=0)
    action = torch.zeros(4, 1, requires_grad=True)
    (gradient,) = torch.autograd.grad(model(torch.ones(4, 2), action).sum(), action)
    assert float(gradient.abs().sum()) > 0.0
    assert not model(torch.ones(4, 2), torch.zeros(4, 1)).requires_grad


def test_value_carries_gradients_to_states_that_require_them():
    """Gradient planners differentiate the terminal value in the state; plain calls build no
    graph."""
    agent = ValuePolicy(2, 1, [-1.0], [1.0], ValuePolicyConfig(hidden_sizes=(8,)), seed=0)
    state = torch.ones(3, 2, requires_grad=True)
    (gradient,) = torch.autograd.grad(agent.value(state).sum(), state)
    assert float(gradient.abs().sum()) > 0.0
    assert not agent.value(torch.ones(3, 2)).requires_grad
