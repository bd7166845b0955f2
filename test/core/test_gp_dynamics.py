"""GP dynamics: learns small nonlinear systems, its uncertainty grows away from the data, the
sparse path takes over beyond the threshold, and the planner plans with it."""

import math

import numpy as np
import pytest
import torch

from mbrl_ros.core.gp_dynamics import GPDynamics, GPDynamicsConfig, fit_gp_dynamics
from mbrl_ros.core.planning import Planner, PlannerConfig
from mbrl_ros.core.types import TransitionBatch

DT = 0.1
FAST = GPDynamicsConfig(iterations=120, num_random_features=256)
"""Few optimiser steps keep the tests fast; 100 points converge well within them."""


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pendulum(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """A damped pendulum ``(angle, rate)`` with a torque, one explicit Euler step."""
    angle, rate = state[:, 0], state[:, 1]
    accel = -3.0 * np.sin(angle) - 0.2 * rate + action[:, 0]
    return np.stack([angle + DT * rate, rate + DT * accel], axis=1).astype(np.float32)


def pendulum_data(count: int, seed: int, low: float = -2.0, high: float = 2.0
                  ) -> TransitionBatch:
    rng = np.random.default_rng(seed)
    state = rng.uniform(low, high, (count, 2)).astype(np.float32)
    action = rng.uniform(-1.0, 1.0, (count, 1)).astype(np.float32)
    return TransitionBatch(state, action, pendulum(state, action))


def fitted(config: GPDynamicsConfig = FAST, count: int = 100, seed: int = 0) -> GPDynamics:
    model = GPDynamics(2, 1, config)
    fit_gp_dynamics(model, pendulum_data(count, seed), seed=seed)
    return model


@pytest.fixture(scope="module")
def pendulum_model() -> GPDynamics:
    """One fit shared by the tests that only read the model."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = fitted()
    torch.set_num_threads(threads)
    return model


def test_learns_a_nonlinear_system_from_100_points(pendulum_model):
    model = pendulum_model
    test = pendulum_data(200, seed=1, low=-1.8, high=1.8)
    truth = torch.as_tensor(test.next_state)
    mean, var = model.predict(test.state, test.action)
    assert mean.shape == var.shape == (model.num_members, 200, 2)
    delta_scale = float((truth - torch.as_tensor(test.state)).std())
    member_error = float((mean - truth).square().mean().sqrt())
    post_mean, _ = model.posterior(test.state, test.action)
    post_error = float((post_mean + torch.as_tensor(test.state) - truth).square().mean().sqrt())
    assert member_error < 0.05 * delta_scale
    assert post_error < 0.02 * delta_scale
    assert (var > 0).all()


def test_variance_grows_away_from_the_data(pendulum_model):
    model = pendulum_model
    near = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    far = torch.tensor([[6.0, 6.0], [-7.0, 5.0]])
    action = torch.zeros(2, 1)
    _, var_near = model.posterior(near, action)
    _, var_far = model.posterior(far, action)
    assert (var_far > 20.0 * var_near.max()).all()
    spread_near = model.disagreement(model.predict(near, action)[0])
    spread_far = model.disagreement(model.predict(far, action)[0])
    assert (spread_far > 20.0 * spread_near.max()).all()


def test_member_spread_samples_the_posterior_variance():
    """Many members: their mean is the posterior mean, their variance its variance."""
    model = fitted(GPDynamicsConfig(num_members=400, iterations=120))
    state = torch.tensor([[0.5, 0.5], [3.0, 3.0]])
    action = torch.zeros(2, 1)
    members, _ = model.predict(state, action)
    mean, var = model.posterior(state, action)
    delta = members - state
    far = 1  # the second row is off the data: large variance, well resolved by the draws
    ratio = delta[:, far].var(0) / var[far]
    assert ((ratio > 0.7) & (ratio < 1.4)).all()
    assert torch.allclose(delta[:, far].mean(0), mean[far], atol=3.0 * float(var[far].max()
                                                                             ** 0.5 / 20))


def test_sparse_gp_beyond_the_exact_threshold():
    config = GPDynamicsConfig(max_exact_points=60, num_inducing=40, iterations=120,
                              num_random_features=256)
    model = GPDynamics(2, 1, config)
    report = fit_gp_dynamics(model, pendulum_data(100, 0), seed=0)
    assert report.sparse and model.samples.sparse
    assert model.samples.support.shape == (2, 40, 3)
    test = pendulum_data(100, seed=1, low=-1.5, high=1.5)
    post_mean, _ = model.posterior(test.state, test.action)
    truth = torch.as_tensor(test.next_state - test.state)
    assert float((post_mean - truth).square().mean().sqrt()) < 0.1 * float(truth.std())
    _, var_near = model.posterior(torch.zeros(1, 2), torch.zeros(1, 1))
    _, var_far = model.posterior(torch.full((1, 2), 6.0), torch.zeros(1, 1))
    assert (var_far > 10.0 * var_near).all()


def test_hyperparameters_from_a_subset_posterior_on_all_points():
    model = GPDynamics(2, 1, GPDynamicsConfig(max_hyper_points=40, iterations=120,
                                              num_random_features=256))
    report = fit_gp_dynamics(model, pendulum_data(100, 0), seed=0)
    assert not report.sparse and not model.samples.sparse
    assert model.samples.support.shape == (2, 100, 3)
    test = pendulum_data(100, seed=1, low=-1.5, high=1.5)
    post_mean, _ = model.posterior(test.state, test.action)
    truth = torch.as_tensor(test.next_state - test.state)
    assert float((post_mean - truth).square().mean().sqrt()) < 0.05 * float(truth.std())


def test_wrapped_angle_dims():
    """A wheel turned by 0.5 rad per unit action: deltas and predictions wrap across +-pi."""
    rng = np.random.default_rng(0)
    angle = rng.uniform(-math.pi, math.pi, (80, 1)).astype(np.float32)
    action = rng.uniform(-1.0, 1.0, (80, 1)).astype(np.float32)
    turned = ((angle + 0.5 * action + math.pi) % (2 * math.pi) - math.pi).astype(np.float32)
    model = GPDynamics(1, 1, GPDynamicsConfig(angle_wrap=(0,), iterations=80))
    fit_gp_dynamics(model, TransitionBatch(angle, action, turned), seed=0)
    state, turn = torch.tensor([[3.0], [-3.0]]), torch.tensor([[1.0], [-1.0]])
    delta, _ = model.posterior(state, turn)
    assert torch.allclose(delta, 0.5 * turn, atol=0.03)
    mean, _ = model.predict(state, turn)
    expected = torch.tensor([[3.5 - 2 * math.pi], [2 * math.pi - 3.5]])
    assert torch.allclose(mean, expected.expand_as(mean), atol=0.1)


def test_fit_is_deterministic_and_validates():
    quick = GPDynamicsConfig(iterations=20, num_random_features=64)
    a, b = fitted(quick, count=40, seed=3), fitted(quick, count=40, seed=3)
    state, action = torch.rand(5, 2), torch.rand(5, 1)
    assert torch.equal(a.predict(state, action)[0], b.predict(state, action)[0])
    with pytest.raises(RuntimeError):
        GPDynamics(2, 1).predict(state, action)
    with pytest.raises(ValueError):
        GPDynamicsConfig(kernel="linear").validate()
    with pytest.raises(ValueError):
        fit_gp_dynamics(GPDynamics(2, 1), pendulum_data(1, 0))


def test_matern_kernel_learns_too():
    model = fitted(GPDynamicsConfig(kernel="matern52", iterations=120))
    test = pendulum_data(100, seed=1, low=-1.5, high=1.5)
    post_mean, _ = model.posterior(test.state, test.action)
    truth = torch.as_tensor(test.next_state - test.state)
    assert float((post_mean - truth).square().mean().sqrt()) < 0.05 * float(truth.std())


def reach_model() -> GPDynamics:
    """A 2-D point that moves by 0.2 * action, learned from 100 points in [-1, 1]^2."""
    rng = np.random.default_rng(0)
    state = rng.uniform(-1.0, 1.0, (100, 2)).astype(np.float32)
    action = rng.uniform(-1.0, 1.0, (100, 2)).astype(np.float32)
    model = GPDynamics(2, 2, FAST)
    fit_gp_dynamics(model, TransitionBatch(state, action, state + 0.2 * action), seed=0)
    return model


def test_planner_reaches_with_the_gp_and_sees_its_uncertainty():
    model = reach_model()
    config = PlannerConfig(horizon=5, num_samples=128, num_iterations=3,
                           propagation="ensemble", action_low=(-1.0,), action_high=(1.0,))

    def planner_to(goal):
        goal = torch.tensor(goal)

        def cost(states, actions):
            return (states[:, 1:] - goal).square().sum(dim=(1, 2))

        return Planner(model, config, cost_fn=cost)

    on_data = planner_to([0.6, -0.6]).plan(torch.tensor([0.0, 0.0]))
    assert on_data.feasible
    assert on_data.action[0] > 0.5 and on_data.action[1] < -0.5
    assert float((on_data.states[-1] - torch.tensor([0.6, -0.6])).norm()) < 0.15
    off_data = planner_to([4.6, 3.4]).plan(torch.tensor([4.0, 4.0]))
    assert float(off_data.disagreement.mean()) > 20.0 * float(on_data.disagreement.mean())
