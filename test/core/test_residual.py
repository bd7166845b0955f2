"""ResidualDynamics: analytical nominal + learned correction."""

import math

import numpy as np
import pytest
import torch

from mbrl_ros.core.checkpoint import CheckpointError
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.core.residual import ResidualDynamics
from mbrl_ros.core.types import TransitionBatch

DT = 0.05
CONFIG = EnsembleConfig(hidden_sizes=(32, 32), max_epochs=80, patience=20, batch_size=16,
                        learning_rate=3e-3, num_elites=3, angle_wrap=(0,))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Pendulum:
    """Damped pendulum, semi-implicit Euler; state [theta, omega], action [torque]."""

    def __init__(self, gravity: float, damping: float) -> None:
        self.gravity, self.damping = gravity, damping
        self.descriptor = {"kind": "pendulum", "gravity": gravity, "damping": damping}
        self.calls = 0

    def step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        theta, omega = state[:, 0], state[:, 1]
        accel = -self.gravity * torch.sin(theta) - self.damping * omega + action[:, 0]
        omega = omega + DT * accel
        theta = torch.remainder(theta + DT * omega + math.pi, 2 * math.pi) - math.pi
        return torch.stack([theta, omega], dim=1)


TRUE = Pendulum(gravity=10.0, damping=0.3)
NOMINAL = Pendulum(gravity=9.0, damping=0.1)


def pendulum_batch(num: int, seed: int) -> TransitionBatch:
    rng = np.random.default_rng(seed)
    state = np.stack([rng.uniform(-math.pi, math.pi, num), rng.uniform(-4, 4, num)], 1)
    action = rng.uniform(-2, 2, (num, 1))
    with torch.no_grad():
        next_state = TRUE.step(torch.as_tensor(state, dtype=torch.float32),
                               torch.as_tensor(action, dtype=torch.float32))
    return TransitionBatch(state, action, next_state.numpy())


def wrapped_error(mean: torch.Tensor, target: np.ndarray) -> float:
    diff = mean - torch.as_tensor(target)
    diff[:, 0] = torch.remainder(diff[:, 0] + math.pi, 2 * math.pi) - math.pi
    return float(diff.square().mean())


def test_residual_beats_pure_network_with_little_data():
    train, test = pendulum_batch(40, seed=0), pendulum_batch(500, seed=1)
    residual = ResidualDynamics.create(NOMINAL, 2, 1, CONFIG, seed=0)
    pure = ProbabilisticEnsemble(2, 1, CONFIG, seed=0)
    residual.fit(train, seed=0)
    pure.fit(train, seed=0)
    state, action = torch.as_tensor(test.state), torch.as_tensor(test.action)
    nominal_error = wrapped_error(NOMINAL.step(state, action), test.next_state)
    residual_error = wrapped_error(residual.predict(state, action)[0].mean(0), test.next_state)
    pure_error = wrapped_error(pure.predict(state, action)[0].mean(0), test.next_state)
    assert residual_error < 0.5 * nominal_error
    assert residual_error < 0.1 * pure_error


def test_shared_and_per_member_inputs_agree_and_nominal_runs_once():
    model = ResidualDynamics.create(NOMINAL, 2, 1, CONFIG, seed=0)
    state, action = torch.randn(6, 2), torch.randn(6, 1)
    calls = NOMINAL.calls
    shared = model.predict(state, action)
    assert NOMINAL.calls == calls + 1
    per_member = model.predict(state.expand(5, 6, 2), action.expand(5, 6, 1))
    assert torch.allclose(shared[0], per_member[0]) and torch.equal(shared[1], per_member[1])
    assert shared[0].shape == (5, 6, 2) and model.num_members == 5
    model.use_elites = True
    assert model.num_members == 3 and model.predict(state, action)[0].shape == (3, 6, 2)
    assert model.disagreement(shared[0]).shape == (6,)


def test_save_load_records_nominal(tmp_path):
    model = ResidualDynamics.create(NOMINAL, 2, 1, CONFIG, seed=0)
    model.fit(pendulum_batch(60, seed=2), seed=0, config=EnsembleConfig(
        hidden_sizes=(32, 32), max_epochs=3, num_elites=3, angle_wrap=(0,)))
    path = str(tmp_path / "residual.ckpt")
    sha = model.save(path, metadata={"note": "test"})
    seen = []

    def factory(descriptor):
        seen.append(descriptor)
        return Pendulum(descriptor["gravity"], descriptor["damping"])

    state, action = torch.randn(9, 2), torch.randn(9, 1)
    expected = model.predict(state, action)
    for loaded in (load_model(path, sha, nominal_factory=factory),
                   ResidualDynamics.load(path, nominal=NOMINAL)):
        assert isinstance(loaded, ResidualDynamics)
        got = loaded.predict(state, action)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert seen == [NOMINAL.descriptor]
    with pytest.raises(CheckpointError, match="nominal"):
        load_model(path)
    with pytest.raises(CheckpointError, match="not ProbabilisticEnsemble"):
        ProbabilisticEnsemble.load(path)


def test_nominal_with_wrong_output_shape_is_refused():
    class Broken:
        def step(self, state, action):
            return state[:, :1]
    model = ResidualDynamics.create(Broken(), 2, 1, CONFIG)
    with pytest.raises(ValueError, match="nominal.step returned shape"):
        model.predict(torch.zeros(4, 2), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="step"):
        ResidualDynamics(object(), ProbabilisticEnsemble(2, 1, CONFIG))
