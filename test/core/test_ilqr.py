"""iLQR / box-DDP (method "ilqr"): LQR optimality on a linear-quadratic problem, the action
box, monotone descent on a nonlinear pendulum, and the planner's usual result path."""

import math

import numpy as np
import pytest
import torch

from linear_model import LinearModel
from mbrl_ros.core.costs import EffortCost, JointPositionCost, TaskCost
from mbrl_ros.core.planning import Planner, PlannerConfig
from mbrl_ros.core.planning.constraints import ActionScale
from mbrl_ros.core.planning.ilqr import IlqrProblem, box_qp, ilqr

DT = 0.1
A_DI = np.array([[1.0, DT], [0.0, 1.0]])
B_DI = np.array([[0.0], [DT]])
Q_DI = np.array([1.0, 0.1])
R_DI = np.array([0.1])
TERMINAL = np.diag([2.0, 0.5])
"""Extra terminal weight: the terminal value is -x' TERMINAL x."""
HORIZON = 8


class Pendulum:
    """One member ``theta'' = -g sin(theta) - damping * theta' + u`` (semi-implicit Euler)."""

    num_members, state_dim, action_dim = 1, 2, 1
    device = torch.device("cpu")

    def predict(self, state, action):
        angle, rate = state[..., 0], state[..., 1]
        rate = rate + DT * (-9.81 * torch.sin(angle) - 0.1 * rate + action[..., 0])
        mean = torch.stack([angle + DT * rate, rate], dim=-1)
        if mean.dim() == 2:
            mean = mean.unsqueeze(0)
        return mean, torch.zeros_like(mean)


def quadratic_cost():
    return TaskCost([JointPositionCost([0, 1], [0.0, 0.0], Q_DI.tolist()),
                     EffortCost(R_DI.tolist(), action_dim=1)])


def terminal_value(states):
    weight = torch.as_tensor(TERMINAL, dtype=states.dtype)
    return -torch.einsum("ni,ij,nj->n", states, weight, states)


def finite_horizon_lqr(horizon):
    """Gains K_t (u_t = -K_t x_t) of the problem sum_{t=1..H} x'Qx + sum_{t<H} u'Ru +
    x_H' TERMINAL x_H, by the backward Riccati recursion."""
    Q, R = np.diag(Q_DI), np.diag(R_DI)
    P = Q + TERMINAL
    gains = []
    for _ in range(horizon):
        K = np.linalg.solve(R + B_DI.T @ P @ B_DI, B_DI.T @ P @ A_DI)
        gains.append(K)
        P = Q + A_DI.T @ P @ A_DI - A_DI.T @ P @ B_DI @ K
    return gains[::-1]


def plan_cost(actions, state, low=-np.inf, high=np.inf):
    """Exact cost of an open-loop action sequence on the linear system."""
    x, total = np.asarray(state, dtype=float), 0.0
    for u in actions:
        u = np.clip(np.atleast_1d(u), low, high)
        total += float(u @ np.diag(R_DI) @ u)
        x = A_DI @ x + B_DI @ u
        total += float(x @ np.diag(Q_DI) @ x)
    return total + float(x @ TERMINAL @ x)


def config(**overrides):
    settings = dict(method="ilqr", horizon=HORIZON, num_iterations=5, action_low=(-5.0,),
                    action_high=(5.0,), discount=1.0, num_policy_trajectories=0,
                    ilqr_regularization=0.0, seed=0)
    settings.update(overrides)
    return PlannerConfig(**settings)


def test_first_action_matches_finite_horizon_lqr():
    state = np.array([1.0, -0.5])
    gains = finite_horizon_lqr(HORIZON)
    planner = Planner(LinearModel(A_DI, B_DI), config(), cost_fn=quadratic_cost(),
                      value=terminal_value)
    result = planner.plan(state)
    expected = float(-(gains[0] @ state)[0])
    assert result.feasible and result.iterations == 5
    assert abs(float(result.action[0]) - expected) < 1e-4 * max(1.0, abs(expected))
    # the whole plan is the LQR closed loop
    x, lqr_actions = state.copy(), []
    for K in gains:
        lqr_actions.append(float(-(K @ x)[0]))
        x = A_DI @ x + B_DI @ np.array([lqr_actions[-1]])
    np.testing.assert_allclose(result.actions[:, 0].numpy(), lqr_actions, atol=1e-4)
    assert result.cost == pytest.approx(plan_cost(lqr_actions, state), rel=1e-4)


