"""Planner tests on small linear stand-in ensembles whose answers are known (LQR)."""

import math

import numpy as np
import pytest
import torch

from mbrl_ros.core.costs import EffortCost, JointPositionCost, TaskCost
from mbrl_ros.core.planning import Planner, PlannerConfig, ensemble_disagreement
from mbrl_ros.core.planning.constraints import ActionScale
from mbrl_ros.core.planning.gradient import mean_rollout_cost, refine_plan
from mbrl_ros.core.planning.sampling import shift_warm_start


class LinearEnsemble:
    """Stand-in dynamics: member e predicts ``A x + B u + offsets[e] * bump(x)``.

    ``bump(x) = exp(-|x[:2] - bump_center|^2 / bump_width^2)``; with zero offsets all members
    agree everywhere, otherwise they disagree only near ``bump_center``.
    """

    def __init__(self, A, B, num_members=3, offsets=None, bump_center=(0.0, 0.0),
                 bump_width=1.0):
        self.A = torch.as_tensor(A, dtype=torch.float32)
        self.B = torch.as_tensor(B, dtype=torch.float32)
        self.num_members = num_members
        self.state_dim, self.action_dim = self.A.shape[0], self.B.shape[1]
        self.device = torch.device("cpu")
        self.offsets = (torch.zeros(num_members, self.state_dim) if offsets is None
                        else torch.as_tensor(offsets, dtype=torch.float32))
        self.bump_center = torch.as_tensor(bump_center, dtype=torch.float32)
        self.bump_width = bump_width
        self.calls = 0

    def predict(self, state, action):
        self.calls += 1
        mean = state @ self.A.T + action @ self.B.T
        if mean.dim() == 2:
            mean = mean.expand(self.num_members, *mean.shape)
        if state.dim() == 2:
            state = state.expand(self.num_members, *state.shape)
        distance = (state[..., :2] - self.bump_center).square().sum(-1, keepdim=True)
        bump = torch.exp(-distance / self.bump_width ** 2)
        mean = mean + self.offsets[:, None, :] * bump
        return mean, torch.full_like(mean, 1e-4)


DT = 0.1
A_DI = np.array([[1.0, DT], [0.0, 1.0]])
B_DI = np.array([[0.0], [DT]])
Q_DI = np.array([1.0, 0.1])
R_DI = np.array([0.1])


def solve_dare(A, B, Q, R, iterations=20000):
    """Infinite-horizon discrete LQR: (P, K) with u = -K x, by Riccati iteration."""
    P = Q.copy()
    for _ in range(iterations):
        K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        P_next = Q + A.T @ P @ A - A.T @ P @ B @ K
        if np.max(np.abs(P_next - P)) < 1e-12:
            break
        P = P_next
    return P, K


def lqr_setup(num_members=4):
    P, K = solve_dare(A_DI, B_DI, np.diag(Q_DI), np.diag(R_DI))
    dynamics = LinearEnsemble(A_DI, B_DI, num_members)
    cost = TaskCost([JointPositionCost([0, 1], [0.0, 0.0], Q_DI.tolist()),
                     EffortCost(R_DI.tolist(), action_dim=1)])
    # state terms cover x_1..x_H, so the terminal value -x'(P - Q)x makes the total the exact
    # infinite-horizon cost-to-go: the optimal first action is the LQR action for any horizon
    terminal = torch.as_tensor(P - np.diag(Q_DI), dtype=torch.float32)

    def value(states):
        return -torch.einsum("ni,ij,nj->n", states, terminal, states)

    return dynamics, cost, value, K


def lqr_config(**overrides):
    settings = dict(horizon=5, num_samples=510, num_iterations=10, action_low=(-5.0,),
                    action_high=(5.0,), discount=1.0, temperature=0.3, momentum=0.0,
                    num_policy_trajectories=0, seed=3)
    settings.update(overrides)
    return PlannerConfig(**settings)


@pytest.mark.parametrize("method,propagation", [("mppi", "ensemble"), ("cem", "ensemble"),
                                                ("mppi", "mean"), ("cem", "partition"),
                                                ("mppi", "partition")])
