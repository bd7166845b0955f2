"""``mbrl-ros train``: bags (MCAP + sqlite3) -> the trainer node's model and checkpoint format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from sim_bags import REPO, URDF, write_config, write_sim_bag

from mbrl_ros.cli import main
from mbrl_ros.core.checkpoint import load_checkpoint
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.tasks.reach import load_robot, nominal_dynamics
from mbrl_ros.training.config_file import load_training_setup

SEED = 7


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """Two training bags in both storage formats, with a hole each."""
    folder = tmp_path_factory.mktemp("bags")
    torch.set_num_threads(1)
    return [str(write_sim_bag(folder / "run_mcap", "mcap", seed=1, duration_s=14.0)),
            str(write_sim_bag(folder / "run_sqlite", "sqlite3", seed=2, duration_s=14.0))]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return str(write_config(tmp_path_factory.mktemp("config") / "arm.yaml",
                            ensemble={"max_epochs": 4}))


def train(bags, config, out, *extra, progress=False):
    return main(["train", "--bag", *bags, "--config", config, "--urdf", URDF, "--out",
                 str(out), "--seed", str(SEED), *([] if progress else ["--no-progress"]),
                 *extra])


def tensors(path):
    return load_checkpoint(str(path)).tensors


def test_train_writes_checkpoint_the_planner_loads(bags, config, tmp_path, capsys):
    assert train(bags, config, tmp_path / "models", progress=True) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "4/4" in captured.err and "epoch" in captured.err  # the progress bar over epochs
    path = tmp_path / "models" / "model_000001.mbrl"
    assert path.is_file()
    checkpoint = load_checkpoint(str(path))
    assert f"sha256: {checkpoint.sha256}" in out and str(path) in out
    # the alignment report: both bags read, the hole in each split an episode
    assert out.count("read ") == 2 and "breaks {'gap': 2}" in out and "4 episodes" in out
    metadata = checkpoint.header["metadata"]
    assert metadata["joints"] == [f"arm_joint{i}" for i in range(1, 8)]
    assert metadata["model_period_s"] == 0.02 and metadata["model_kind"] == "residual"
    assert [b["name"] for b in metadata["training_bags"]] == ["run_mcap", "run_sqlite"]
    # loaded exactly as planner_node does, with its nominal model
    nominal = nominal_dynamics(load_robot(URDF), 0.02, 4, torch.device("cpu"))
    model = load_model(str(path), expected_sha256=checkpoint.sha256, nominal=nominal)
    assert type(model).__name__ == "ResidualDynamics" and model.num_members == 3
    state = torch.zeros(5, 14)
    mean, var = model.predict(state, torch.ones(5, 7))
    assert mean.shape == (3, 5, 14) and torch.isfinite(mean).all() and (var > 0).all()


def test_same_seed_same_tensors_and_resume_continues(bags, config, tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    assert train(bags, config, first) == 0 and train(bags, config, second) == 0
    a, b = tensors(first / "model_000001.mbrl"), tensors(second / "model_000001.mbrl")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[name], b[name]) for name in a)
    # a damaged newest checkpoint is skipped; --resume warm-starts from v1 and writes v3
    (first / "model_000002.mbrl").write_bytes(b"MBRLCKPT not a checkpoint")
    capsys.readouterr()
    assert train(bags, config, first, "--resume") == 0
    out = capsys.readouterr().out
    assert "resuming from" in out and "model_000001.mbrl" in out and "warm-start model v1" in out
    resumed = load_checkpoint(str(first / "model_000003.mbrl"))
    assert resumed.header["metadata"]["resumed_from"] == 1
    # a fresh run with this seed reproduces v1 exactly, so different weights mean warm start
    assert any(not torch.equal(resumed.tensors[name], a[name]) for name in a)
    # without --resume a fresh model is written as the next version
    assert train(bags, config, first) == 0
    fresh = tensors(first / "model_000004.mbrl")
    assert all(torch.equal(fresh[name], a[name]) for name in a)


def test_single_files_ensemble_kind_and_truncated_bag(bags, config, tmp_path, capsys):
    mcap = next(Path(bags[0]).glob("*.mcap"))
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(mcap.read_bytes()[:int(mcap.stat().st_size * 0.6)])
    db3 = next(Path(bags[1]).glob("*.db3"))
    status = train([str(cut), str(db3)], config, tmp_path / "models", "--model-kind", "ensemble")
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "damaged" in captured.err and "cut.mcap" in captured.err
    checkpoint = load_checkpoint(str(tmp_path / "models" / "model_000001.mbrl"))
    assert checkpoint.header["model_class"] == "ProbabilisticEnsemble"
    # resuming an ensemble folder as a residual model is refused clearly
    assert train(bags, config, tmp_path / "models", "--resume") == 2
    assert "ProbabilisticEnsemble, not a residual model" in capsys.readouterr().err


def test_missing_topic_or_joint_is_a_clean_error(bags, tmp_path, capsys):
    config = write_config(tmp_path / "wrong_topic.yaml", data={"command_topic": "/arm/effort"})
    assert train(bags[:1], str(config), tmp_path / "models") == 2
    err = capsys.readouterr().err
    assert "'/arm/effort' not in the bag; it contains:" in err
    assert "/effort_controller/commands [std_msgs/msg/Float64MultiArray]" in err
    assert "/rosout_text" in err and "Traceback" not in err
    short = write_sim_bag(tmp_path / "six_joints", "mcap", seed=3, duration_s=1.0,
                          state_joints=[f"arm_joint{i}" for i in range(1, 7)])
    good_config = write_config(tmp_path / "good.yaml")
    assert train([str(short)], str(good_config), tmp_path / "models") == 2
    err = capsys.readouterr().err
    assert "joints ['arm_joint7'] never appear on /joint_states" in err
    assert "Traceback" not in err
    assert not (tmp_path / "models" / "model_000001.mbrl").exists()
    # too little data and a missing bag are clean errors as well
    tiny = write_sim_bag(tmp_path / "tiny", "sqlite3", seed=4, duration_s=1.0, hole_s=None)
    assert train([str(tiny)], str(good_config), tmp_path / "models") == 2
    assert "usable transitions; the trainer needs min_transitions=200" in capsys.readouterr().err
    assert train([str(tmp_path / "nope")], str(good_config), tmp_path / "models") == 2
    assert "does not exist" in capsys.readouterr().err


def test_reads_arm7_params_like_the_trainer_node():
    path = REPO / "config" / "arm7.yaml"
    params = yaml.safe_load(path.read_text())["/**/trainer"]["ros__parameters"]
    setup = load_training_setup(path, URDF)
    assert setup.streams.joints == tuple(f"arm_joint{i}" for i in range(1, 8))  # the URDF's
    assert setup.streams.command_topic == params["data"]["command_topic"]
    assert setup.node.model_period_s == params["model_period_s"]
    assert setup.node.command_mode == params["command_mode"]
    assert setup.node.servo_kp == tuple(params["servo_kp"])
    assert setup.streams.command_field == params["data"]["command_field"]
    assert setup.alignment.control_rate_hz == pytest.approx(1.0 / params["model_period_s"])
    for name, value in params["ensemble"].items():
        expected = tuple(value) if isinstance(value, list) else value
        assert getattr(setup.ensemble, name) == expected
    assert setup.trainer.model_kind == params["model_kind"]


def test_bad_parameters_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"parameter\(s\) \['ensemble.num_member'\]"):
        load_training_setup(write_config(tmp_path / "a.yaml", ensemble={"num_member": 3}), URDF)
    with pytest.raises(ValueError, match="must be 1 / model_period_s"):
        load_training_setup(write_config(tmp_path / "b.yaml", alignment={
            "control_rate_hz": 100.0}), URDF)
    with pytest.raises(ValueError, match="must be an integer"):
        load_training_setup(write_config(tmp_path / "c.yaml", min_transitions="many"), URDF)
    with pytest.raises(ValueError, match="no robot URDF"):
        load_training_setup(write_config(tmp_path / "d.yaml"))
    (tmp_path / "e.yaml").write_text("/**/planner:\n  ros__parameters: {horizon: 3}\n")
    with pytest.raises(ValueError, match="no 'trainer' section"):
        load_training_setup(tmp_path / "e.yaml", URDF)
