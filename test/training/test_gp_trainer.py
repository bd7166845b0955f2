"""``model_kind: gp`` in the trainer: a round fits Gaussian-process dynamics, judges it on the
held-out data and deploys a checkpoint that reloads to the same predictions (the same
checkpoint for the same data and seed, sparse GP included); a restart
warm-starts from it with the GP's own architecture; a stop request cancels the fit; the node
and the offline reader read the ``gp.*`` parameters alike."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import rclpy
import torch
from fake_models import trajectory
from rclpy.context import Context
from rclpy.parameter import Parameter
from sim_bags import REPO, URDF, write_config, write_sim_bag

from mbrl_ros.cli import main
from mbrl_ros.core.checkpoint import load_checkpoint
from mbrl_ros.core.ensemble import EnsembleConfig
from mbrl_ros.core.gp_dynamics import GPDynamics, GPDynamicsConfig
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.core.model_training import TrainingCancelled
from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig
from mbrl_ros.nodes.trainer_node import TrainerNode
from mbrl_ros.training import online_trainer
from mbrl_ros.training.config_file import load_training_setup
from mbrl_ros.training.model_errors import open_loop_mse
from mbrl_ros.training.online_trainer import OnlineTrainer, TrainerConfig, judged_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL_GP = GPDynamicsConfig(num_members=3, iterations=25, num_random_features=64)
ARM_URDF = str(REPO / "urdf" / "arm7.urdf")


def gp_trainer(model_dir: Path, gp: GPDynamicsConfig = SMALL_GP, **overrides) -> OnlineTrainer:
    config = TrainerConfig(**{**dict(data_dir="", model_dir=str(model_dir), model_kind="gp",
                                     min_transitions=50, holdout_fraction=0.2), **overrides})
    return OnlineTrainer(config, EnsembleConfig(), RobotStreamsConfig(joints=("a",)),
                         AlignmentConfig(), nominal=None, device=torch.device("cpu"),
                         gp_config=gp)


def test_a_gp_round_deploys_a_checkpoint_that_reloads_to_the_same_model(tmp_path):
    trainer = gp_trainer(tmp_path)
    trainer.add(trajectory(150, seed=1, noise=1e-3))
    steps = []
    deployment = trainer.run_round(progress=lambda step, metrics: steps.append(step))
    assert deployment is not None and deployment.version == 1
    assert steps[0] == 1 and steps == list(range(1, len(steps) + 1))
    assert isinstance(trainer.model, GPDynamics) and trainer.model.fitted
    assert trainer.model.num_transitions == len(trainer.train_data)
    # judged on the held-out data like any model; a GP fit has no validation split
    assert set(deployment.holdout_errors) == {1, 5, 20}
    assert all(math.isfinite(e) for e in deployment.holdout_errors.values())
    assert deployment.holdout_errors[1] < 0.5  # learned: predicting no change scores ~1
    assert math.isnan(deployment.validation_mse) and math.isnan(deployment.validation_nll)
    assert 0.0 < deployment.calibration.within_2_sigma <= 1.0
    header = load_checkpoint(deployment.path, deployment.sha256).header
    assert header["model_class"] == "GPDynamics" and header["metadata"]["model_kind"] == "gp"
    loaded = load_model(deployment.path, deployment.sha256)
    assert isinstance(loaded, GPDynamics) and isinstance(trainer.deployed, GPDynamics)
    state, action = trajectory(40, seed=9).state, trajectory(40, seed=9).action
    for got, want in zip(loaded.predict(state, action), trainer.model.predict(state, action)):
        assert torch.equal(got, want)
    assert float(loaded.disagreement(loaded.predict(10 * state, action)[0]).max()) > 0.0


def test_a_restarted_gp_trainer_continues_the_deployed_gp_with_its_architecture(tmp_path):
    trainer = gp_trainer(tmp_path)
    trainer.add(trajectory(150, seed=1, noise=1e-3))
    trainer.run_round()
    deployed_hyper = trainer.model.hyper.lengthscale.clone()
    other = GPDynamicsConfig(num_members=5, iterations=10, num_random_features=64)
    restarted = gp_trainer(tmp_path, other, improvement_margin=0.0)
    assert restarted.warm_start() == 1
    assert isinstance(restarted.model, GPDynamics)
    assert restarted.model.num_members == SMALL_GP.num_members  # the checkpoint's
    assert torch.equal(restarted.model.hyper.lengthscale, deployed_hyper)
    restarted.add(trajectory(150, seed=2, noise=1e-3))
    restarted.run_round(force=True)
    assert restarted.deployed_version == 2 and restarted.model.num_members == 3
    assert restarted.epoch <= other.iterations  # the new trainer's fit settings


def test_the_same_data_and_seed_give_the_same_sparse_gp_checkpoint(tmp_path):
    sparse = GPDynamicsConfig(num_members=2, iterations=10, num_random_features=32,
                              max_exact_points=60, num_inducing=16, batch_size=64)
    tensors = []
    for name in ("a", "b"):
        trainer = gp_trainer(tmp_path / name, sparse)
        trainer.add(trajectory(150, seed=1, noise=1e-3))
        torch.randn(3)  # whatever the global generator's state
        deployment = trainer.run_round(force=True)
        assert trainer.model.samples.sparse
        tensors.append(load_checkpoint(deployment.path).tensors)
    assert tensors[0].keys() == tensors[1].keys()
    assert all(torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[0])


def test_a_stop_request_cancels_the_gp_fit_and_keeps_the_deployed_model(tmp_path):
    trainer = gp_trainer(tmp_path)
    trainer.add(trajectory(150, seed=1, noise=1e-3))
    trainer.run_round()
    trainer.add(trajectory(100, seed=3, noise=1e-3))
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(TrainingCancelled):
        trainer.run_round(should_stop=stop)
    assert trainer.model is None and trainer.deployed_version == 1
    assert trainer.epoch == 2  # cancelled two optimiser steps into the fit
    assert [m.version for m in trainer.registry.versions()] == [1]


def test_gp_judgement_in_row_chunks_gives_the_same_errors(tmp_path, monkeypatch):
    trainer = gp_trainer(tmp_path)
    trainer.add(trajectory(150, seed=1, noise=1e-3))
    trainer.run_round()
    model, data = trainer.model, trajectory(60, seed=4)
    whole = open_loop_mse(model, data, 5)
    monkeypatch.setattr(online_trainer, "GP_JUDGE_ELEMENTS", 7 * 3 * 2 * len(trainer.train_data))
    chunked = judged_model(model)
    assert chunked.rows == 7 and chunked.num_members == model.num_members
    assert open_loop_mse(chunked, data, 5) == pytest.approx(whole, rel=1e-5)


def test_model_kind_gp_is_a_trainer_setting():
    assert TrainerConfig(model_kind="gp").validate().model_kind == "gp"
    with pytest.raises(ValueError, match="model_kind must be one of"):
        TrainerConfig(model_kind="kriging").validate()


GP_PARAMETERS = """\
/**/trainer:
  ros__parameters:
    model_period_s: 0.02
    model_kind: gp
    gp:
      num_members: 4
      kernel: matern52
      max_exact_points: 1500
      learning_rate: 2e-2
    gp.iterations: 60
    gp.angle_wrap: [1]
