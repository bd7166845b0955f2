"""Custom messages are generated, importable and round-trip between two processes."""

import pathlib
import subprocess
import sys

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from mbrl_ros.msg import GateStatus, ModelUpdate, PlanStatus
from ros_helpers import spin_until

HERE = pathlib.Path(__file__).resolve().parent


def test_message_fields_and_constants():
    assert GateStatus.STATE_PASS != GateStatus.STATE_FALLBACK
    status = PlanStatus(disagreement=[0.1, 0.2], horizon=2)
    assert list(status.disagreement) == [0.1, 0.2]


def test_model_update_round_trips_between_processes(ros_context):
    publisher = subprocess.Popen([sys.executable, str(HERE / "msg_publisher_process.py"), "20"])
    node = rclpy.create_node("model_update_listener", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    received = []
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(ModelUpdate, "/test/model_update", received.append, qos)
    try:
        assert spin_until(executor, lambda: bool(received), timeout_s=20.0), "no ModelUpdate"
    finally:
        publisher.terminate()
        publisher.wait(timeout=10)
        node.destroy_node()
    message = received[0]
    assert message.version == 7
    assert message.checkpoint_path == "/models/model_0007.mbrl"
    assert message.sha256 == "ab" * 32
    assert message.model_kind == "residual"
    assert message.num_transitions == 123456
    assert message.validation_nll == -1.25
    assert list(message.metric_names) == ["mse_1step", "mse_5step"]
    assert list(message.metric_values) == [0.003, 0.02]
