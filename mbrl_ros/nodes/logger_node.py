"""logger_node: records the robot's state, the commands actually sent and the goal to rosbag2.

Messages are recorded as the serialized bytes rclpy receives (no re-serialisation), with the
node clock's receive time, into MCAP splits of ``split_duration_s``. A split is moved out of
``data_dir/.partial/`` only once it is complete, so the trainer (on this host, or another one
sharing the folder) reads finished bags only. The bags are plain rosbag2 bags: ``ros2 bag
info``/``play`` and Foxglove read them, and transitions are formed from them by the same
alignment code that trains from any ``ros2 bag record`` bag.

Nothing is lost on the way:

- Callbacks only queue the bytes; a writer thread (``BackgroundRecorder``) does the disk work,
  so closing a split never stalls the executor and no message is dropped at a rotation.
- Every ``flush_period_s`` the open split's data reaches the file, so a logger killed outright
  loses at most that much; on the next start the split it left in ``.partial/`` is recovered
  into a finished split (``split_recovery``).
- On SIGINT/SIGTERM ``on_shutdown`` (run by ``spin.run_node`` with the context still up, further
  signals ignored) takes what the subscriptions still hold, writes the queue and finishes the
  open split within ``SHUTDOWN_DRAIN_S`` + ``BackgroundRecorderConfig.close_timeout_s``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray, Header

from mbrl_ros.data.background_recorder import BackgroundRecorder
from mbrl_ros.data.bag_writer import (DEFAULT_FLUSH_PERIOD_S, BagRecorder, BagRecorderConfig,
                                      QosSpec)
from mbrl_ros.data.message_types import build_typestore
from mbrl_ros.data.split_recovery import recover_abandoned_splits
from mbrl_ros.msg import GateStatus, PlanStatus, PlannedCommand
from mbrl_ros.nodes.parameters import declare_config
from mbrl_ros.nodes.spin import run_node

DIAGNOSTICS_PERIOD_S = 1.0
"""Period of the logger's /diagnostics status."""
SHUTDOWN_DRAIN_S = 0.2
"""Longest time ``on_shutdown`` spends taking messages the subscriptions still hold."""
DRAIN_IDLE_SPINS = 3
"""The drain stops after this many executor turns in a row that took no message (a turn may
run the diagnostics timer instead)."""


@dataclass(frozen=True)
class LoggerConfig:
    """Settings of ``logger_node``; an empty topic name is not recorded. Relative topic names
    are in the node's namespace; bags record the fully qualified names."""

    data_dir: str = "~/.ros/mbrl/data"
    """Folder of finished bag splits (the trainer reads it)."""
    storage: str = "mcap"
    """rosbag2 storage: "mcap" or "sqlite3"."""
    split_duration_s: float = 10.0
    """Close a split (hand it to the trainer) after this many seconds of data."""
    split_prefix: str = "robot"
    """Name prefix of the split folders."""
    flush_period_s: float = DEFAULT_FLUSH_PERIOD_S
    """Longest time recorded messages stay in memory only: a killed logger loses at most this
    (the split it leaves behind is recovered on the next start)."""
    history_depth: int = 100
    """Subscription history per topic: messages held while the executor is busy."""
    recover_on_start: bool = True
    """At start, turn splits left in data_dir/.partial/ by a logger that died into finished
    splits."""
    state_topic: str = "joint_states"
    """sensor_msgs/JointState from the robot or the simulator."""
    command_topic: str = "effort_controller/commands"
    """The commands actually sent to the robot (the safety gate's output)."""
    goal_topic: str = "mbrl/goal"
    """geometry_msgs/PoseStamped goals."""
    imu_topic: str = ""
    """sensor_msgs/Imu (legged robots)."""
    odom_topic: str = ""
    """nav_msgs/Odometry base state (legged robots)."""
    plan_status_topic: str = "mbrl/plan/status"
    """mbrl_ros/PlanStatus, recorded for analysis."""
    planned_command_topic: str = "mbrl/planned_command"
    """mbrl_ros/PlannedCommand, the planner's command to the gate, recorded for analysis."""
    gate_status_topic: str = "mbrl/gate/status"
    """mbrl_ros/GateStatus, recorded for analysis."""
    joints: Tuple[str, ...] = ()
    """Joint order of the command topic (recorded in the diagnostics for reference)."""

    def validate(self) -> "LoggerConfig":
        """Raise ValueError on a bad setting; return self."""
        if not self.data_dir or not self.state_topic or not self.command_topic:
            raise ValueError("data_dir, state_topic and command_topic are required")
        if not self.split_duration_s > 0:
            raise ValueError(f"split_duration_s must be > 0, got {self.split_duration_s}")
        if not self.flush_period_s > 0:
            raise ValueError(f"flush_period_s must be > 0, got {self.flush_period_s}")
        if self.history_depth < 1:
            raise ValueError(f"history_depth must be >= 1, got {self.history_depth}")
        return self


