"""The online trainer deploys a candidate only when it beats the deployed model on held-out
splits (whole bags, assigned the same way after a restart) at several open-loop horizons, and
records the calibration of every deployed version; its rounds can be cancelled (prompt node
shutdown) without losing the deployed model, and its checkpoints survive a SIGKILL at any
moment of a write."""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_models import FakeModel, trajectory, true_step
from sim_bags import COMMAND_TOPIC, STATE_TOPIC, URDF, write_sim_bag

from mbrl_ros.core.checkpoint import file_sha256, load_checkpoint
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.core.model_registry import CHECKPOINT_PATTERN, ModelRegistry
from mbrl_ros.core.model_training import TrainingCancelled, fit_dynamics
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.data.alignment import align_streams
from mbrl_ros.data.bag_reader import read_robot_streams
from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig
from mbrl_ros.tasks.reach import load_robot
from mbrl_ros.training import online_trainer
from mbrl_ros.training.online_trainer import OnlineTrainer, TrainerConfig, compare_errors

REPO = Path(__file__).resolve().parents[2]
STATE_DIM, ACTION_DIM = 2, 1
SMALL = EnsembleConfig(num_members=2, num_elites=1, hidden_sizes=(16,), max_epochs=3,
                       patience=3, batch_size=32, validation_fraction=0.2)
LEARNING = EnsembleConfig(num_members=2, num_elites=1, hidden_sizes=(32,), max_epochs=30,
                          patience=30, batch_size=32, validation_fraction=0.2)
"""A network that learns the fake models' linear system well in a fraction of a second."""
WRITER_START_TIMEOUT_S = 60.0
"""Longest wait for the checkpoint-writing child to import torch and write its first file."""


def linear_batch(rows: int, seed: int) -> TransitionBatch:
    """Transitions of a damped linear system (learnable in a few epochs)."""
    rng = np.random.default_rng(seed)
    state = rng.normal(size=(rows, STATE_DIM))
    action = rng.uniform(-1.0, 1.0, (rows, ACTION_DIM))
    next_state = state @ np.array([[0.9, 0.1], [-0.1, 0.9]]) + 0.1 * action
    return TransitionBatch(state, action, next_state + rng.normal(0, 1e-3, next_state.shape))


def make_trainer(model_dir: Path, ensemble: EnsembleConfig = SMALL,
                 streams: RobotStreamsConfig = RobotStreamsConfig(joints=("a",)),
                 alignment: AlignmentConfig = AlignmentConfig(), **overrides) -> OnlineTrainer:
    torch.set_num_threads(1)
    config = TrainerConfig(**{**dict(data_dir="", model_dir=str(model_dir),
                                     model_kind="ensemble", min_transitions=50,
                                     holdout_fraction=0.2), **overrides})
    return OnlineTrainer(config, ensemble, streams, alignment, nominal=None,
                         device=torch.device("cpu"))


def split_names(trainer: OnlineTrainer, held_out: bool, count: int) -> list:
    """The first ``count`` names ``split_<n>`` that ``trainer`` holds out (or trains on)."""
    names = (f"split_{n:04d}" for n in itertools.count())
    return list(itertools.islice((name for name in names
                                  if trainer.is_held_out(name) == held_out), count))


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


# -- deployment decisions on held-out splits -----------------------------------------------

def biased_fit(bias: float):
    """``fit_dynamics`` that trains, then shifts every prediction by ``bias`` (the normaliser
    is refitted by the next fit, so the shift lasts one round)."""
    def fit(model, data, config, **kwargs):
        report = fit_dynamics(model, data, config, **kwargs)
        with torch.no_grad():
            model.ensemble.target_normalizer.mean += bias
        return report
    return fit