def test_binding_box_is_respected_and_beats_clipped_lqr():
    # a long horizon: the box binds while accelerating and braking, which LQR cannot foresee
    state, horizon = np.array([3.0, 0.0]), 30
    low, high = -2.0, 1.0
    gains = finite_horizon_lqr(horizon)
    planner = Planner(LinearModel(A_DI, B_DI),
                      config(horizon=horizon, action_low=(low,), action_high=(high,),
                             num_iterations=10),
                      cost_fn=quadratic_cost(), value=terminal_value)
    result = planner.plan(state)
    actions = result.actions[:, 0].numpy()
    assert result.feasible
    assert actions.min() >= low - 1e-6 and actions.max() <= high + 1e-6
    assert np.isclose(actions, low, atol=1e-5).any()  # the box binds at both ends
    assert np.isclose(actions, high, atol=1e-5).any()
    # the LQR plan (unconstrained optimum) clipped to the box, and the LQR feedback law with
    # its actions clipped, closed loop
    x, lqr_plan, clipped_law = state.copy(), [], []
    for K in gains:
        lqr_plan.append(float(-(K @ x)[0]))
        x = A_DI @ x + B_DI @ np.array([lqr_plan[-1]])
    x = state.copy()
    for K in gains:
        clipped_law.append(float(np.clip(-(K @ x)[0], low, high)))
        x = A_DI @ x + B_DI @ np.array([clipped_law[-1]])
    ilqr_cost = plan_cost(actions, state)
    assert result.cost == pytest.approx(ilqr_cost, rel=1e-4)
    assert ilqr_cost < 0.6 * plan_cost(lqr_plan, state, low, high)
    assert ilqr_cost < plan_cost(clipped_law, state) - 0.3


def test_box_qp_solves_a_bound_constrained_quadratic():
    hessian = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    gradient = torch.tensor([-4.0, 0.2], dtype=torch.float64)
    lower = torch.full((2,), -1.0, dtype=torch.float64)
    upper = torch.ones(2, dtype=torch.float64)
    x, free = box_qp(hessian, gradient, lower, upper, torch.zeros(2, dtype=torch.float64))
    # brute force on a grid
    grid = torch.linspace(-1.0, 1.0, 401, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)
    values = points @ gradient + 0.5 * torch.einsum("ni,ij,nj->n", points, hessian, points)
    best = points[torch.argmin(values)]
    assert torch.allclose(x, best, atol=5e-3)
    assert free.tolist() == [False, True]  # x0 sits at its upper bound, x1 = -0.7 inside


def test_pendulum_cost_decreases_monotonically():
    scale = ActionScale((-4.0,), (4.0,), 1, torch.device("cpu"))
    horizon = 30
    discounts = torch.ones(horizon + 1)
    cost = TaskCost([JointPositionCost([0, 1], [math.pi, 0.0], [1.0, 0.05]),
                     EffortCost([0.01], action_dim=1)])
    problem = IlqrProblem(Pendulum(), scale, cost, None, 0.0, discounts)
    result = ilqr(problem, torch.tensor([0.1, 0.0]), torch.zeros(horizon, 1), iterations=15,
                  regularization=1e-3, regularization_factor=2.0, line_search_steps=8)
    costs = np.array(result.costs)
    assert result.iterations == 15 and len(costs) == 16
    assert np.all(np.diff(costs) <= 0.0)
    assert costs[-1] < 0.8 * costs[0]
    assert float(result.actions.abs().max()) <= 1.0


def test_runs_with_a_real_ensemble_and_disagreement_through_the_planner():
    from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble

    dynamics = ProbabilisticEnsemble(4, 2, EnsembleConfig(num_members=3, num_elites=2,
                                                          hidden_sizes=(16, 16)), "cpu", seed=0)
    cost = TaskCost([JointPositionCost([0, 1], [0.5, -0.5], 1.0), EffortCost(0.01, 2)])
    planner_config = PlannerConfig(method="ilqr", horizon=4, num_iterations=3,
                                   num_policy_trajectories=0, disagreement_weight=1.0)
    before = [p.detach().clone() for p in dynamics.parameters()]
    planner = Planner(dynamics, planner_config, cost_fn=cost)
    start_cost = planner._choose(torch.zeros(4), torch.zeros(1, 4, 2)).cost
    planner.reset()
    result = planner.plan(np.zeros(4, np.float32))
    assert result.actions.shape == (4, 2) and result.states.shape == (5, 4)
    assert torch.isfinite(result.disagreement).all() and float(result.disagreement.max()) > 0
    assert result.cost < start_cost
    assert all(p.grad is None for p in dynamics.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, dynamics.parameters()))


def test_runs_with_the_residual_model():
    from mbrl_ros.core.ensemble import EnsembleConfig
    from mbrl_ros.core.residual import ResidualDynamics

    class LinearNominal:
        """A differentiable analytical part: the double integrator, one joint."""

        def step(self, state, action):
            return state @ torch.as_tensor(A_DI, dtype=state.dtype).T + action * torch.tensor(
                [0.0, DT], dtype=state.dtype)

    dynamics = ResidualDynamics.create(LinearNominal(), 2, 1, EnsembleConfig(
        num_members=3, num_elites=2, hidden_sizes=(8,)), "cpu", seed=0)
    planner = Planner(dynamics, config(num_iterations=3), cost_fn=quadratic_cost(),
                      value=terminal_value)
    state = np.array([1.0, -0.5], np.float32)
    start_cost = planner._choose(torch.as_tensor(state), torch.zeros(1, HORIZON, 1)).cost
    planner.reset()
    result = planner.plan(state)
    assert result.feasible and result.cost < start_cost - 0.5
    assert all(p.grad is None for p in dynamics.ensemble.parameters())
