"""logger_node: records the robot's state, the commands actually sent and the goal to rosbag2.

Messages are recorded as the serialized bytes rclpy receives (no re-serialisation), with the
node clock's receive time, into MCAP splits of ``split_duration_s``. A split is moved out of
``data_dir/.partial/`` only once it is complete, so the trainer (on this host, or another one
sharing the folder) reads finished bags only and a restart loses nothing. The bags are plain
rosbag2 bags: ``ros2 bag info``/``play`` and Foxglove read them, and transitions are formed
from them by the same alignment code that trains from any ``ros2 bag record`` bag.
"""

from __future__ import annotations

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

from mbrl_ros.data.bag_writer import BagRecorder, BagRecorderConfig, QosSpec
from mbrl_ros.msg import GateStatus, PlanStatus
from mbrl_ros.nodes.parameters import declare_config
from mbrl_ros.nodes.spin import run_node

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


@dataclass(frozen=True)
class LoggerConfig:
    """Settings of ``logger_node``; an empty topic name is not recorded."""

    data_dir: str = "~/.ros/mbrl/data"
    """Folder of finished bag splits (the trainer reads it)."""
    storage: str = "mcap"
    """rosbag2 storage: "mcap" or "sqlite3"."""
    split_duration_s: float = 10.0
    """Close a split (hand it to the trainer) after this many seconds of data."""
    split_prefix: str = "robot"
    """Name prefix of the split folders."""
    state_topic: str = "/joint_states"
    """sensor_msgs/JointState from the robot or the simulator."""
    command_topic: str = "/effort_controller/commands"
    """The commands actually sent to the robot (the safety gate's output)."""
    goal_topic: str = "/mbrl/goal"
    """geometry_msgs/PoseStamped goals."""
    imu_topic: str = ""
    """sensor_msgs/Imu (legged robots)."""
    odom_topic: str = ""
    """nav_msgs/Odometry base state (legged robots)."""
    plan_status_topic: str = "/mbrl/plan/status"
    """mbrl_ros/PlanStatus, recorded for analysis."""
    gate_status_topic: str = "/mbrl/gate/status"
    """mbrl_ros/GateStatus, recorded for analysis."""
    joints: Tuple[str, ...] = ()
    """Joint order of the command topic (recorded in the diagnostics for reference)."""

    def validate(self) -> "LoggerConfig":
        """Raise ValueError on a bad setting; return self."""
        if not self.data_dir or not self.state_topic or not self.command_topic:
            raise ValueError("data_dir, state_topic and command_topic are required")
        if not self.split_duration_s > 0:
            raise ValueError(f"split_duration_s must be > 0, got {self.split_duration_s}")
        return self


class LoggerNode(Node):
    """Subscribes with raw=True and writes every message to the current split."""

    def __init__(self, **kwargs):
        super().__init__("logger", **kwargs)
        self.config = declare_config(self, LoggerConfig)
        self.recorder = BagRecorder(
            BagRecorderConfig(output_dir=str(Path(self.config.data_dir).expanduser()),
                              storage=self.config.storage, split_prefix=self.config.split_prefix,
                              max_split_duration_s=self.config.split_duration_s),
            on_split_closed=self._on_split_closed)
        self.splits = 0
        streams = [(self.config.state_topic, JointState, "sensor_msgs/msg/JointState"),
                   (self.config.command_topic, Float64MultiArray,
                    "std_msgs/msg/Float64MultiArray"),
                   (self.config.goal_topic, PoseStamped, "geometry_msgs/msg/PoseStamped"),
                   (self.config.imu_topic, Imu, "sensor_msgs/msg/Imu"),
                   (self.config.odom_topic, Odometry, "nav_msgs/msg/Odometry"),
                   (self.config.plan_status_topic, PlanStatus, "mbrl_ros/msg/PlanStatus"),
                   (self.config.gate_status_topic, GateStatus, "mbrl_ros/msg/GateStatus")]
        for topic, msg_class, type_name in streams:
            if not topic:
                continue
            self.recorder.add_topic(topic, type_name, QosSpec(depth=RELIABLE.depth))
            self.create_subscription(msg_class, topic, self._writer(topic, type_name), RELIABLE,
                                     raw=True)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"recording to {self.recorder.config.output_dir}")

    def _writer(self, topic: str, type_name: str):
        def write(data: bytes) -> None:
            try:
                self.recorder.write(topic, type_name, data, self.get_clock().now().nanoseconds)
            except (OSError, ValueError) as error:  # never take the graph down over logging
                self.get_logger().error(f"could not record {topic}: {error}",
                                        throttle_duration_sec=5.0)
        return write

    def _on_split_closed(self, path: Path) -> None:
        self.splits += 1
        self.get_logger().info(f"finished split {path.name}")

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name="mbrl_ros: logger",
                                  hardware_id="mbrl", message="recording")
        status.values = [KeyValue(key="messages", value=str(self.recorder.messages_written)),
                         KeyValue(key="finished_splits", value=str(self.splits)),
                         KeyValue(key="data_dir", value=self.recorder.config.output_dir)]
        self.diagnostics_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

    def destroy_node(self) -> None:
        self.recorder.close()
        super().destroy_node()


def main(args=None) -> None:
    run_node(LoggerNode, SingleThreadedExecutor, args)


if __name__ == "__main__":
    main()