def test_a_candidate_worse_on_held_out_splits_is_not_deployed_and_a_better_one_is(
        tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, LEARNING)
    trainer.add(trajectory(200, seed=10, noise=1e-3), split=split_names(trainer, True, 1)[0])
    first, worse, better = split_names(trainer, False, 3)
    trainer.add(trajectory(300, seed=11, noise=1e-3), split=first)
    monkeypatch.setattr(online_trainer, "fit_dynamics", biased_fit(0.3))
    v1 = trainer.run_round()
    assert v1 is not None and v1.version == 1  # the first model: nothing to beat

    trainer.add(trajectory(300, seed=12, noise=1e-3), split=worse)
    monkeypatch.setattr(online_trainer, "fit_dynamics", biased_fit(1.0))
    assert trainer.run_round() is None
    assert trainer.deployed_version == 1 and trainer.stats.rounds_rejected == 1
    assert "not better" in trainer.stats.last_decision
    assert [m.version for m in trainer.registry.versions()] == [1]

    trainer.add(trajectory(300, seed=13, noise=1e-3), split=better)
    monkeypatch.setattr(online_trainer, "fit_dynamics", biased_fit(0.0))
    v2 = trainer.run_round()
    assert v2 is not None and v2.version == 2 and trainer.deployed_version == 2
    assert set(v2.holdout_errors) == {1, 5, 20}
    assert all(v2.holdout_errors[h] < v1.holdout_errors[h] for h in (1, 5, 20))
    assert "better: deploy" in v2.decision
    metadata = load_checkpoint(v2.path).header["metadata"]
    assert set(metadata["holdout_errors"]) == {"1", "5", "20"}
    assert metadata["holdout_splits"] == 1 and metadata["holdout_transitions"] == 200
    within = metadata["calibration"]["within_1_sigma"]
    assert 0.0 <= within <= 1.0 and within == v2.calibration.within_1_sigma
    assert math.isfinite(v2.calibration.variance_ratio)


