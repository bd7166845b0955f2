"""Publishes one ModelUpdate (transient local) from its own process; used by test_messages.py."""

import sys
import time

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from mbrl_ros.msg import ModelUpdate


def main() -> int:
    rclpy.init()
    node = rclpy.create_node("model_update_publisher")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    publisher = node.create_publisher(ModelUpdate, "/test/model_update", qos)
    message = ModelUpdate()
    message.header.stamp = node.get_clock().now().to_msg()
    message.version = 7
    message.checkpoint_path = "/models/model_0007.mbrl"
    message.sha256 = "ab" * 32
    message.model_kind = "residual"
    message.num_transitions = 123456
    message.validation_nll = -1.25
    message.validation_mse = 0.003
    message.metric_names = ["mse_1step", "mse_5step"]
    message.metric_values = [0.003, 0.02]
    publisher.publish(message)
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
