"""``mbrl-ros evaluate``: open-loop error, calibration, disagreement, URDF baseline, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sim_bags import URDF, write_config, write_sim_bag

from mbrl_ros.cli import main
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.data.alignment import AlignedDataset, AlignmentReport
from mbrl_ros.training.evaluate_command import evaluate_model, rollout_windows

PERIOD_NS = 20_000_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A residual model trained on two simulated runs, and a third run held out."""
    folder = tmp_path_factory.mktemp("evaluate")
    torch.set_num_threads(1)
    train_bags = [str(write_sim_bag(folder / "train_a", "mcap", seed=1)),
                  str(write_sim_bag(folder / "train_b", "sqlite3", seed=2))]
    held_out = str(write_sim_bag(folder / "held_out", "mcap", seed=3))
    config = str(write_config(folder / "arm.yaml", ensemble={"max_epochs": 25}))
    assert main(["train", "--bag", *train_bags, "--config", config, "--urdf", URDF, "--out",
                 str(folder / "models"), "--seed", "0", "--no-progress"]) == 0
    return {"folder": folder, "train": train_bags, "held_out": held_out, "config": config,
            "checkpoint": str(folder / "models" / "model_000001.mbrl")}


def evaluate(trained, bags, out, *extra):
    return main(["evaluate", "--model", trained["checkpoint"], "--bag", *bags, "--config",
                 trained["config"], "--urdf", URDF, "--out", str(out), *extra])