def test_converges_to_lqr_first_action(method, propagation):
    dynamics, cost, value, K = lqr_setup()
    planner = Planner(dynamics, lqr_config(method=method, propagation=propagation),
                      cost_fn=cost, value=value)
    state = np.array([1.0, -0.5])
    expected = float(-(K @ state)[0])
    result = planner.plan(state)
    assert result.feasible
    assert result.action.shape == (1,) and result.actions.shape == (5, 1)
    assert result.states.shape == (6, 2) and result.disagreement.shape == (5,)
    assert abs(float(result.action[0]) - expected) < 0.05 * abs(expected)
    # the predicted states follow the model under the returned actions
    x1 = A_DI @ state + B_DI @ result.actions[0].numpy()
    np.testing.assert_allclose(result.states[1].numpy(), x1, rtol=1e-5, atol=1e-5)


def test_lqr_without_terminal_value_long_horizon():
    dynamics, cost, _, K = lqr_setup()
    planner = Planner(dynamics, lqr_config(method="cem", horizon=40, num_iterations=20,
                                           num_samples=1020), cost_fn=cost)
    state = np.array([1.0, 0.0])
    expected = float(-(K @ state)[0])
    assert abs(float(planner.plan(state).action[0]) - expected) < 0.05 * abs(expected)


@pytest.mark.parametrize("method", ["mppi", "cem"])
def test_actions_never_violate_bounds(method):
    dynamics, cost, value, _ = lqr_setup()
    config = lqr_config(method=method, action_low=(-0.5,), action_high=(0.25,),
                        num_iterations=3, gradient_steps=5, init_std=2.0, max_std=2.0)
    planner = Planner(dynamics, config, cost_fn=cost, value=value)
    for state in ([1.0, 0.0], [-1.0, 0.3], [5.0, 5.0]):
        result = planner.plan(state)
        assert float(result.actions.min()) >= -0.5 and float(result.actions.max()) <= 0.25
    # u* = -K x is far below -0.5 here: the bound is active
    assert float(planner.plan([5.0, 5.0]).action[0]) == pytest.approx(-0.5, abs=1e-3)


def test_state_limits_respected_when_feasible():
    dynamics = LinearEnsemble(A_DI, B_DI, 3)
    cost = TaskCost([JointPositionCost([0], [2.0], [1.0])])   # drive the position to 2 fast
    velocity_limit = 0.4
    config = lqr_config(action_low=(-5.0,), action_high=(5.0,), horizon=10, num_iterations=5,
                        state_low=(-math.inf, -velocity_limit),
                        state_high=(math.inf, velocity_limit))
    free = Planner(dynamics, lqr_config(action_low=(-5.0,), action_high=(5.0,), horizon=10,
                                        num_iterations=5), cost_fn=cost).plan([0.0, 0.0])
    assert float(free.states[:, 1].abs().max()) > velocity_limit   # the limit matters
    result = Planner(dynamics, config, cost_fn=cost).plan([0.0, 0.0])
    assert result.feasible
    assert float(result.states[:, 1].abs().max()) <= velocity_limit + 1e-5


def test_all_infeasible_falls_back_to_least_violating():
    dynamics = LinearEnsemble(A_DI, B_DI, 3)
    cost = TaskCost([JointPositionCost([0], [0.0], [1.0])])
    # moving at 2.0 with |v| <= 0.4 required: one step of at most 0.1 braking cannot fix it
    config = lqr_config(action_low=(-1.0,), action_high=(1.0,), horizon=4, num_iterations=3,
                        state_low=(-math.inf, -0.4), state_high=(math.inf, 0.4))
    result = Planner(dynamics, config, cost_fn=cost).plan([0.0, 2.0])
    assert not result.feasible
    assert torch.isfinite(result.actions).all()
    # the least-violating plan brakes as hard as possible
    assert float(result.actions.max()) < -0.9


def test_disagreement_penalty_steers_away_from_uncertain_region():
    # 2-D single integrator; members disagree in a blob on the straight path to the goal
    offsets = torch.tensor([[0.0, -0.3], [0.0, 0.0], [0.0, 0.3]])
    dynamics = LinearEnsemble(np.eye(2), 0.25 * np.eye(2), 3, offsets=offsets,
                              bump_center=(1.0, 0.0), bump_width=0.3)
    cost = TaskCost([JointPositionCost([0, 1], [2.0, 0.0], [1.0, 1.0])])

    def plan_with(weight):
        config = lqr_config(method="cem", horizon=14, num_iterations=6, action_low=(-1.0,),
                            action_high=(1.0,), disagreement_weight=weight, min_std=0.05,
                            num_samples=513)
        return Planner(dynamics, config, cost_fn=cost).plan([0.0, 0.0])

    naive, careful = plan_with(0.0), plan_with(200.0)
    assert float(naive.disagreement.max()) > 0.01
    assert float(careful.disagreement.sum()) < 0.2 * float(naive.disagreement.sum())
    assert float(careful.states[:, 1].abs().max()) > float(naive.states[:, 1].abs().max())