def test_the_decision_judges_multi_step_drift_not_only_the_one_step_error(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.add(trajectory(100, seed=20), split=split_names(trainer, True, 1)[0])
    drifting = FakeModel(lambda s, a: true_step(s, a) + 0.05)  # always off the same way
    noisy = FakeModel(lambda s, a: true_step(s, a) + 0.05 * np.sign(a))  # off either way
    trainer.deployed, trainer.deployed_version = noisy, 1
    judgement = trainer.judge(drifting)
    assert judgement.candidate_errors[1] == pytest.approx(judgement.deployed_errors[1],
                                                          rel=1e-4)
    assert judgement.candidate_errors[20] > judgement.deployed_errors[20]
    assert not judgement.deploy
    trainer.deployed = drifting
    assert trainer.judge(noisy).deploy


def test_compare_errors_deploys_on_the_mean_ratio_below_one_minus_the_margin():
    deployed = {1: 1.0, 5: 2.0, 20: 4.0}
    assert compare_errors({1: 0.9, 5: 1.8, 20: 3.6}, deployed, 0.0).deploy
    assert compare_errors({1: 0.9, 5: 1.8, 20: 3.6}, deployed, 0.05).deploy
    assert not compare_errors({1: 0.9, 5: 1.8, 20: 3.6}, deployed, 0.2).deploy
    # better at one step, much worse at 20 steps: the mean ratio (0.8 + 1 + 1.5) / 3 > 1
    assert not compare_errors({1: 0.8, 5: 2.0, 20: 6.0}, deployed, 0.0).deploy
    assert not compare_errors(dict(deployed), deployed, 0.0).deploy  # equal is not better
    assert not compare_errors({1: 0.5, 5: math.inf, 20: 1.0}, deployed, 0.0).deploy
    first = compare_errors({1: 0.5}, {1: math.inf}, 0.0)  # nothing deployed yet
    assert first.deploy and first.score == 0.0


def test_horizons_longer_than_every_held_out_run_are_skipped(tmp_path, caplog):
    trainer = make_trainer(tmp_path)
    trainer.add(trajectory(12, seed=21), split=split_names(trainer, True, 1)[0])
    with caplog.at_level(logging.INFO, logger=online_trainer.__name__):
        assert trainer.judged_horizons() == (1, 5)
    assert "horizon 20 skipped" in caplog.text
    trainer.deployed, trainer.deployed_version = FakeModel(true_step), 1
    assert set(trainer.judge(FakeModel(true_step)).candidate_errors) == {1, 5}


def test_without_a_held_out_split_only_the_first_model_is_deployed(tmp_path):
    trainer = make_trainer(tmp_path)
    first, second = split_names(trainer, False, 2)
    trainer.add(trajectory(100, seed=30), split=first)
    v1 = trainer.run_round()
    assert v1 is not None and v1.version == 1 and "no held-out split yet" in v1.decision
    assert v1.holdout_errors == {} and math.isnan(v1.holdout_mse)
    assert math.isnan(v1.calibration.within_1_sigma)
    trainer.add(trajectory(100, seed=31), split=second)
    assert trainer.run_round() is None
    assert "cannot compare with deployed v1" in trainer.stats.last_decision
    assert "the next split is held out" in trainer.stats.last_decision
    assert trainer.stats.rounds_rejected == 1
    third = split_names(trainer, False, 3)[2]  # drawn for training, held out all the same
    trainer.add(trajectory(100, seed=32), split=third)
    assert trainer.split_held_out == {first: False, second: False, third: True}
    trainer.run_round()
    assert "mean ratio" in trainer.stats.last_decision  # judged: never stuck at v1
    trainer.add(trajectory(100, seed=33), split=split_names(trainer, False, 4)[3])
    assert not trainer.split_held_out[split_names(trainer, False, 4)[3]]  # only one forced


def test_a_batch_without_a_split_name_holds_out_the_end_of_every_run(tmp_path):
    trainer = make_trainer(tmp_path, holdout_fraction=0.3)
    first, second = trajectory(100, seed=40), trajectory(10, seed=41)
    trainer.add(TransitionBatch.concatenate([first, second]))
    np.testing.assert_array_equal(trainer.holdout.state,
                                  np.concatenate([first.state[70:], second.state[7:]]))
    np.testing.assert_array_equal(trainer.train_data.state,
                                  np.concatenate([first.state[:70], second.state[:7]]))
    independent = make_trainer(tmp_path / "independent", holdout_fraction=0.3)
    rows = linear_batch(10, seed=44)  # no transition follows another: runs of one
    independent.add(rows)
    np.testing.assert_array_equal(independent.holdout.state, rows.state[[1, 4, 8]])
    tiny = make_trainer(tmp_path / "tiny", holdout_fraction=0.3)
    tiny.add(trajectory(1, seed=42))  # the first held-out row, however small the batch
    tiny.add(trajectory(1, seed=43))
    assert len(tiny.holdout) == 1 and len(tiny.train_data) == 1


BAG_SECONDS = 1.0
"""Length of each recorded split of the restart test (about 50 transitions)."""


def bag_trainer(data_dir: Path, model_dir: Path) -> OnlineTrainer:
    joints = tuple(load_robot(URDF).joint_names)
    streams = RobotStreamsConfig(joints=joints, state_topic=STATE_TOPIC,
                                 command_topic=COMMAND_TOPIC)
    alignment = AlignmentConfig(control_rate_hz=50.0, command_latency_s=0.005)
    return make_trainer(model_dir, streams=streams, alignment=alignment,
                        data_dir=str(data_dir), holdout_fraction=0.3)


def test_whole_splits_are_held_out_and_the_same_ones_after_a_restart(tmp_path):
    data = tmp_path / "data"
    bags = [data / f"split_{n:04d}" for n in range(8)]
    for n, bag in enumerate(bags[:5]):
        write_sim_bag(bag, seed=n, duration_s=BAG_SECONDS, hole_s=None)
    trainer = bag_trainer(data, tmp_path / "models")
    trainer.ingest()
    for n, bag in enumerate(bags[5:], start=5):  # more splits arrive later
        write_sim_bag(bag, seed=n, duration_s=BAG_SECONDS, hole_s=None)
    trainer.ingest()
    assert set(trainer.split_held_out) == {bag.name for bag in bags}
    assert 0 < sum(trainer.split_held_out.values()) < len(bags)

    held = {row.tobytes() for row in trainer.holdout.state}
    trained = {row.tobytes() for row in trainer.train_data.state}
    for bag in bags:  # every split's transitions all on the side its name says
        rows = align_streams(read_robot_streams([bag], trainer.streams), trainer.alignment)
        side = held if trainer.split_held_out[bag.name] else trained
        assert all(row.tobytes() in side for row in rows.batch.state)

    restarted = bag_trainer(data, tmp_path / "models")  # reads all splits at once
    restarted.ingest()
    assert restarted.split_held_out == trainer.split_held_out
    np.testing.assert_array_equal(restarted.holdout.state, trainer.holdout.state)
    np.testing.assert_array_equal(restarted.train_data.state, trainer.train_data.state)
    shutil.rmtree(bags[0])  # old data pruned: the other splits keep their side
    pruned = bag_trainer(data, tmp_path / "models")
    pruned.ingest()
    assert pruned.split_held_out == {name: held for name, held in trainer.split_held_out.items()
                                     if name != bags[0].name}


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
