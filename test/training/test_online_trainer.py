"""The online trainer's rounds can be cancelled (prompt node shutdown) without losing the
deployed model, and its checkpoints survive a SIGKILL at any moment of a write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl_ros.core.checkpoint import file_sha256, load_checkpoint
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.core.model_registry import CHECKPOINT_PATTERN, ModelRegistry
from mbrl_ros.core.model_training import TrainingCancelled, fit_dynamics
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig
from mbrl_ros.training.online_trainer import OnlineTrainer, TrainerConfig

REPO = Path(__file__).resolve().parents[2]
STATE_DIM, ACTION_DIM = 2, 1
SMALL = EnsembleConfig(num_members=2, num_elites=1, hidden_sizes=(16,), max_epochs=3,
                       patience=3, batch_size=32, validation_fraction=0.2)
WRITER_START_TIMEOUT_S = 60.0
"""Longest wait for the checkpoint-writing child to import torch and write its first file."""


def linear_batch(rows: int, seed: int) -> TransitionBatch:
    """Transitions of a damped linear system (learnable in a few epochs)."""
    rng = np.random.default_rng(seed)
    state = rng.normal(size=(rows, STATE_DIM))
    action = rng.uniform(-1.0, 1.0, (rows, ACTION_DIM))
    next_state = state @ np.array([[0.9, 0.1], [-0.1, 0.9]]) + 0.1 * action
    return TransitionBatch(state, action, next_state + rng.normal(0, 1e-3, next_state.shape))


def make_trainer(model_dir: Path, ensemble: EnsembleConfig = SMALL) -> OnlineTrainer:
    torch.set_num_threads(1)
    config = TrainerConfig(data_dir="", model_dir=str(model_dir), model_kind="ensemble",
                           min_transitions=50, holdout_fraction=0.2)
    return OnlineTrainer(config, ensemble, RobotStreamsConfig(joints=("a",)), AlignmentConfig(),
                         nominal=None, device=torch.device("cpu"))


class StopAfter:
    """``should_stop`` that turns True on its ``calls``-th call."""

    def __init__(self, calls: int) -> None:
        self.calls, self.seen = calls, 0

    def __call__(self) -> bool:
        self.seen += 1
        return self.seen >= self.calls


def test_fit_checks_should_stop_before_every_minibatch():
    model = ProbabilisticEnsemble(STATE_DIM, ACTION_DIM, SMALL, seed=0)
    batch = linear_batch(200, seed=0)
    epochs = []
    minibatches_per_epoch = -(-160 // SMALL.batch_size)  # 200 rows, 20 % for validation
    stop = StopAfter(minibatches_per_epoch + 2)  # the 3rd minibatch of epoch 2
    with pytest.raises(TrainingCancelled):
        fit_dynamics(model, batch, seed=0, should_stop=stop,
                     progress=lambda epoch, metrics: epochs.append(epoch))
    assert epochs == [1] and stop.seen == minibatches_per_epoch + 2
    never = StopAfter(10**9)
    report = fit_dynamics(model, batch, seed=0, should_stop=never)
    assert report.epochs_run == SMALL.max_epochs
    assert never.seen == SMALL.max_epochs * minibatches_per_epoch


def test_cancelled_round_discards_the_candidate_and_keeps_the_deployed_model(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.add(linear_batch(300, seed=1))
    first = trainer.run_round()
    assert first is not None and first.version == 1
    deployed_sha = file_sha256(first.path)

    trainer.add(linear_batch(300, seed=2))
    with pytest.raises(TrainingCancelled):
        trainer.run_round(should_stop=StopAfter(3))
    assert trainer.model is None  # the partly trained candidate is gone
    assert trainer.deployed_version == 1 and trainer.rounds == 1
    assert trainer.stats.rounds_cancelled == 1 and not trainer.training
    assert [m.version for m in trainer.registry.versions()] == [1]
    assert file_sha256(first.path) == deployed_sha

    # the next round refits, warm-started from the deployed checkpoint's weights
    starts = []
    original = trainer._starting_model

    def starting_model(*dims):
        model = original(*dims)
        starts.append([p.detach().clone() for p in model.parameters()])
        return model

    trainer._starting_model = starting_model
    trainer.run_round()
    assert trainer.rounds == 2 and len(starts) == 1
    deployed = load_model(first.path)
    assert all(torch.equal(a, b) for a, b in zip(starts[0], deployed.parameters()))


def test_a_stop_after_training_still_discards_the_candidate(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.add(linear_batch(300, seed=1))
    epochs = []  # stop requested once the last epoch has finished: only the check after
    with pytest.raises(TrainingCancelled):  # the held-out evaluation can see it
        trainer.run_round(progress=lambda epoch, metrics: epochs.append(epoch),
                          should_stop=lambda: len(epochs) == SMALL.max_epochs)
    assert epochs == list(range(1, SMALL.max_epochs + 1))
    assert trainer.model is None and trainer.deployed_version == 0
    assert trainer.registry.versions() == []


def test_rejected_rounds_and_round_statistics_are_counted(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.add(linear_batch(300, seed=1))
    assert trainer.run_round() is not None
    assert trainer.stats.last_round_s > 0 and np.isfinite(trainer.stats.last_holdout_error)
    assert np.isfinite(trainer.stats.last_validation_mse)
    trainer.config = TrainerConfig(**{**trainer.config.__dict__, "improvement_margin": 0.99})
    trainer.add(linear_batch(100, seed=3))
    assert trainer.run_round() is None  # would have to be 100x better
    assert trainer.stats.rounds_rejected == 1 and trainer.deployed_version == 1


def test_a_warm_started_model_trains_with_the_trainers_own_settings(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.add(linear_batch(300, seed=1))
    trainer.run_round()  # v1, trained (and saved) with max_epochs=3
    longer = EnsembleConfig(**{**SMALL.__dict__, "max_epochs": 5, "patience": 5})
    restarted = make_trainer(tmp_path, longer)
    assert restarted.warm_start() == 1
    assert restarted.model.ensemble.config.max_epochs == SMALL.max_epochs
    restarted.add(linear_batch(300, seed=2))
    restarted.run_round()
    assert restarted.epoch == longer.max_epochs


# -- SIGKILL while checkpoints are written -------------------------------------------------

WRITER = textwrap.dedent("""
    import os, sys, time
    import torch
    from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
    from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig
    from mbrl_ros.training.online_trainer import OnlineTrainer, TrainerConfig

    model_dir, hang_in_rename = sys.argv[1], sys.argv[2] == "hang"
    torch.set_num_threads(1)
    ensemble = EnsembleConfig(num_members=2, num_elites=1, hidden_sizes=(512, 512, 512))
    trainer = OnlineTrainer(
        TrainerConfig(data_dir="", model_dir=model_dir, model_kind="ensemble"), ensemble,
        RobotStreamsConfig(joints=("a",)), AlignmentConfig(), None, torch.device("cpu"))
    trainer.model = ProbabilisticEnsemble(14, 7, ensemble, seed=0)
    replace = os.replace

    def slow_replace(source, target):
        if hang_in_rename and trainer.deployed_version >= 1:
            print("renaming", flush=True)
            time.sleep(60)
        replace(source, target)

    os.replace = slow_replace
    while True:
        deployment = trainer.save_now()  # the node's ~/save_now path: the next version
        print("saved", deployment.version, deployment.sha256, flush=True)
        with torch.no_grad():
            for parameter in trainer.model.parameters():
                parameter.add_(0.01)
