"""The trainer learns the stand task's model in the heading frame (as the planner plans with
it): data moved as a whole in x, y and yaw reaches the network as the same transitions; the
checkpoint holds the plain ensemble, marked ``frame: heading``. The reach task's (no odometry)
models train as they are."""

from __future__ import annotations

import math

import numpy as np
import torch

from mbrl_ros.core.checkpoint import load_checkpoint
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig
from mbrl_ros.tasks.stand import (HeadingFrame, HeadingFrameModel, StandLayout,
                                  from_heading_frame)
from mbrl_ros.training import online_trainer
from mbrl_ros.training.online_trainer import OnlineTrainer, TrainerConfig, uses_heading_frame

JOINTS = ("a", "b")
LAYOUT = StandLayout(len(JOINTS))
SMALL = EnsembleConfig(num_members=2, num_elites=1, hidden_sizes=(16,), max_epochs=2,
                       patience=2, batch_size=32, validation_fraction=0.2)
STAND_STREAMS = RobotStreamsConfig(joints=JOINTS, odom_topic="odom")
ROWS = 120
MOVE = dict(x=3.0, y=-2.0, yaw=2.5)
"""The whole data set moved by this much (metres, radians)."""


def stand_batch(seed: int) -> TransitionBatch:
    """Random stand-layout transitions (unit quaternions, base anywhere)."""
    rng = np.random.default_rng(seed)
    state = rng.normal(size=(ROWS, LAYOUT.state_dim))
    next_state = state + 0.05 * rng.normal(size=state.shape)
    for rows in (state, next_state):
        rows[:, LAYOUT.quaternion] /= np.linalg.norm(rows[:, LAYOUT.quaternion], axis=1,
                                                     keepdims=True)
    action = rng.uniform(-1.0, 1.0, (ROWS, len(JOINTS)))
    return TransitionBatch(state, action, next_state)


def moved(batch: TransitionBatch) -> TransitionBatch:
    """``batch`` with the world moved by ``MOVE`` (base x, y shifted, yaw turned)."""
    frame = HeadingFrame(*(torch.tensor(v, dtype=torch.float64) for v in (
        MOVE["x"], MOVE["y"], math.cos(MOVE["yaw"] / 2), math.sin(MOVE["yaw"] / 2), 1.0)))
    turn = [from_heading_frame(torch.as_tensor(rows), frame, LAYOUT).numpy()
            for rows in (batch.state, batch.next_state)]
    return TransitionBatch(turn[0], batch.action, turn[1])


def trainer(folder, streams: RobotStreamsConfig) -> OnlineTrainer:
    torch.set_num_threads(1)
    config = TrainerConfig(data_dir="", model_dir=str(folder), model_kind="ensemble",
                           min_transitions=50, holdout_fraction=0.2)
    return OnlineTrainer(config, SMALL, streams, AlignmentConfig(), nominal=None,
                         device=torch.device("cpu"))


def test_the_rule_is_odometry_without_imu():
    assert uses_heading_frame(STAND_STREAMS)
    assert not uses_heading_frame(RobotStreamsConfig(joints=JOINTS))
    assert not uses_heading_frame(RobotStreamsConfig(joints=JOINTS, odom_topic="odom",
                                                     imu_topic="imu"))


def test_stand_data_moved_in_x_y_yaw_trains_the_network_on_the_same_transitions(
        tmp_path, monkeypatch):
    fitted = []

    def recording_fit(model, batch, *args, **kwargs):
        fitted.append((model, batch))
        return fit(model, batch, *args, **kwargs)
    fit = online_trainer.fit_dynamics
    monkeypatch.setattr(online_trainer, "fit_dynamics", recording_fit)
    data = stand_batch(0)
    trainers = []
    for name, batch in (("original", data), ("moved", moved(data))):
        engine = trainer(tmp_path / name, STAND_STREAMS)
        engine.add(batch)
        deployment = engine.run_round(force=True)
        assert deployment is not None and isinstance(engine.model, HeadingFrameModel)
        trainers.append((engine, deployment))
    (model_a, batch_a), (model_b, batch_b) = fitted
    assert type(model_a) is ProbabilisticEnsemble and type(model_b) is ProbabilisticEnsemble
    assert not np.allclose(trainers[0][0].train_data.state, trainers[1][0].train_data.state)
    np.testing.assert_allclose(batch_a.state, batch_b.state, atol=1e-5)  # float32 data
    np.testing.assert_allclose(batch_a.next_state, batch_b.next_state, atol=1e-5)  # float32 data
    # the checkpoint is the plain ensemble's, marked; the trainer reloads it in the frame
    path = trainers[0][1].path
    assert type(load_model(path)) is ProbabilisticEnsemble
    assert load_checkpoint(path).header["metadata"]["frame"] == "heading"
    assert isinstance(trainers[0][0].deployed, HeadingFrameModel)


def test_reach_data_trains_the_plain_model(tmp_path):
    rng = np.random.default_rng(1)
    state = rng.normal(size=(ROWS, 2 * len(JOINTS)))
    engine = trainer(tmp_path, RobotStreamsConfig(joints=JOINTS))
    engine.add(TransitionBatch(state, rng.uniform(-1, 1, (ROWS, len(JOINTS))), 0.9 * state))
    assert engine.run_round(force=True) is not None
    assert type(engine.model) is ProbabilisticEnsemble
