"""The logger as a real process: SIGKILLed mid-split it loses at most the last second (its
split is recovered when it starts again), and a double SIGINT still finishes the split with
every message, within the shutdown time limit."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mbrl_ros.msg", reason="custom messages not built (source scripts/env.sh)")

import rclpy  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from mbrl_ros.data.bag_reader import read_robot_streams  # noqa: E402
from mbrl_ros.data.bag_writer import PARTIAL_DIR  # noqa: E402
from mbrl_ros.data.data_directory import DataDirectory  # noqa: E402
from mbrl_ros.data.dataset_config import RobotStreamsConfig  # noqa: E402

RATE_HZ = 100.0
COMMAND_TOPIC = "/effort_controller/commands"
STREAMS = RobotStreamsConfig(joints=("a",), command_topic=COMMAND_TOPIC)
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
STARTUP_TIMEOUT_S = 10.0
SETTLE_S = 0.5
"""Wait after discovery before publishing, so both sides have matched."""
MAX_LOSS_S = 1.0
"""A SIGKILLed logger may lose the messages of its last second."""
MIN_KEPT = 0.99
"""Share of the messages published before that last second that must survive."""
SHUTDOWN_LIMIT_S = 3.0
"""A logger must be gone this long after SIGINT."""


SLOW_CLOSE_S = 0.5
"""Disk time added to closing the split, so that a second SIGINT surely lands in the cleanup."""
SECOND_SIGINT_AFTER_S = 0.2
"""Delay of the second SIGINT: after the node saw the first (it polls every 50 ms, and two
pending signals merge into one), and before the slowed cleanup ends."""
SLOW_DISK_LOGGER = (
    "import sys, time\n"
    "from mbrl_ros.data.bag_writer import BagRecorder\n"
    "close = BagRecorder.close\n"
    "def slow_close(self):\n"
    f"    time.sleep({SLOW_CLOSE_S})\n"
    "    return close(self)\n"
    "BagRecorder.close = slow_close\n"
    "from mbrl_ros.nodes.logger_node import main\n"
    "main()\n")
"""The logger node with a slow disk at shutdown."""


def _start_logger(data_dir: Path, slow_disk: bool = False) -> subprocess.Popen:
    program = ["-c", SLOW_DISK_LOGGER] if slow_disk else ["-m", "mbrl_ros.nodes.logger_node"]
    return subprocess.Popen(
        [sys.executable, *program, "--ros-args",
         "-p", f"data_dir:={data_dir}", "-p", "split_duration_s:=3600.0",
         "-p", f"command_topic:={COMMAND_TOPIC}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class Robot:
    """Publishes numbered joint states and commands at 100 Hz, like a driver and the gate."""

    def __init__(self, context):
        self.node = rclpy.create_node("fake_robot", context=context)
        self.state_pub = self.node.create_publisher(JointState, "/joint_states", QOS)
        self.command_pub = self.node.create_publisher(Float64MultiArray, COMMAND_TOPIC, QOS)
        self.sent_at: list[float] = []

    def wait_for_logger(self, logger: subprocess.Popen) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and logger.poll() is None:
            if self.state_pub.get_subscription_count() and \
                    self.command_pub.get_subscription_count():
                time.sleep(SETTLE_S)
                return
            time.sleep(0.05)
        logger.kill()
        raise AssertionError(f"the logger did not subscribe:\n{logger.communicate()[0]}")

    def publish(self, count: int) -> None:
        start = time.monotonic()
        for k in range(count):
            i = len(self.sent_at)
            self.state_pub.publish(JointState(name=["a"], position=[float(i)], velocity=[0.0]))
            self.command_pub.publish(Float64MultiArray(data=[0.1 * i]))
            self.sent_at.append(time.monotonic())
            time.sleep(max(0.0, start + (k + 1) / RATE_HZ - time.monotonic()))

    def close(self) -> None:
        self.node.destroy_node()


def _recorded_states(data_dir: Path) -> list[int]:
    """Joint state numbers the trainer's reader finds in the finished splits."""
    splits = [s.path for s in DataDirectory(data_dir).finished_splits()]
    if not splits:
        return []
    streams = read_robot_streams(splits, STREAMS)
    return [int(round(v)) for r in streams.recordings for v in r.state.values[:, 0]]


def _stop(logger: subprocess.Popen) -> str:
    logger.send_signal(signal.SIGINT)
    return logger.communicate(timeout=STARTUP_TIMEOUT_S)[0]


def test_sigkill_loses_at_most_the_last_second(ros_context, tmp_path):
    robot = Robot(ros_context)
    logger = _start_logger(tmp_path)
    try:
        robot.wait_for_logger(logger)
        robot.publish(int(2.5 * RATE_HZ))
        killed_at = time.monotonic()
        logger.send_signal(signal.SIGKILL)  # mid-split, mid-stream
        logger.wait(timeout=STARTUP_TIMEOUT_S)
    finally:
        if logger.poll() is None:
            logger.kill()
        robot.close()
    assert DataDirectory(tmp_path).finished_splits() == []  # the split died open
    restarted = _start_logger(tmp_path)  # recovers the split while it starts
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and not DataDirectory(tmp_path).finished_splits():
        time.sleep(0.05)
    output = _stop(restarted)
    assert restarted.returncode == 0, output
    recorded = _recorded_states(tmp_path)
    assert len(recorded) == len(set(recorded))
    must_keep = [i for i, t in enumerate(robot.sent_at) if t <= killed_at - MAX_LOSS_S]
    kept = set(recorded) & set(must_keep)
    assert len(kept) >= MIN_KEPT * len(must_keep), \
        f"{len(must_keep) - len(kept)} of {len(must_keep)} joint states lost\n{output}"
    assert not [p for p in (tmp_path / PARTIAL_DIR).iterdir() if p.is_dir()]


def test_double_sigint_finishes_the_split_with_every_message(ros_context, tmp_path):
    robot = Robot(ros_context)
    logger = _start_logger(tmp_path, slow_disk=True)
    try:
        robot.wait_for_logger(logger)
        robot.publish(int(1.5 * RATE_HZ))
        time.sleep(SETTLE_S)  # delivered
        stopped_at = time.monotonic()
        logger.send_signal(signal.SIGINT)
        time.sleep(SECOND_SIGINT_AFTER_S)
        logger.send_signal(signal.SIGINT)  # a second Ctrl-C while it cleans up
        output = logger.communicate(timeout=STARTUP_TIMEOUT_S)[0]
        took_s = time.monotonic() - stopped_at
    finally:
        if logger.poll() is None:
            logger.kill()
        robot.close()
    assert logger.returncode == 0, output
    assert took_s < SHUTDOWN_LIMIT_S, output
    assert "SIGINT again" in output  # the second signal arrived, and was ignored
    (split,) = DataDirectory(tmp_path).finished_splits()
    assert _recorded_states(tmp_path) == list(range(len(robot.sent_at)))
    assert not list((tmp_path / PARTIAL_DIR).iterdir())  # nothing open, no session lock