"""


def node_gp_config(params_file: Path, folder: Path) -> tuple:
    """``(trainer config, GP config)`` a real trainer_node reads from ``params_file``."""
    context = Context()
    rclpy.init(args=["--ros-args", "--params-file", str(params_file)], context=context)
    node = None
    try:
        node = TrainerNode(context=context, parameter_overrides=[
            Parameter("urdf", value=ARM_URDF), Parameter("niceness", value=0),
            Parameter("data_dir", value=str(folder / "data")),
            Parameter("model_dir", value=str(folder / "models"))])
        return node.trainer.config, node.trainer.gp_config
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=context)


def test_the_node_and_the_offline_reader_read_gp_parameters_alike(tmp_path):
    path = tmp_path / "gp.yaml"
    path.write_text(GP_PARAMETERS)
    (tmp_path / "data").mkdir()
    setup = load_training_setup(path, ARM_URDF, {
        "niceness": 0, "data_dir": str(tmp_path / "data"), "model_dir": str(tmp_path / "models")})
    threads = torch.get_num_threads()
    try:
        trainer, gp = node_gp_config(path, tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert trainer.model_kind == setup.trainer.model_kind == "gp"
    assert gp == setup.gp
    assert (gp.num_members, gp.kernel, gp.max_exact_points, gp.iterations) == (
        4, "matern52", 1500, 60)
    assert gp.learning_rate == pytest.approx(0.02) and 1 in gp.angle_wrap
    path.write_text(GP_PARAMETERS.replace("kernel: matern52", "kernel: laplace"))
    with pytest.raises(ValueError, match="kernel must be one of"):
        load_training_setup(path, ARM_URDF, {"niceness": 0})


def test_mbrl_ros_train_with_model_kind_gp_writes_a_gp_the_planner_loads(tmp_path, capsys):
    bag = write_sim_bag(tmp_path / "run", "mcap", seed=1, duration_s=5.0, hole_s=None)
    config = write_config(tmp_path / "arm.yaml", min_transitions=50,
                          gp={"num_members": 2, "iterations": 15, "num_random_features": 32})
    out = tmp_path / "models"
    assert main(["train", "--bag", str(bag), "--config", str(config), "--urdf", URDF,
                 "--out", str(out), "--model-kind", "gp", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "trained gp model on" in printed and "fit steps" in printed
    model = load_model(str(out / "model_000001.mbrl"))
    assert isinstance(model, GPDynamics) and model.fitted
    assert (model.state_dim, model.action_dim, model.num_members) == (14, 7, 2)
    assert model.config.iterations == 15 and model.config.num_random_features == 32
