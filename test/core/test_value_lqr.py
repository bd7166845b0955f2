"""Value and policy learning against a linear-quadratic problem whose answer is known.

Double integrator ``x' = A x + B u``, reward = minus the planner's per-step task cost
``x'ᵀQx' + uᵀRu`` (:class:`TaskReward` over the same :class:`TaskCost` the planner uses),
discount γ. Its cost-to-go is ``W(x) = xᵀMx`` with ``N = Q + γM``,
``M = AᵀNA - AᵀNB (R + BᵀNB)⁻¹ BᵀNA`` and the optimal action ``u = -(R + BᵀNB)⁻¹BᵀNA x``.
"""

import numpy as np
import pytest
import torch

from mbrl_ros.core.costs import EffortCost, JointPositionCost, TaskCost
from mbrl_ros.core.planning import Planner, PlannerConfig
from mbrl_ros.core.task_reward import TaskReward
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.core.value_policy import ValuePolicy, ValuePolicyConfig

DT = 0.1
A = np.array([[1.0, DT], [0.0, 1.0]])
B = np.array([[0.0], [DT]])
Q = np.array([1.0, 0.1])
R = np.array([0.1])
GAMMA = 0.9
ACTION_LIMIT = 5.0
TEST_STATES = np.array([[1.0, -0.5], [-0.6, 0.3], [0.4, 0.8], [-0.8, -0.8], [0.2, 0.0]])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def discounted_lqr(iterations: int = 5000):
    """(M, K): cost-to-go matrix and gain (u = -K x) of the discounted problem above."""
    M = np.zeros((2, 2))
    for _ in range(iterations):
        N = np.diag(Q) + GAMMA * M
        K = np.linalg.solve(np.diag(R) + B.T @ N @ B, B.T @ N @ A)
        M_next = A.T @ N @ A - A.T @ N @ B @ K
        if np.max(np.abs(M_next - M)) < 1e-13:
            break
        M = M_next
    return M, K


def task_cost() -> TaskCost:
    return TaskCost([JointPositionCost([0, 1], [0.0, 0.0], Q.tolist(), state_dim=2),
                     EffortCost(R.tolist(), action_dim=1)])


class LinearModel:
    """A perfect 2-member model of the double integrator (DynamicsModel interface)."""

    num_members, state_dim, action_dim = 2, 2, 1
    device = torch.device("cpu")

    def predict(self, state, action):
        mean = state @ torch.as_tensor(A.T, dtype=state.dtype) \
            + action @ torch.as_tensor(B.T, dtype=state.dtype)
        mean = mean.expand(self.num_members, *mean.shape[-2:])
        return mean, torch.full_like(mean, 1e-8)


def random_transitions(num: int, seed: int) -> TransitionBatch:
    rng = np.random.default_rng(seed)
    state = rng.uniform(-1.5, 1.5, (num, 2))
    action = rng.uniform(-ACTION_LIMIT, ACTION_LIMIT, (num, 1))
    return TransitionBatch(state, action, state @ A.T + action @ B.T)


def test_task_reward_is_minus_the_planners_step_cost():
    reward = TaskReward(task_cost())
    state = torch.tensor([[1.0, -0.5]])
    action = torch.tensor([[2.0]])
    next_state = torch.tensor([[0.95, -0.3]])
    expected = -(1.0 * 0.95 ** 2 + 0.1 * 0.3 ** 2 + 0.1 * 2.0 ** 2)
    assert float(reward(state, action, next_state)[0]) == pytest.approx(expected, rel=1e-6)
    # the planner's own cost of the one-step plan is the same number
    cost = task_cost()(torch.stack([state, next_state], 1), action[:, None])
    assert float(cost[0]) == pytest.approx(-expected, rel=1e-6)


def test_learned_value_and_policy_match_discounted_lqr():
    M, K = discounted_lqr()
    config = ValuePolicyConfig(hidden_sizes=(64, 64), discount=GAMMA, target_tau=0.05,
                               batch_size=128, q_learning_rate=2e-3, policy_learning_rate=1e-3,
                               rollout_horizon=2, real_ratio=0.5, rollout_action_noise=0.3,
                               rollout_sample_noise=False, behaviour_cloning_weight=0.0)
    agent = ValuePolicy(2, 1, [-ACTION_LIMIT], [ACTION_LIMIT], config, seed=0)
    report = agent.fit(random_transitions(4000, 0), 1500, model=LinearModel(),
                       reward_fn=TaskReward(task_cost()), seed=1)
    assert report.steps == 1500 and report.model_transitions > 0
    states = torch.as_tensor(TEST_STATES, dtype=torch.float32)
    exact_value = -np.einsum("ni,ij,nj->n", TEST_STATES, M, TEST_STATES)
    learned_value = agent.value(states).numpy()
    scale = np.abs(exact_value).max()
    np.testing.assert_allclose(learned_value, exact_value, atol=0.05 * scale)
    exact_action = -(TEST_STATES @ K.T)[:, 0]
    learned_action = agent.policy(states)[:, 0].numpy()
    np.testing.assert_allclose(learned_action, exact_action,
                               atol=0.08 * np.abs(exact_action).max())


def one_step_planner(value) -> Planner:
    config = PlannerConfig(horizon=1, num_samples=512, num_iterations=8,
                           action_low=(-ACTION_LIMIT,), action_high=(ACTION_LIMIT,),
                           discount=GAMMA, temperature=0.05, momentum=0.0,
                           num_policy_trajectories=0, seed=0)
    return Planner(LinearModel(), config, cost_fn=task_cost(), value=value)


def test_a_perfect_value_makes_horizon_one_optimal():
    M, K = discounted_lqr()
    terminal = torch.as_tensor(M, dtype=torch.float32)

    def perfect_value(states):
        return -torch.einsum("ni,ij,nj->n", states, terminal, states)

    for state in TEST_STATES[:3]:
        optimal = float(-(K @ state)[0])
        with_value = float(one_step_planner(perfect_value).plan(state).action[0])
        greedy = float(one_step_planner(None).plan(state).action[0])
        assert abs(with_value - optimal) < 0.05 * abs(optimal) + 0.02
        # without the value, one step is short-sighted: clearly not the optimal action
        assert abs(greedy - optimal) > 0.2 * abs(optimal)