def test_residual_model_beats_urdf_model_and_report_is_written(trained, tmp_path, capsys):
    out = tmp_path / "report"
    assert evaluate(trained, [trained["held_out"]], out) == 0
    captured = capsys.readouterr()
    assert "were used to train" not in captured.err
    printed = captured.out
    for title in ("open-loop position RMSE [rad]", "open-loop velocity RMSE [rad/s]",
                  "h=20 URDF", "one-step calibration", "disagreement vs one-step error"):
        assert title in printed
    assert all(f"arm_joint{i}" in printed for i in range(1, 8))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["horizons"] == [1, 5, 20]
    model, urdf = metrics["model"]["normalised_mse"], metrics["baseline"]["normalised_mse"]
    # the learned correction of friction, damping, payload and gain pays off
    assert model[0] < 0.5 * urdf[0]
    assert model[4] < urdf[4]
    rmse_model = np.array(metrics["model"]["rmse"])
    rmse_urdf = np.array(metrics["baseline"]["rmse"])
    assert rmse_model.shape == (20, 14)
    assert np.mean(rmse_model[0, 7:] < rmse_urdf[0, 7:]) >= 5 / 7  # velocities, most joints
    # 978 transitions in 2 episodes (the hole); fewer rollouts reach 20 steps
    assert metrics["num_episodes"] == 2
    assert metrics["windows"][0] == metrics["num_transitions"] > metrics["windows"][19] > 0
    shares_1, shares_2 = np.array(metrics["within_1_sigma"]), np.array(metrics["within_2_sigma"])
    assert ((0 <= shares_1) & (shares_1 <= shares_2) & (shares_2 <= 1)).all()
    assert 0.3 < shares_1.mean() < 0.95
    assert np.all(np.diff(metrics["coverage_observed"]) >= 0)
    assert -1 <= metrics["disagreement_spearman"] <= 1
    report = (out / "report.md").read_text()
    for name in ("error_vs_horizon.png", "calibration.png", "disagreement.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({name})" in report
    assert "## Summary" in report and "lower" in report and "arm_joint7" in report
    assert "<table>" in (out / "report.html").read_text()


def test_training_bags_are_flagged_and_bad_input_is_a_clean_error(trained, tmp_path, capsys):
    assert evaluate(trained, trained["train"][:1], tmp_path / "r", "--horizons", "1", "3") == 0
    captured = capsys.readouterr()
    assert "bags ['train_a'] were used to train this model" in captured.err
    assert "h=3 URDF" in captured.out
    wrong = write_config(tmp_path / "wrong.yaml", data={"state_topic": "/robot/joint_states"})
    assert main(["evaluate", "--model", trained["checkpoint"], "--bag", trained["held_out"],
                 "--config", str(wrong), "--urdf", URDF]) == 2
    err = capsys.readouterr().err
    assert "'/robot/joint_states' not in the bag; it contains:" in err and "Traceback" not in err
    assert main(["evaluate", "--model", str(tmp_path / "missing.mbrl"), "--bag",
                 trained["held_out"], "--config", trained["config"], "--urdf", URDF]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err
    other_period = write_config(tmp_path / "period.yaml", model_period_s=0.01,
                                alignment={"control_rate_hz": 100.0})
    assert main(["evaluate", "--model", trained["checkpoint"], "--bag", trained["held_out"],
                 "--config", str(other_period), "--urdf", URDF]) == 2
    assert "the checkpoint steps 0.02 s" in capsys.readouterr().err


class ScriptedModel:
    """A two-member "ensemble" for exact metric checks: ``next = a * state + action``,
    member means shifted by +-offset (times ``|action[0]|`` when ``by_action``), each with
    variance ``variance``."""

    def __init__(self, a: float, offset: float, variance: float, by_action: bool = False):
        self.a, self.offset, self.variance, self.by_action = a, offset, variance, by_action
        self.device = torch.device("cpu")

    def predict(self, state, action):
        action = torch.as_tensor(action)
        mean = self.a * torch.as_tensor(state) + action
        shifts = torch.tensor([-self.offset, self.offset]).view(2, 1, 1)
        if self.by_action:
            shifts = shifts * action[:, :1].abs().unsqueeze(0)
        means = mean.unsqueeze(0) + shifts
        return means, torch.full_like(means, self.variance)

    def disagreement(self, mean):
        return mean.var(dim=0, unbiased=False).mean(dim=-1)


class StillNominal:
    """The "no motion" model."""

    def step(self, state, action):
        return state.clone()


def synthetic(a: float = 0.9, noise: float = 0.1, rows: int = 20000, seed: int = 0,
              by_action: bool = False):
    """One long episode of ``x' = a x + u + noise`` (noise times ``|u[0]|`` when
    ``by_action``), with a tick gap in the middle."""
    rng = np.random.default_rng(seed)
    action = rng.normal(size=(rows, 2)).astype(np.float32)
    state = np.zeros((rows + 1, 2), dtype=np.float32)
    scale = noise * (np.abs(action[:, :1]) if by_action else np.ones((rows, 1)))
    for t in range(rows):
        state[t + 1] = a * state[t] + action[t] + scale[t] * rng.normal(size=2)
    ticks = np.arange(rows, dtype=np.int64) * PERIOD_NS
    ticks[rows // 2:] += 10 * PERIOD_NS  # a hole: rollouts must not cross it
    batch = TransitionBatch(state=state[:-1], action=action, next_state=state[1:],
                            episode=np.zeros(rows, dtype=np.int64))
    return AlignedDataset(batch, ("x", "y"), ("u", "v"), ticks, np.zeros(rows, np.int64), None,
                          AlignmentReport())


def test_metrics_are_exact_on_a_known_system():
    data = synthetic()
    remaining = rollout_windows(data, PERIOD_NS)
    half = len(data.batch) // 2
    assert remaining[0] == half and remaining[half - 1] == 1 and remaining[half] == half
    # member spread 0.06 and aleatoric 0.08^2: total sigma 0.1 = the true noise
    measures = evaluate_model(ScriptedModel(0.9, 0.06, 0.0064), StillNominal(), data,
                              PERIOD_NS)
    # "no motion" scores exactly 1 at every horizon by construction of the normalisation
    assert measures["baseline"].normalised_mse == pytest.approx([1.0] * 20, rel=1e-5)
    # the true model's one-step RMSE is the noise level; windows shrink with the horizon
    assert np.array(measures["model"].rmse[0]) == pytest.approx([0.1, 0.1], rel=0.03)
    assert measures["windows"][19] == len(data.batch) - 2 * 19
    assert 0.67 < np.mean(measures["within_1_sigma"]) < 0.70
    assert 0.945 < np.mean(measures["within_2_sigma"]) < 0.965
    assert measures["coverage_observed"] == pytest.approx(measures["coverage_levels"], abs=0.02)
    # constant disagreement carries no information about the error ...
    assert abs(measures["disagreement_spearman"]) < 0.05
    # ... disagreement that grows where the noise grows does
    noisy = synthetic(by_action=True)
    informed = evaluate_model(ScriptedModel(0.9, 0.1, 1e-4, by_action=True), StillNominal(),
                              noisy, PERIOD_NS)
    assert informed["disagreement_spearman"] > 0.4
    low, *_, high = informed["disagreement_bin_error"]
    assert high > 10 * low
    # an overconfident model (sigma 0.05 for noise 0.1) is seen as such
    tight = evaluate_model(ScriptedModel(0.9, 0.0, 0.0025), StillNominal(), data, PERIOD_NS)
    assert np.mean(tight["within_1_sigma"]) < 0.45
    # a wrong model's error grows with the horizon
    wrong = evaluate_model(ScriptedModel(3.0, 0.0, 0.01), StillNominal(), data, PERIOD_NS)
    assert wrong["model"].normalised_mse[4] > wrong["model"].normalised_mse[0] > 1.0


class WrappingRotor:
    """A rotor turning 0.3 rad per step (dim 0, a continuous joint's angle, predicted in
    [-pi, pi) as the learned models do) and its speed (dim 1)."""

    class config:  # noqa: N801 - what angle_dims reads of a model
        angle_wrap = (0,)

    device = torch.device("cpu")

    def predict(self, state, action):
        state = torch.as_tensor(state)
        angle = torch.remainder(state[:, :1] + 0.3 + torch.pi, 2 * torch.pi) - torch.pi
        mean = torch.cat([angle, state[:, 1:]], -1).unsqueeze(0)
        return mean, torch.full_like(mean, 1e-4)

    def disagreement(self, mean):
        return mean.var(dim=0, unbiased=False).mean(dim=-1)


def test_continuous_angles_are_compared_modulo_a_turn():
    """The robot reports the angle as it accumulates (many turns), the model predicts it
    wrapped: the evaluation sees the exact model, not errors of whole turns."""
    rows = 400
    angle = 0.3 * np.arange(rows + 1, dtype=np.float64)  # 19 turns, never wrapped
    state = np.stack([angle, np.full(rows + 1, 0.3 / 0.02)], 1).astype(np.float32)
    batch = TransitionBatch(state=state[:-1], action=np.zeros((rows, 1), np.float32),
                            next_state=state[1:], episode=np.zeros(rows, dtype=np.int64))
    data = AlignedDataset(batch, ("q", "qd"), ("u",), np.arange(rows, dtype=np.int64)
                          * PERIOD_NS, np.zeros(rows, np.int64), None, AlignmentReport())
    measures = evaluate_model(WrappingRotor(), StillNominal(), data, PERIOD_NS)
    assert max(measures["model"].normalised_mse) < 1e-6
    assert max(max(r) for r in measures["model"].rmse) < 1e-3
    # "no motion" scores 1 on the angle (its changes are taken modulo a turn too) and 0 on
    # the constant speed
    assert measures["baseline"].normalised_mse == pytest.approx([0.5] * 20, rel=1e-4)