""")


def run_writer_until_killed(model_dir: Path, mode: str, kill_after_s: float) -> dict:
    """Start the writer, SIGKILL it ``kill_after_s`` after its first checkpoint (``mode``
    "hang": when it is about to rename its second one); returns ``{version: sha256}`` it
    reported as written."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(model_dir), mode], env=env,
                             stdout=subprocess.PIPE, text=True)
    saved = {}
    try:
        deadline = time.monotonic() + WRITER_START_TIMEOUT_S
        line = child.stdout.readline()
        assert line.startswith("saved"), line
        saved[int(line.split()[1])] = line.split()[2]
        if mode == "hang":
            assert child.stdout.readline() == "renaming\n"
        else:
            time.sleep(kill_after_s)
        assert time.monotonic() < deadline
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    for line in rest.splitlines():
        if line.startswith("saved"):
            saved[int(line.split()[1])] = line.split()[2]
    assert child.returncode == -signal.SIGKILL
    return saved


def assert_only_valid_checkpoints(model_dir: Path, saved: dict) -> int:
    """Every file named as a complete checkpoint loads and passes its sha256 checks; returns
    the newest version the registry (the trainer's warm start) picks."""
    complete = [p for p in model_dir.iterdir() if CHECKPOINT_PATTERN.match(p.name)]
    assert complete
    for path in complete:
        checkpoint = load_checkpoint(str(path))  # checks the data section's sha256
        version = int(CHECKPOINT_PATTERN.match(path.name).group(1))
        if version in saved:
            assert checkpoint.sha256 == saved[version]
        assert load_model(str(path), expected_sha256=checkpoint.sha256) is not None
    newest = ModelRegistry(model_dir).newest_valid(lambda p: load_checkpoint(str(p)))
    assert newest is not None
    assert newest[0] == max(int(CHECKPOINT_PATTERN.match(p.name).group(1)) for p in complete)
    return newest[0]


def test_sigkill_before_the_rename_leaves_the_previous_version_newest(tmp_path):
    saved = run_writer_until_killed(tmp_path, "hang", 0.0)
    assert saved.keys() == {1}
    leftovers = [p for p in tmp_path.iterdir() if not CHECKPOINT_PATTERN.match(p.name)]
    assert leftovers and all(p.name.startswith(".") for p in leftovers)  # the unrenamed temp
    assert leftovers[0].stat().st_size > 0
    assert assert_only_valid_checkpoints(tmp_path, saved) == 1


@pytest.mark.parametrize("kill_after_s", [0.05, 0.3])
def test_sigkill_during_repeated_writes_leaves_only_valid_checkpoints(tmp_path, kill_after_s):
    saved = run_writer_until_killed(tmp_path, "run", kill_after_s)
    assert assert_only_valid_checkpoints(tmp_path, saved) >= max(saved)
