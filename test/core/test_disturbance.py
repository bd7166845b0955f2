"""Offset-free MPC: the disturbance estimate removes the steady-state error of a biased model."""

import numpy as np
import pytest
import torch

from mbrl_ros.core.costs import EffortCost, JointPositionCost, TaskCost
from mbrl_ros.core.disturbance import DisturbanceConfig, OffsetDynamics
from mbrl_ros.core.planning import Planner, PlannerConfig

DT = 0.1
DRIFT = 0.02  # what the model does not know: the true system drifts this much per step


class Integrator:
    """Model ``x+ = x + DT * u`` (one member), the plant adds DRIFT per step."""

    num_members, state_dim, action_dim = 1, 1, 1
    device = torch.device("cpu")

    def predict(self, state, action):
        mean = state + DT * action
        mean = mean if mean.dim() == 3 else mean.unsqueeze(0)
        return mean, torch.zeros_like(mean)


def run(offset_free: bool, steps: int = 60) -> float:
    model = Integrator()
    config = DisturbanceConfig(gain=0.5 if offset_free else 0.0, max_offset=(0.1,))
    dynamics = OffsetDynamics(model, config) if offset_free else model
    cost = TaskCost([JointPositionCost([0], [0.0], 100.0, 1), EffortCost(1e-4, 1)])
    planner = Planner(dynamics, PlannerConfig(horizon=5, num_samples=256, num_iterations=3,
                                              init_std=0.5, temperature=0.01,
                                              num_policy_trajectories=0, seed=3), cost)
    x = np.array([0.5], dtype=np.float32)
    for step in range(steps):
        if offset_free:
            dynamics.update(torch.from_numpy(x), step * DT, DT)
        plan = planner.plan(x)
        if offset_free:
            dynamics.expect(plan.states[1], step * DT)
        x = (x + DT * plan.action.numpy() + DRIFT).astype(np.float32)
    return float(abs(x[0]))


def test_offset_free_removes_the_steady_state_error_of_a_biased_model():
    plain, offset_free = run(False), run(True)
    assert plain > 0.5 * DRIFT  # the biased model settles off target by about the drift
    assert offset_free < 0.2 * plain


def _wrapped(**overrides) -> OffsetDynamics:
    return OffsetDynamics(Integrator(), DisturbanceConfig(**{"gain": 0.5, **overrides}))


def test_update_needs_a_prediction_one_period_old():
    dynamics = _wrapped()
    assert not dynamics.update(torch.tensor([1.0]), 0.0, DT)  # nothing expected yet
    dynamics.expect(torch.tensor([0.0]), 0.0)
    assert not dynamics.update(torch.tensor([0.01]), 3 * DT, DT)  # a missed tick: skipped
    dynamics.expect(torch.tensor([0.0]), 0.0)
    assert dynamics.update(torch.tensor([0.01]), DT, DT)
    assert dynamics.offset.item() == pytest.approx(0.005)
    mean, _ = dynamics.predict(torch.tensor([[0.0]]), torch.tensor([[0.0]]))
    assert mean.item() == pytest.approx(0.005)


def test_bound_jump_and_nan_handling():
    dynamics = _wrapped(max_offset=(0.01,), jump_threshold=0.3)
    for step in range(20):
        dynamics.expect(torch.tensor([0.0]), step * DT)
        dynamics.update(torch.tensor([0.1]), (step + 1) * DT, DT)
    assert dynamics.offset.item() == pytest.approx(0.01)  # clamped
    dynamics.expect(torch.tensor([0.0]), 0.0)
    dynamics.update(torch.tensor([5.0]), DT, DT)  # a reset or a push, not a bias
    assert dynamics.offset.item() == 0.0
    dynamics.offset += 0.005
    dynamics.expect(torch.tensor([0.0]), 0.0)
    dynamics.update(torch.tensor([float("nan")]), DT, DT)
    assert dynamics.offset.item() == 0.0


def test_config_validation_and_sizes():
    with pytest.raises(ValueError, match="gain"):
        DisturbanceConfig(gain=1.5).validate()
    with pytest.raises(ValueError, match="max_offset"):
        DisturbanceConfig(max_offset=(-1.0,)).validate()
    with pytest.raises(ValueError, match="1 or 1 values"):
        OffsetDynamics(Integrator(), DisturbanceConfig(gain=0.1, max_offset=(0.1, 0.2)))
    wrapped = _wrapped()
    assert (wrapped.num_members, wrapped.state_dim, wrapped.action_dim) == (1, 1, 1)


def test_wrapper_passes_prediction_options_to_the_model():
    """Options such as ``grad`` (asked by gradient planners) reach the wrapped model."""

    class Recording(Integrator):
        def predict(self, state, action, **kwargs):
            self.kwargs = kwargs
            return super().predict(state, action)

    model = Recording()
    wrapped = OffsetDynamics(model, DisturbanceConfig(gain=0.5))
    wrapped.predict(torch.zeros(1, 1), torch.zeros(1, 1), grad=True)
    assert model.kwargs == {"grad": True}