class LoggerNode(Node):
    """Subscribes with raw=True and queues every message for the writer thread."""

    def __init__(self, **kwargs):
        super().__init__("logger", **kwargs)
        self.config = declare_config(self, LoggerConfig)
        output_dir = Path(self.config.data_dir).expanduser()
        typestore = build_typestore()
        self.recovered = self._recover(output_dir, typestore) \
            if self.config.recover_on_start else 0
        self.recorder = BagRecorder(
            BagRecorderConfig(output_dir=str(output_dir), storage=self.config.storage,
                              split_prefix=self.config.split_prefix,
                              max_split_duration_s=self.config.split_duration_s,
                              flush_period_s=self.config.flush_period_s),
            typestore=typestore, on_split_closed=self._on_split_closed)
        self.background = BackgroundRecorder(self.recorder)
        self.splits = 0
        self.received = 0
        self._closed = False
        qos = QoSProfile(depth=self.config.history_depth,
                         reliability=ReliabilityPolicy.RELIABLE)
        streams = [(self.config.state_topic, JointState, "sensor_msgs/msg/JointState"),
                   (self.config.command_topic, Float64MultiArray,
                    "std_msgs/msg/Float64MultiArray"),
                   (self.config.goal_topic, PoseStamped, "geometry_msgs/msg/PoseStamped"),
                   (self.config.imu_topic, Imu, "sensor_msgs/msg/Imu"),
                   (self.config.odom_topic, Odometry, "nav_msgs/msg/Odometry"),
                   (self.config.plan_status_topic, PlanStatus, "mbrl_ros/msg/PlanStatus"),
                   (self.config.planned_command_topic, PlannedCommand,
                    "mbrl_ros/msg/PlannedCommand"),
                   (self.config.gate_status_topic, GateStatus, "mbrl_ros/msg/GateStatus")]
        for topic, msg_class, type_name in streams:
            if not topic:
                continue
            recorded = self.resolve_topic_name(topic)  # the full name, as ros2 bag records it
            self.recorder.add_topic(recorded, type_name, QosSpec(depth=qos.depth))
            self.create_subscription(msg_class, topic, self._writer(recorded, type_name), qos,
                                     raw=True)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self.get_logger().info(f"recording to {self.recorder.config.output_dir}")

    def _recover(self, output_dir: Path, typestore) -> int:
        results = recover_abandoned_splits(output_dir, typestore)
        for result in results:
            self.get_logger().warning(
                f"abandoned split {result.source.name}: {result.outcome}, "
                f"{result.messages} messages kept, lost {result.lost}"
                + (" + its unflushed tail" if result.lost_unknown else ""))
        return sum(result.outcome == "recovered" for result in results)

    def _writer(self, topic: str, type_name: str):
        def write(data: bytes) -> None:
            self.received += 1
            if not self.background.submit(topic, type_name, data,
                                          self.get_clock().now().nanoseconds):
                self.get_logger().error(f"could not queue {topic} for recording "
                                        f"({self.background.dropped} dropped so far)",
                                        throttle_duration_sec=5.0)
        return write

    def _on_split_closed(self, path: Path) -> None:  # on the writer thread
        self.splits += 1
        self.get_logger().info(f"finished split {path.name}")

    def _publish_diagnostics(self) -> None:
        trouble = self.background.dropped or self.background.errors
        status = DiagnosticStatus(level=DiagnosticStatus.WARN if trouble else DiagnosticStatus.OK,
                                  name=f"{self.get_fully_qualified_name()}: logger",
                                  hardware_id="mbrl",
                                  message="messages lost" if trouble else "recording")
        values = {"messages": self.recorder.messages_written, "finished_splits": self.splits,
                  "queued": self.background.queued, "dropped": self.background.dropped,
                  "write_errors": self.background.errors, "recovered_splits": self.recovered,
                  "data_dir": self.recorder.config.output_dir}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        self.diagnostics_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

    def on_shutdown(self) -> None:
        """Take what the subscriptions still hold, write it and finish the open split."""
        self._close(drain=True)

    def destroy_node(self) -> None:
        self._close(drain=False)  # a no-op after on_shutdown
        super().destroy_node()

    def _close(self, drain: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if drain:
            self._drain_subscriptions()
        finished = self.background.close()
        last = self.background.last_split
        message = (f"recorder closed: {self.recorder.messages_written} messages, "
                   f"last split {last.name if last else '(none open)'}")
        if finished:
            self.get_logger().info(message)
        else:
            self.get_logger().error(message + "; the writer did not finish in time, the open "
                                    "split is recovered on the next start")

    def _drain_subscriptions(self) -> None:
        """Run the callbacks of messages already received, until none come or time is up."""
        executor = self.executor
        if executor is None:
            return
        deadline = time.monotonic() + SHUTDOWN_DRAIN_S
        idle = 0
        while time.monotonic() < deadline and idle < DRAIN_IDLE_SPINS:
            before = self.received
            executor.spin_once(timeout_sec=0.0)
            idle = idle + 1 if self.received == before else 0


def main(args=None) -> None:
    run_node(LoggerNode, SingleThreadedExecutor, args)


if __name__ == "__main__":
    main()
