"""Held-out error measures: open-loop errors roll the ensemble mean forward only inside runs of
consecutive transitions, expose a drift that the one-step error cannot see, and the
calibration of the predicted variance is what a Gaussian gives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fake_models import STATE_DIM, FakeModel, trajectory, true_step

from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.training.model_errors import (GAUSSIAN_WITHIN_1_SIGMA, GAUSSIAN_WITHIN_2_SIGMA,
                                            calibration, consecutive_windows, delta_scale,
                                            evenly_spaced, normalised_one_step_mse,
                                            open_loop_mse, run_ids)

BIAS = 0.05
"""Error the drifting and the noisy model add to every prediction [state units]."""
CALIBRATION_ROWS = 20000
"""Transitions of the calibration tests: 40000 errors, sampling error of a share < 0.003."""
SHARE_TOLERANCE = 0.01
"""Allowed difference of a measured share from the Gaussian one."""


def test_windows_never_cross_a_reset_an_episode_change_or_a_dropped_row():
    batch = TransitionBatch.concatenate([trajectory(6, seed=0), trajectory(4, seed=1)])
    assert run_ids(batch).tolist() == [0] * 6 + [1] * 4
    assert consecutive_windows(batch, 1).tolist() == list(range(10))
    assert consecutive_windows(batch, 4).tolist() == [0, 1, 2, 6]
    assert consecutive_windows(batch, 7).tolist() == []
    chained = trajectory(8, seed=2)  # states chain, but the episode ids say two episodes
    chained.episode = np.array([0] * 5 + [1] * 3)
    assert consecutive_windows(chained, 3).tolist() == [0, 1, 2, 5]
    gap = trajectory(8, seed=3)[np.array([0, 1, 2, 4, 5, 6, 7])]  # row 3 dropped
    assert consecutive_windows(gap, 3).tolist() == [0, 3, 4]
    with pytest.raises(ValueError):
        consecutive_windows(batch, 0)


def test_open_loop_error_feeds_the_ensemble_mean_back():
    batch = trajectory(200, seed=4)
    # members off by +-0.3 each: their mean is exact, so every horizon is exact
    exact = FakeModel(true_step, variance=1.0, member_offsets=(0.3, -0.3))
    assert all(open_loop_mse(exact, batch, h) == pytest.approx(0.0, abs=1e-10)
               for h in (1, 5, 20))
    biased = FakeModel(lambda s, a: true_step(s, a) + BIAS)
    assert open_loop_mse(biased, batch, 1) == pytest.approx(
        normalised_one_step_mse(biased, batch), rel=1e-6)
    error = np.zeros(STATE_DIM)
    for _ in range(5):  # the bias propagates through the dynamics and adds up
        error = true_step(error, np.zeros(STATE_DIM)) + BIAS
    expected = np.mean(np.square(error / delta_scale(batch)))
    assert open_loop_mse(biased, batch, 5) == pytest.approx(expected, rel=1e-3)
    assert open_loop_mse(biased, batch, 5, max_windows=7) == pytest.approx(expected, rel=1e-3)


def test_open_loop_error_limits():
    batch = trajectory(10, seed=5)
    assert math.isnan(open_loop_mse(FakeModel(true_step), batch, 11))  # no window that long
    assert open_loop_mse(None, batch, 1) == math.inf
    diverging = FakeModel(lambda s, a: s * 1e30)
    assert open_loop_mse(diverging, batch, 5) == math.inf
    assert evenly_spaced(np.arange(10), 3).tolist() == [0, 4, 9]
    assert evenly_spaced(np.arange(3), None).tolist() == [0, 1, 2]


def test_a_drifting_model_is_worse_at_long_horizons_with_the_same_one_step_error():
    batch = trajectory(400, seed=6)
    drifting = FakeModel(lambda s, a: true_step(s, a) + BIAS)  # always off the same way
    noisy = FakeModel(lambda s, a: true_step(s, a) + BIAS * np.sign(a))  # off either way
    one_step = normalised_one_step_mse(drifting, batch)
    assert normalised_one_step_mse(noisy, batch) == pytest.approx(one_step, rel=1e-4)
    assert open_loop_mse(noisy, batch, 1) == pytest.approx(open_loop_mse(drifting, batch, 1),
                                                           rel=1e-4)
    for horizon in (5, 20):
        assert open_loop_mse(drifting, batch, horizon) > 3 * open_loop_mse(noisy, batch,
                                                                           horizon)


def gaussian_batch(rows: int, std: float, seed: int) -> TransitionBatch:
    """Independent transitions ``next = true_step(state, action) + N(0, std^2)``."""
    rng = np.random.default_rng(seed)
    state = rng.normal(size=(rows, STATE_DIM))
    action = rng.uniform(-1.0, 1.0, (rows, STATE_DIM))
    return TransitionBatch(state, action, true_step(state, action)
                           + rng.normal(0.0, std, (rows, STATE_DIM)))


def test_calibration_of_a_gaussian_model_with_known_variance():
    std = 0.2
    batch = gaussian_batch(CALIBRATION_ROWS, std, seed=7)
    calibrated = calibration(FakeModel(true_step, variance=std ** 2), batch)
    assert calibrated.within_1_sigma == pytest.approx(GAUSSIAN_WITHIN_1_SIGMA,
                                                      abs=SHARE_TOLERANCE)
    assert calibrated.within_2_sigma == pytest.approx(GAUSSIAN_WITHIN_2_SIGMA,
                                                      abs=SHARE_TOLERANCE)
    assert calibrated.variance_ratio == pytest.approx(1.0, abs=0.03)
    # the members' spread counts: aleatoric std^2 - d^2 plus spread d^2 is std^2 again
    spread = 0.6 * std
    members = FakeModel(true_step, variance=std ** 2 - spread ** 2,
                        member_offsets=(spread, -spread))
    assert calibration(members, batch).within_1_sigma == pytest.approx(
        GAUSSIAN_WITHIN_1_SIGMA, abs=SHARE_TOLERANCE)
    # overconfident (predicted std half the true one): P(|z| < 0.5) and 4x the variance
    overconfident = calibration(FakeModel(true_step, variance=(std / 2) ** 2), batch)
    assert overconfident.within_1_sigma == pytest.approx(math.erf(0.5 / math.sqrt(2)),
                                                         abs=SHARE_TOLERANCE)
    assert overconfident.variance_ratio == pytest.approx(4.0, rel=0.03)
    assert "within 1 sigma" in calibrated.summary()


@pytest.mark.parametrize("model", [FakeModel(true_step), FakeModel(true_step, variance=0.0),
                                   None])
def test_calibration_is_nan_without_a_predicted_variance(model):
    found = calibration(model, gaussian_batch(50, 0.1, seed=8))
    values = (found.within_1_sigma, found.within_2_sigma, found.variance_ratio)
    assert all(math.isnan(value) for value in values)


class _WrappingModel:
    """A perfect model of a joint turning by its action each step (state: angle, last step)
    that predicts the angle in [-pi, pi), as a model with ``angle_wrap`` (0,) does."""

    config = type("Config", (), {"angle_wrap": (0,)})()
    device = "cpu"

    def predict(self, state, action):
        step = action[:, 0].double()
        angle = torch.remainder(state[:, 0].double() + step + math.pi, 2 * math.pi) - math.pi
        mean = torch.stack([angle, step], dim=-1)
        return mean[None], torch.full_like(mean[None], 1e-4)


def test_wrapping_angles_are_compared_modulo_a_turn():
    """A continuous joint reported beyond +-pi (7 rad after a turn) against a model that predicts
    it in [-pi, pi): no error, at any horizon, and a calibrated variance."""
    steps = np.random.default_rng(0).uniform(0.1, 0.5, 40)
    angles = 6.0 + np.concatenate([[0.0], np.cumsum(steps)])  # 6 .. about 18 rad
    state = np.column_stack([angles, np.concatenate([[0.0], steps])])
    batch = TransitionBatch(state=state[:-1], action=steps[:, None], next_state=state[1:])
    model = _WrappingModel()
    assert normalised_one_step_mse(model, batch) < 1e-9
    assert open_loop_mse(model, batch, 10) < 1e-9
    assert calibration(model, batch).within_1_sigma == 1.0
    wrapped = batch.next_state.copy()
    wrapped[:, 0] -= 2 * np.pi  # a turn apart: the same change modulo a turn
    np.testing.assert_allclose(
        delta_scale(TransitionBatch(batch.state, batch.action, wrapped), (0,)),
        delta_scale(batch), rtol=1e-6)