def test_ensemble_disagreement_definition():
    means = torch.tensor([[[1.0, 2.0]], [[3.0, 2.0]]])        # [E=2, N=1, S=2]
    # variance across members: dim0 -> 1.0, dim1 -> 0.0; mean over dims -> 0.5
    assert ensemble_disagreement(means).tolist() == [0.5]
    assert ensemble_disagreement(means[:1]).tolist() == [0.0]


def test_warm_start_is_shifted_previous_plan():
    dynamics, cost, value, _ = lqr_setup()
    planner = Planner(dynamics, lqr_config(num_iterations=2), cost_fn=cost, value=value)
    assert planner.warm_start is None
    result = planner.plan([1.0, 0.0])
    expected = torch.cat([result.actions[1:], result.actions[-1:]])
    torch.testing.assert_close(planner.warm_start, expected)
    planner.reset()
    assert planner.warm_start is None
    out = torch.empty(3, 1)
    shift_warm_start(torch.tensor([[1.0], [2.0], [3.0]]), out)
    assert out.flatten().tolist() == [2.0, 3.0, 3.0]


def test_policy_prior_is_used():
    dynamics, cost, value, K = lqr_setup()
    gain = torch.as_tensor(K, dtype=torch.float32)
    calls = []

    def policy(states):
        calls.append(states.shape)
        return -states @ gain.T

    state = np.array([1.0, -0.5])
    expected = float(-(K @ state)[0])
    config = lqr_config(num_samples=32, num_iterations=1, num_policy_trajectories=4,
                        policy_noise_std=0.0)
    with_prior = Planner(dynamics, config, cost_fn=cost, value=value, policy=policy)
    without = Planner(dynamics, config, cost_fn=cost, value=value)
    error_with = abs(float(with_prior.plan(state).action[0]) - expected)
    error_without = abs(float(without.plan(state).action[0]) - expected)
    assert calls and calls[0] == (4, 2)
    assert error_with < 1e-3 < 0.1 < error_without


def test_gradient_refinement_lowers_cost():
    dynamics, cost, value, _ = lqr_setup()
    base = dict(num_samples=33, num_iterations=1, horizon=8)
    plain = Planner(dynamics, lqr_config(**base), cost_fn=cost, value=value)
    refined = Planner(dynamics, lqr_config(gradient_steps=30, gradient_lr=0.05, **base),
                      cost_fn=cost, value=value)
    state = [1.0, -0.5]
    assert refined.plan(state).cost < plain.plan(state).cost - 1e-3
    # and directly: Adam steps reduce the differentiable cost
    scale = ActionScale((-20.0,), (20.0,), 1, torch.device("cpu"))
    discounts = torch.ones(9)
    start = torch.full((8, 1), 0.3)
    before = mean_rollout_cost(dynamics, torch.tensor(state), start[None], scale, cost, value,
                               0.0, discounts)
    after_plan = refine_plan(dynamics, torch.tensor(state), start, scale, cost, value, 0.0,
                             discounts, 20, 0.05)
    after = mean_rollout_cost(dynamics, torch.tensor(state), after_plan[None], scale, cost,
                              value, 0.0, discounts)
    assert float(after) < float(before)


def test_seeded_and_deterministic():
    dynamics, cost, value, _ = lqr_setup()
    first = Planner(dynamics, lqr_config(num_iterations=2), cost_fn=cost, value=value)
    second = Planner(dynamics, lqr_config(num_iterations=2), cost_fn=cost, value=value)
    assert torch.equal(first.plan([1.0, 0.0]).actions, second.plan([1.0, 0.0]).actions)


