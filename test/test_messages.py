"""Custom messages are generated with their fields and constants, importable, and round-trip
between two processes (a late subscriber gets the latched ModelUpdate)."""

import pathlib
import subprocess
import sys

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from mbrl_ros.msg import GateStatus, ModelUpdate, PlanStatus
from ros_helpers import spin_until

HERE = pathlib.Path(__file__).resolve().parent
TOPIC = "/test/model_update"

FIELDS = {
    GateStatus: {
        "header": "std_msgs/Header", "state": "uint8", "reason": "string",
        "disagreement": "double", "disagreement_threshold": "double",
        "disagreement_resume": "double", "command_age_s": "double",
        "watchdog_timeout_s": "double", "interventions": "uint64", "commands_passed": "uint64"},
    PlanStatus: {
        "header": "std_msgs/Header", "model_version": "uint32", "planner": "string",
        "exploring": "boolean", "planning_time_ms": "double", "iterations": "uint32",
        "num_samples": "uint32", "horizon": "uint32", "best_cost": "double",
        "mean_disagreement": "double", "max_disagreement": "double",
        "disagreement": "sequence<double>"},
    ModelUpdate: {
        "header": "std_msgs/Header", "version": "uint32", "checkpoint_path": "string",
        "sha256": "string", "model_kind": "string", "num_transitions": "uint64",
        "validation_nll": "double", "validation_mse": "double",
        "metric_names": "sequence<string>", "metric_values": "sequence<double>"},
}
"""The fields the nodes and tools use, with their types (messages may gain fields)."""


def test_messages_have_their_fields_with_their_types():
    for message, expected in FIELDS.items():
        found = message.get_fields_and_field_types()
        wrong = {name: (kind, found.get(name)) for name, kind in expected.items()
                 if found.get(name) != kind}
        assert not wrong, f"{message.__name__}: field: (expected, generated) {wrong}"


def test_gate_states_are_distinct_constants():
    states = (GateStatus.STATE_PASS, GateStatus.STATE_CLAMPED, GateStatus.STATE_FALLBACK,
              GateStatus.STATE_ESTOP)
    assert states == (0, 1, 2, 3)  # documented in msg/GateStatus.msg, logged by tools


def test_values_keep_their_precision_and_range():
    status = PlanStatus(disagreement=[0.1, 0.2], horizon=2)
    assert list(status.disagreement) == [0.1, 0.2]  # float64: 0.1 is not a float32
    assert status.horizon == 2
    gate = GateStatus(state=GateStatus.STATE_ESTOP, interventions=2**40)  # uint64
    assert (gate.state, gate.interventions) == (3, 2**40)


def test_model_update_round_trips_between_processes(ros_context):
    publisher = subprocess.Popen([sys.executable, str(HERE / "msg_publisher_process.py"), "20"])
    node = rclpy.create_node("model_update_listener", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    received = []
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    try:
        # subscribe only once the other process has published: its transient-local
        # publisher must deliver the message to a late subscriber
        assert spin_until(executor, lambda: node.count_publishers(TOPIC) > 0, timeout_s=20.0), \
            "the publisher process never appeared"
        node.create_subscription(ModelUpdate, TOPIC, received.append, qos)
        assert spin_until(executor, lambda: bool(received), timeout_s=20.0), "no ModelUpdate"
    finally:
        publisher.terminate()
        publisher.wait(timeout=10)
        node.destroy_node()
    message = received[0]
    assert message.header.stamp.sec > 0
    assert message.version == 7
    assert message.checkpoint_path == "/models/model_0007.mbrl"
    assert message.sha256 == "ab" * 32
    assert message.model_kind == "residual"
    assert message.num_transitions == 123456
    assert message.validation_nll == -1.25
    assert message.validation_mse == 0.003
    assert list(message.metric_names) == ["mse_1step", "mse_5step"]
    assert list(message.metric_values) == [0.003, 0.02]
