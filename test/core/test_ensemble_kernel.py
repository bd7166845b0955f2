"""The planners' fused rollout kernel: the same next-state means as ``predict``, and the
bfloat16 setting used only when its check against float32 passes."""

import math

import pytest
import torch

from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.planning import Planner, PlannerConfig, planner as planner_module
from mbrl_ros.core.planning.rollout import mean_kernel, propagate
from mbrl_ros.core.residual import ResidualDynamics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STATE_DIM, ACTION_DIM = 6, 3
ENCODINGS = {
    "plain": {},
    "angles": dict(angle_wrap=(0, 2)),
    "relative actions": dict(relative_action=(0, 1, 2)),
    "angles, relative actions, relu": dict(angle_wrap=(1,), relative_action=(0, 1, 2),
                                           activation="relu"),
}
FLOAT32_ERROR = 2e-5
"""The kernel reorders float32 sums (folded normalisation): this close to ``predict``."""


def fitted_ensemble(seed: int = 0, **config) -> ProbabilisticEnsemble:
    """An untrained ensemble with non-trivial normalisers (so folding them matters)."""
    torch.manual_seed(seed)
    model = ProbabilisticEnsemble(STATE_DIM, ACTION_DIM, EnsembleConfig(
        num_members=4, num_elites=3, hidden_sizes=(32, 32), **config), seed=seed)
    model.input_normalizer.fit(3.0 * torch.randn(200, model.input_dim) + 1.0)
    model.target_normalizer.fit(0.2 * torch.randn(200, STATE_DIM) + 0.1)
    return model


class LinearNominal:
    """A nominal model the residual adds its delta to."""

    def step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return 0.9 * state + 0.1 * torch.cat([action, action], dim=-1)


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("elites", [False, True])
@pytest.mark.parametrize("chunk_rows", [0, 7])
def test_kernel_step_equals_predict_mean(encoding, elites, chunk_rows):
    model = fitted_ensemble(**ENCODINGS[encoding])
    model.use_elites = elites
    generator = torch.Generator().manual_seed(1)
    state = torch.randn(model.num_members, 20, STATE_DIM, generator=generator)
    action = torch.randn(20, ACTION_DIM, generator=generator)
    with torch.inference_mode():
        expected, _ = model.predict(state, action)
        kernel = model.mean_kernel(chunk_rows=chunk_rows)
        assert kernel.num_members == model.num_members
        got = kernel.step(state, action)
        shared = kernel.step(state[0], action)  # one state for every member
        expected_shared, _ = model.predict(state[0], action)
    assert torch.allclose(got, expected, atol=FLOAT32_ERROR, rtol=0.0)
    assert torch.allclose(shared, expected_shared, atol=FLOAT32_ERROR, rtol=0.0)
    if ENCODINGS[encoding].get("angle_wrap"):
        angles = list(ENCODINGS[encoding]["angle_wrap"])
        assert bool((got[..., angles].abs() <= math.pi).all())


def test_residual_kernel_adds_the_nominal_prediction():
    model = ResidualDynamics(LinearNominal(), fitted_ensemble(angle_wrap=(1,)))
    generator = torch.Generator().manual_seed(2)
    state = torch.randn(model.num_members, 10, STATE_DIM, generator=generator)
    action = torch.randn(model.num_members, 10, ACTION_DIM, generator=generator)
    with torch.inference_mode():
        expected, _ = model.predict(state, action)
        got = model.mean_kernel().step(state, action)
    assert torch.allclose(got, expected, atol=FLOAT32_ERROR, rtol=0.0)


@pytest.mark.parametrize("propagation", ["ensemble", "mean", "partition"])
def test_propagation_with_the_kernel_matches_predict(propagation):
    model = fitted_ensemble(angle_wrap=(0,), relative_action=(0, 1, 2))
    generator = torch.Generator().manual_seed(3)
    state = torch.randn(STATE_DIM, generator=generator)
    actions = torch.randn(30, 8, ACTION_DIM, generator=generator)
    with torch.inference_mode():
        reference = propagate(model, state, actions, propagation)
        fused = propagate(model, state, actions, propagation, kernel=mean_kernel(model))
    assert fused.states.shape == reference.states.shape
    error = fused.states - reference.states
    error[..., 0] = torch.remainder(error[..., 0] + math.pi, 2 * math.pi) - math.pi
    assert float(error.abs().max()) < 1e-4
    assert torch.allclose(fused.disagreement, reference.disagreement, atol=1e-5)


def test_kernel_is_a_snapshot_of_the_weights():
    model = fitted_ensemble()
    state, action = torch.zeros(5, STATE_DIM), torch.ones(5, ACTION_DIM)
    with torch.no_grad():
        kernel = model.mean_kernel()
        before = kernel.step(state, action).clone()
        model.net.biases[-1].add_(1.0)
        assert torch.equal(kernel.step(state, action), before)
        assert not torch.allclose(model.mean_kernel().step(state, action), before)


def planner(bf16: bool) -> Planner:
    model = fitted_ensemble(seed=4).eval()
    target = torch.full((STATE_DIM,), 0.5)

    def cost(states, actions):
        return (states - target).square().sum(dim=(1, 2)) + 1e-3 * actions.square().sum((1, 2))

    config = PlannerConfig(horizon=6, num_samples=64, num_iterations=2,
                           num_policy_trajectories=0, action_low=(-1.0,), action_high=(1.0,),
                           bf16_rollouts=bf16, seed=5)
    return Planner(model, config, cost_fn=cost)


def test_bf16_rule_needs_agreement_and_speed():
    tolerance = planner_module.BF16_ACTION_TOLERANCE
    assert planner_module.bf16_worth_it(0.5 * tolerance, 1.0, 2.0)
    assert not planner_module.bf16_worth_it(2.0 * tolerance, 1.0, 2.0)
    assert not planner_module.bf16_worth_it(0.5 * tolerance, 2.0, 1.0)  # no bf16 hardware


def test_bf16_rollouts_are_used_when_the_check_passes(monkeypatch):
    # how fast bfloat16 is depends on the machine: judge agreement only
    monkeypatch.setattr(planner_module, "bf16_worth_it",
                        lambda error, *_: error <= planner_module.BF16_ACTION_TOLERANCE)
    state = torch.full((STATE_DIM,), 0.1)
    full, low = planner(False), planner(True)
    for _ in range(3):
        expected, got = full.plan(state), low.plan(state)
    assert low._bf16_ok and low._bf16_checked is low.dynamics
    # the check's promise: the first action within the tolerance of the action range
    span = 2.0
    assert float((got.action - expected.action).abs().max()) / span <= 10 * \
        planner_module.BF16_ACTION_TOLERANCE
    assert not torch.equal(got.actions, expected.actions)  # bf16 did score the samples


def test_bf16_rollouts_stay_off_when_the_check_fails(monkeypatch):
    monkeypatch.setattr(planner_module, "BF16_ACTION_TOLERANCE", -1.0)
    state = torch.full((STATE_DIM,), 0.1)
    full, low = planner(False), planner(True)
    for _ in range(3):
        expected, got = full.plan(state), low.plan(state)
        # the check restores the noise generator: the float32 plan is unchanged by it
        assert torch.equal(got.actions, expected.actions)
    assert not low._bf16_ok