def test_bad_inputs_raise_or_fall_back():
    dynamics, cost, value, _ = lqr_setup()
    planner = Planner(dynamics, lqr_config(num_iterations=1), cost_fn=cost, value=value)
    with pytest.raises(ValueError, match="NaN"):
        planner.plan([float("nan"), 0.0])
    with pytest.raises(ValueError, match="planner expects 2"):
        planner.plan([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="method"):
        PlannerConfig(method="newton").validate()
    with pytest.raises(ValueError, match="partition"):
        PlannerConfig(propagation="partition", disagreement_weight=1.0).validate()

    class Broken(LinearEnsemble):
        def predict(self, state, action):
            mean, var = super().predict(state, action)
            return mean * float("nan"), var

    result = Planner(Broken(A_DI, B_DI, 2), lqr_config(num_iterations=2),
                     cost_fn=cost).plan([1.0, 0.0])
    assert not result.feasible and torch.isfinite(result.actions).all()


def test_runs_with_real_ensemble_and_refines_through_it():
    from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble

    config = EnsembleConfig(num_members=3, num_elites=2, hidden_sizes=(16, 16))
    dynamics = ProbabilisticEnsemble(4, 2, config, device="cpu", seed=0)
    cost = TaskCost([JointPositionCost([0, 1], [0.5, -0.5], 1.0), EffortCost(0.01, 2)])
    planner_config = PlannerConfig(horizon=4, num_samples=63, num_iterations=2,
                                   num_policy_trajectories=0, disagreement_weight=1.0,
                                   gradient_steps=3)
    parameters_before = [p.detach().clone() for p in dynamics.parameters()]
    result = Planner(dynamics, planner_config, cost_fn=cost).plan(np.zeros(4, np.float32))
    assert result.actions.shape == (4, 2) and result.states.shape == (5, 4)
    assert torch.isfinite(result.disagreement).all() and float(result.disagreement.max()) > 0
    assert all(p.grad is None for p in dynamics.parameters())
    assert all(torch.equal(a, b) for a, b in zip(parameters_before, dynamics.parameters()))


def test_seed_replaces_the_warm_start_once():
    dynamics = LinearEnsemble(A_DI, B_DI, num_members=1)
    config = PlannerConfig(horizon=4, num_samples=32, num_iterations=1, init_std=0.1,
                           num_policy_trajectories=0, action_low=(-2.0,), action_high=(2.0,))
    planner = Planner(dynamics, config, TaskCost([EffortCost(1.0, 1)]))
    assert not planner.has_warm_start
    seed = np.array([[1.0], [1.5], [9.0], [-1.0]])
    planner.seed(seed)
    np.testing.assert_allclose(planner.warm_start.numpy(), np.clip(seed, -2.0, 2.0))
    planner.plan(np.zeros(2))
    assert planner.has_warm_start and planner._seed is None
    with pytest.raises(ValueError, match="seed must be"):
        planner.seed(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="NaN"):
        planner.seed(np.full((4, 1), np.nan))


# ------------------------------------------------------------------ mutation-testing edges
# (bench/mutation.py; docs/safety_gate.md, "Mutation testing")

@pytest.mark.parametrize("propagation", ["mean", "ensemble", "partition"])
def test_each_rollout_step_starts_from_the_previous_prediction(propagation):
    from mbrl_ros.core.planning.rollout import propagate, track_states

    dynamics = LinearEnsemble(np.eye(1), np.eye(1), num_members=2)  # x' = x + u
    actions = torch.tensor([[[1.0], [2.0], [3.0]], [[-1.0], [0.0], [0.5]]])
    rollout = propagate(dynamics, torch.tensor([0.5]), actions, propagation)
    states = track_states(rollout)
    expected = torch.tensor([[0.5, 1.5, 3.5, 6.5], [0.5, -0.5, -0.5, 0.0]])
    for track in states:
        torch.testing.assert_close(track[..., 0], expected)


def test_a_zero_disagreement_weight_ignores_even_a_non_finite_disagreement():
    from mbrl_ros.core.planning.rollout import Rollout, score

    rollout = Rollout(states=torch.zeros(1, 2, 3, 1), num_samples=2,
                      disagreement=torch.tensor([[0.0, math.inf], [math.nan, 0.0]]))
    actions = torch.zeros(2, 2, 1)
    total = score(rollout, actions, lambda s, a: s[:, -1, 0] + 1.0, None, 0.0, torch.ones(3))
    torch.testing.assert_close(total, torch.ones(2))
    rollout.disagreement = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    total = score(rollout, actions, None, None, 0.5, torch.tensor([1.0, 0.5, 0.25]))
    torch.testing.assert_close(total, torch.tensor([0.5 * (1.0 + 2.0 * 0.5), 0.5 * 3.0]))
