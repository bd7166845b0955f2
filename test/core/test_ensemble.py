"""ProbabilisticEnsemble and fit_dynamics: fitting, disagreement, angles, NaN handling, seeds."""

import dataclasses
import logging
import math

import numpy as np
import pytest
import torch

from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.model_training import fit_dynamics
from mbrl_ros.core.types import TransitionBatch

SMALL = EnsembleConfig(hidden_sizes=(64, 64), max_epochs=60, patience=20, batch_size=32,
                       learning_rate=3e-3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_batch(num: int, seed: int, low: float = -1.0, high: float = 1.0) -> TransitionBatch:
    """next = state + 0.1 * [sin(3 x0) + a, x1 * a]."""
    rng = np.random.default_rng(seed)
    state = rng.uniform(low, high, (num, 2))
    action = rng.uniform(-1, 1, (num, 1))
    delta = np.stack([np.sin(3 * state[:, 0]) + action[:, 0], state[:, 1] * action[:, 0]], 1)
    return TransitionBatch(state, action, state + 0.1 * delta)


def as_tensors(batch):
    return torch.as_tensor(batch.state), torch.as_tensor(batch.action)


def test_fits_known_function_and_disagreement_grows_away_from_data():
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(2, 1, SMALL, seed=0)
    report = fit_dynamics(model, toy_batch(600, seed=0), seed=0)
    assert report.epochs_run >= 5 and len(report.elites) == SMALL.num_elites
    assert report.num_validation == 60 and report.num_dropped == 0

    test = toy_batch(200, seed=1)
    state, action = as_tensors(test)
    mean, var = model.predict(state, action)
    assert mean.shape == (SMALL.num_members, 200, 2) and var.shape == mean.shape
    assert not mean.requires_grad and bool((var > 0).all())
    delta_scale = np.abs(test.next_state - test.state).mean()
    error = (mean.mean(0).numpy() - test.next_state)
    assert np.abs(error).mean() < 0.1 * delta_scale

    far = toy_batch(200, seed=2, low=4.0, high=6.0)
    near_disagreement = model.disagreement(mean).mean()
    far_disagreement = model.disagreement(model.predict(*as_tensors(far))[0]).mean()
    assert far_disagreement > 20 * near_disagreement


def test_predict_shapes_elites_and_bad_input():
    model = ProbabilisticEnsemble(3, 2, SMALL)
    state, action = torch.zeros(7, 3), torch.zeros(7, 2)
    shared = model.predict(state, action)[0]
    per_member = model.predict(state.expand(5, 7, 3), action.expand(5, 7, 2))[0]
    assert torch.equal(shared, per_member)
    model.use_elites = True
    assert model.num_members == SMALL.num_elites
    assert model.predict(state, action)[0].shape == (SMALL.num_elites, 7, 3)
    assert model.predict(state, action, use_elites=False)[0].shape == (5, 7, 3)
    with pytest.raises(ValueError, match="members"):
        model.predict(state.expand(5, 7, 3), action)
    with pytest.raises(ValueError, match="state_dim"):
        model.predict(torch.zeros(7, 4), action)
    mean = model.predict(state, action, grad=True)[0]
    assert mean.requires_grad


def test_disagreement_definition():
    model = ProbabilisticEnsemble(2, 1, EnsembleConfig(num_members=2, num_elites=1,
                                                       angle_wrap=(1,)))
    model.target_normalizer.std.copy_(torch.tensor([2.0, 1.0]))
    # member means: dim0 differs by 2 (var 1, /4), dim1 angles pi-0.1 and -pi+0.1 (0.2 apart).
    mean = torch.tensor([[[0.0, math.pi - 0.1]], [[2.0, -math.pi + 0.1]]])
    expected = 0.5 * (1.0 / 4.0 + 0.01)
    assert model.disagreement(mean).item() == pytest.approx(expected, rel=1e-4)


def test_wrapping_angle_crosses_boundary():
    rng = np.random.default_rng(0)
    theta = rng.uniform(-math.pi, math.pi, 500)
    omega = rng.uniform(0.5, 1.5, 500)
    state = np.stack([theta, omega], 1)
    next_theta = np.mod(theta + 0.1 * omega + math.pi, 2 * math.pi) - math.pi
    batch = TransitionBatch(state, np.zeros((500, 1)), np.stack([next_theta, omega], 1))
    model = ProbabilisticEnsemble(2, 1, EnsembleConfig(hidden_sizes=(64, 64), max_epochs=40,
                                                       batch_size=64, angle_wrap=(0,)))
    model.fit(batch, seed=0)
    start = torch.tensor([[math.pi - 0.02, 1.0]])
    mean = model.predict(start, torch.zeros(1, 1))[0].mean(0)[0]
    assert -math.pi <= mean[0].item() < -math.pi + 0.2  # wrapped past +pi
    assert abs(mean[0].item() - (-math.pi + 0.08)) < 0.03


def test_nan_rows_are_dropped_with_warning(caplog):
    batch = toy_batch(200, seed=0)
    batch.state[3, 0] = np.nan
    batch.next_state[10, 1] = np.inf
    batch.action[20, 0] = np.nan
    model = ProbabilisticEnsemble(2, 1, EnsembleConfig(hidden_sizes=(16,), max_epochs=3))
    with caplog.at_level(logging.WARNING):
        report = model.fit(batch, seed=0)
    assert report.num_dropped == 3
    assert "dropped 3 of 200" in caplog.text
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model.num_transitions == 197
    all_nan = TransitionBatch(np.full((4, 2), np.nan), np.zeros((4, 1)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2 finite"):
        model.fit(all_nan)


def test_fit_is_deterministic_under_seed_and_warm_starts():
    config = EnsembleConfig(hidden_sizes=(32, 32), max_epochs=30, patience=30, batch_size=32,
                            learning_rate=3e-3)
    one_epoch = dataclasses.replace(config, max_epochs=1)
    batch = toy_batch(200, seed=3)
    state, action = as_tensors(batch)
    outputs, reports = [], []
    for _ in range(2):
        model = ProbabilisticEnsemble(2, 1, config, seed=7)
        reports.append(model.fit(batch, seed=11))
        outputs.append(model.predict(state, action)[0])
    assert torch.equal(outputs[0], outputs[1])
    assert reports[0].val_mse == reports[1].val_mse
    # Warm start: one more epoch on more data starts from the trained weights.
    more = TransitionBatch.concatenate([batch, toy_batch(200, seed=4)])
    warm = model.fit(more, seed=1, config=one_epoch)
    cold = ProbabilisticEnsemble(2, 1, config, seed=7).fit(more, seed=1, config=one_epoch)
    assert warm.best_val_mse < 0.5 * cold.best_val_mse
    with pytest.raises(ValueError, match="architecture"):
        model.fit(more, config=EnsembleConfig(hidden_sizes=(8,)))


def test_progress_callback_and_loss():
    model = ProbabilisticEnsemble(2, 1, EnsembleConfig(hidden_sizes=(16,), max_epochs=4,
                                                       patience=100))
    seen = []
    report = model.fit(toy_batch(100, seed=0), progress=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [1, 2, 3, 4] and report.epochs_run == 4
    assert set(seen[0][1]) == {"train_nll", "train_mse", "val_nll", "val_mse"}
    loss = model.loss(toy_batch(50, seed=5))
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad


@pytest.mark.parametrize("kwargs, message", [
    ({"num_members": 0}, "num_members"), ({"num_elites": 6}, "num_elites"),
    ({"hidden_sizes": ()}, "hidden_sizes"), ({"activation": "swish"}, "activation"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"min_logvar_init": 1.0}, "min_logvar_init"), ({"angle_wrap": (1, 1)}, "angle_wrap"),
    ({"learning_rate": 0.0}, "learning_rate"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EnsembleConfig(**kwargs).validate()
    with pytest.raises(ValueError, match="angle_wrap"):
        ProbabilisticEnsemble(2, 1, EnsembleConfig(angle_wrap=(2,)))


def test_relative_action_feeds_target_errors_and_survives_a_checkpoint(tmp_path):
    config = EnsembleConfig(num_members=2, num_elites=2, hidden_sizes=(8,),
                            relative_action=(0, 1))
    model = ProbabilisticEnsemble(4, 2, config)
    state, action = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[1.5, 1.0]])
    np.testing.assert_allclose(model.encode_inputs(state, action).numpy(),
                               [[1.0, 2.0, 3.0, 4.0, 0.5, -1.0]])
    path = str(tmp_path / "model.mbrl")
    model.save(path)
    loaded = ProbabilisticEnsemble.load(path)
    assert loaded.config.relative_action == (0, 1)
    torch.testing.assert_close(loaded.predict(state, action)[0], model.predict(state, action)[0])
    with pytest.raises(ValueError, match="relative_action needs 2"):
        ProbabilisticEnsemble(4, 2, EnsembleConfig(relative_action=(0,)))
    with pytest.raises(ValueError, match="relative_action needs 2"):
        ProbabilisticEnsemble(4, 2, EnsembleConfig(relative_action=(0, 4)))
