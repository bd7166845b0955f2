"""trainer_node as a real process: a SIGINT in the middle of a training round ends it within
3 s with status 0, the partly trained candidate discarded and the deployed checkpoint kept; a
SIGKILL leaves only valid checkpoints, from which a restarted trainer warm-starts;
/diagnostics tells what the trainer does; a deployed dynamics model is followed by a
value/policy announcement, and a late subscriber gets the newest of both."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("mbrl_ros.msg", reason="custom messages not built (source scripts/env.sh)")

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_helpers import spin_until  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from training.sim_bags import URDF, write_config, write_sim_bag  # noqa: E402

from mbrl_ros.core.checkpoint import file_sha256, load_checkpoint  # noqa: E402
from mbrl_ros.core.model_loading import load_model  # noqa: E402
from mbrl_ros.core.model_registry import CHECKPOINT_PATTERN  # noqa: E402
from mbrl_ros.core.value_policy import ValuePolicy  # noqa: E402
from mbrl_ros.msg import ModelUpdate  # noqa: E402
from mbrl_ros.nodes.trainer_node import MODEL_UPDATE_READER_DEPTH, trainer_status  # noqa: E402
from mbrl_ros.training.config_file import load_training_setup  # noqa: E402
from mbrl_ros.training.offline import train_offline  # noqa: E402
from mbrl_ros.training.online_trainer import RoundStats  # noqa: E402
from mbrl_ros.training.value_training import VALUE_POLICY_FOLDER  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SIGINT_EXIT_LIMIT_S = 3.0
"""The trainer must be gone this long after SIGINT (ros2 launch escalates after 5 s)."""
START_TIMEOUT_S = 60.0
"""Longest wait for the trainer to start and train (imports, discovery, a loaded machine)."""
LONG_ROUND_EPOCHS = 100000
"""Epochs (and patience) of the node's rounds: a round lasts far longer than any test."""
EPOCHS_BEFORE_STOP = 2
"""The stop comes once this many epochs of the round are done: mid-round, past set-up."""
DOMAIN_ID = 101 + os.getpid() % 100
"""A DDS domain of this test run's own (other runs on the machine publish /diagnostics too)."""
TRAINER_STATUS = "/trainer: trainer"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A finished 20 s split of the simulated arm, and checkpoint v1 trained on it (3 epochs,
    the node's architecture)."""
    folder = tmp_path_factory.mktemp("recorded")
    write_sim_bag(folder / "data" / "split_0000", seed=3, duration_s=20.0)
    config = write_config(folder / "offline.yaml", model_kind="ensemble",
                          ensemble={"max_epochs": 3})
    setup = load_training_setup(config, URDF, {"data_dir": "", "niceness": 0,
                                               "model_dir": str(folder / "models")})
    train_offline([str(folder / "data" / "split_0000")], setup, progress=False,
                  out=io.StringIO())
    return folder


@pytest.fixture
def folders(recorded, tmp_path):
    for name in ("data", "models"):
        shutil.copytree(recorded / name, tmp_path / name)
    write_config(tmp_path / "trainer.yaml", model_kind="ensemble", retrain_period_s=0.2,
                 niceness=0, ensemble={"max_epochs": LONG_ROUND_EPOCHS,
                                       "patience": LONG_ROUND_EPOCHS})
    return tmp_path


class TrainerProcess:
    """``python -m mbrl_ros.nodes.trainer_node`` with its output collected."""

    def __init__(self, folder: Path) -> None:
        env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID),
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mbrl_ros.nodes.trainer_node", "--ros-args",
             "--params-file", str(folder / "trainer.yaml"), "-p", f"urdf:={URDF}",
             "-p", f"data_dir:={folder / 'data'}", "-p", f"model_dir:={folder / 'models'}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, signum: int, timeout_s: float) -> float:
        """Send ``signum``; returns the seconds until the process exited."""
        start = time.monotonic()
        self.process.send_signal(signum)
        self.process.wait(timeout=timeout_s)
        elapsed = time.monotonic() - start
        self._reader.join(timeout=1.0)
        return elapsed

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def probe():
    """A node on the trainer's DDS domain: its last /diagnostics status, and its services."""
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = Node("trainer_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    seen = SimpleNamespace(status=None)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == TRAINER_STATUS:
                seen.status = status

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    yield SimpleNamespace(node=node, executor=executor, seen=seen)
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def values(status: DiagnosticStatus) -> dict:
    return {value.key: value.value for value in status.values}


def wait_until_training(probe, trainer: TrainerProcess, **expected) -> dict:
    """Spin until the trainer reports a round past its set-up; returns its values."""
    def training() -> bool:
        status = probe.seen.status
        return (status is not None and status.message.startswith("training round")
                and int(values(status)["epoch"]) >= EPOCHS_BEFORE_STOP
                and all(values(status)[k] == v for k, v in expected.items()))

    assert spin_until(probe.executor, training, START_TIMEOUT_S), (
        probe.seen.status, trainer.output)
    assert probe.seen.status.level == DiagnosticStatus.OK
    return values(probe.seen.status)


def checkpoint_files(model_dir: Path) -> list:
    return sorted(p for p in model_dir.iterdir() if CHECKPOINT_PATTERN.match(p.name))


def test_sigint_mid_round_exits_within_3_s_and_keeps_the_deployed_checkpoint(folders, probe):
    deployed = folders / "models" / "model_000001.mbrl"
    deployed_sha = file_sha256(str(deployed))
    trainer = TrainerProcess(folders)
    try:
        found = wait_until_training(probe, trainer, deployed_version="1", rounds="1")
        assert found["transitions"] == "978" and found["rounds_cancelled"] == "0"
        elapsed = trainer.stop(signal.SIGINT, timeout_s=30.0)
    finally:
        trainer.kill()
    assert trainer.process.returncode == 0, trainer.output
    assert elapsed < SIGINT_EXIT_LIMIT_S, trainer.output
    assert "round cancelled: candidate discarded, deployed model stays v1" in trainer.output
    # nothing written: only the deployed checkpoint, unchanged, no temporary file (and no
    # value/policy: its round would have followed the dynamics round)
    assert sorted(p.name for p in (folders / "models").iterdir()) == [deployed.name,
                                                                      VALUE_POLICY_FOLDER]
    assert list((folders / "models" / VALUE_POLICY_FOLDER).iterdir()) == []
    assert file_sha256(str(deployed)) == deployed_sha
    assert load_model(str(deployed), expected_sha256=deployed_sha) is not None


def test_sigkill_mid_round_leaves_valid_checkpoints_and_a_restart_warm_starts(folders, probe):
    trainer = TrainerProcess(folders)
    try:
        wait_until_training(probe, trainer, deployed_version="1")
        # ~/reset abandons the running round at once; a fresh model's round starts
        client = probe.node.create_client(Trigger, "/trainer/reset")
        assert client.wait_for_service(timeout_sec=START_TIMEOUT_S)
        future = client.call_async(Trigger.Request())
        assert spin_until(probe.executor, future.done, SIGINT_EXIT_LIMIT_S)
        assert future.result().success, future.result().message
        wait_until_training(probe, trainer, deployed_version="0", rounds_cancelled="1")
        trainer.stop(signal.SIGKILL, timeout_s=10.0)
    finally:
        trainer.kill()
    assert trainer.process.returncode == -signal.SIGKILL
    files = checkpoint_files(folders / "models")
    assert [p.name for p in files] == ["model_000001.mbrl"]
    for path in files:  # a complete name means a complete, uncorrupted file
        load_checkpoint(str(path))

    restarted = TrainerProcess(folders)
    try:
        wait_until_training(probe, restarted, deployed_version="1")
        restarted.stop(signal.SIGINT, timeout_s=30.0)
    finally:
        restarted.kill()
    assert "warm start from" in restarted.output and "(v1)" in restarted.output
    assert restarted.process.returncode == 0, restarted.output


def fake_trainer(**overrides) -> SimpleNamespace:
    trainer = dict(num_transitions=978, deployed_version=2, training=False, rounds=3, epoch=0,
                   config=SimpleNamespace(min_transitions=300),
                   stats=RoundStats(rounds_rejected=1, last_round_s=2.5,
                                    last_holdout_error=0.125, last_validation_mse=0.25))
    trainer.update(overrides)
    return SimpleNamespace(**trainer)


@pytest.mark.parametrize("overrides, error, level, message", [
    ({}, None, DiagnosticStatus.OK, "idle: deployed v2"),
    ({"training": True, "epoch": 7}, None, DiagnosticStatus.OK,
     "training round 3, epoch 7 (978 transitions)"),
    ({"deployed_version": 0, "num_transitions": 120, "rounds": 0}, None, DiagnosticStatus.WARN,
     "waiting for data: 120 of 300 transitions"),
    ({"training": True}, "training round failed: boom", DiagnosticStatus.ERROR,
     "error: training round failed: boom"),
])
def test_trainer_status(overrides, error, level, message):
    found_level, found_message, found_values = trainer_status(fake_trainer(**overrides), error)
    assert (found_level, found_message) == (level, message)
    assert {k: found_values[k] for k in ("deployed_version", "transitions", "rounds_rejected",
                                         "last_round_s", "last_validation_mse",
                                         "last_holdout_error")} == {
        "deployed_version": str(overrides.get("deployed_version", 2)),
        "transitions": str(overrides.get("num_transitions", 978)), "rounds_rejected": "1",
        "last_round_s": "2.5", "last_validation_mse": "0.25", "last_holdout_error": "0.125"}


@pytest.mark.parametrize("training, value_training, value_error, level, message", [
    (False, True, None, DiagnosticStatus.OK, "training value/policy round 4 (978 transitions)"),
    (False, False, "round failed: boom", DiagnosticStatus.WARN,
     "value/policy: round failed: boom"),
    (True, False, "round failed: boom", DiagnosticStatus.OK,
     "training round 3, epoch 0 (978 transitions)"),
])
def test_trainer_status_with_value_rounds(training, value_training, value_error, level, message):
    value = SimpleNamespace(training=value_training, rounds=4, deployed_version=5)
    found = trainer_status(fake_trainer(training=training), None, value, value_error)
    assert found[:2] == (level, message) and found[2]["value_policy_version"] == "5"


MODEL_UPDATES = QoSProfile(depth=MODEL_UPDATE_READER_DEPTH,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""A planner's subscription to mbrl/model_update."""


def subscribe_model_updates(node: Node) -> list:
    received: list = []
    node.create_subscription(ModelUpdate, "/mbrl/model_update", received.append, MODEL_UPDATES)
    return received


def test_a_value_policy_follows_each_deployed_model_and_late_subscribers_get_both(
        recorded, tmp_path, probe):
    shutil.copytree(recorded / "data", tmp_path / "data")  # no model yet: the node trains v1
    write_config(tmp_path / "trainer.yaml", model_kind="ensemble", retrain_period_s=0.2,
                 niceness=0, ensemble={"max_epochs": 2, "patience": 2},
                 value={"steps_per_round": 20, "min_transitions": 100, "hidden_sizes": [16, 16],
                        "batch_size": 32})
    received = subscribe_model_updates(probe.node)
    trainer = TrainerProcess(tmp_path)
    try:
        assert spin_until(probe.executor, lambda: any(
            m.model_kind == "value_policy" for m in received), START_TIMEOUT_S), trainer.output
        late_node = Node("late_planner", context=probe.node.context)
        probe.executor.add_node(late_node)
        late = subscribe_model_updates(late_node)
        assert spin_until(probe.executor, lambda: len(late) >= 2, 10.0), trainer.output
        trainer.stop(signal.SIGINT, timeout_s=30.0)
    finally:
        trainer.kill()
    assert trainer.process.returncode == 0, trainer.output
    assert [(m.model_kind, m.version) for m in received] == [("ensemble", 1),
                                                             ("value_policy", 1)]
    value = received[1]
    assert list(value.metric_names) == ["steps", "q_loss", "train_seconds"]
    assert value.metric_values[0] == 20.0 and value.metric_values[2] > 0.0
    assert Path(value.checkpoint_path).parent == tmp_path / "models" / VALUE_POLICY_FOLDER
    agent = ValuePolicy.load(value.checkpoint_path, expected_sha256=value.sha256)
    assert agent.metadata["dynamics_version"] == 1 and agent.metadata["task"] == "reach"
    assert agent.metadata["joints"] == [f"arm_joint{i}" for i in range(1, 8)]
    assert (agent.state_dim, agent.action_dim, agent.goal_dim) == (14, 7, 3)
    assert sorted((m.model_kind, m.version) for m in late) == [("ensemble", 1),
                                                               ("value_policy", 1)]
    assert "deployed value/policy v1" in trainer.output
