"""The managed (lifecycle) planner and safety gate on real topics, and the lifecycle manager.

The gate holds the robot in every lifecycle state (it is never silent) and passes planner
commands only while active; an inactive planner publishes no command; the manager brings a
node up, and again when a new instance of it appears unconfigured (a respawn).
"""

from __future__ import annotations

import pathlib
from typing import List

import numpy as np
import pytest
import yaml
from lifecycle_msgs.msg import State
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_helpers import spin_until
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_ros.core.safety_gate_config import CommandStatus
from mbrl_ros.msg import GateStatus, PlannedCommand
from mbrl_ros.nodes import safety_gate_node as gate_node
from mbrl_ros.nodes.conversions import planned_command_message
from mbrl_ros.nodes.lifecycle_manager import LifecycleManagerNode
from mbrl_ros.nodes.managed import state_id
from mbrl_ros.nodes.planner_node import PlannerNode
from mbrl_ros.nodes.qos import PLANNED_COMMAND_QOS

REPO = pathlib.Path(__file__).resolve().parents[2]
JOINTS = ["shoulder", "elbow"]
MEASURED = [0.1, 0.2]
PLANNED = [1.0, -1.0]
RATE_HZ = 20.0
TIMEOUT_S = 10.0
TICKS = 5
"""Gate outputs judged per lifecycle state."""
UNCONFIGURED, INACTIVE, ACTIVE = (State.PRIMARY_STATE_UNCONFIGURED,
                                  State.PRIMARY_STATE_INACTIVE, State.PRIMARY_STATE_ACTIVE)
ARM = yaml.safe_load((REPO / "config" / "arm7.yaml").read_text())
ARM_JOINTS = ARM["/**/safety_gate"]["ros__parameters"]["joints"]


class RobotAndPlanner(Node):
    """Joint states and fresh planner commands at RATE_HZ; records the gate's outputs."""

    def __init__(self, context):
        super().__init__("robot_and_planner", context=context)
        self.state_pub = self.create_publisher(JointState, gate_node.JOINT_STATES_TOPIC,
                                               gate_node.STATE_QOS)
        self.command_pub = self.create_publisher(
            PlannedCommand, gate_node.PLANNED_COMMAND_TOPIC, gate_node.COMMAND_QOS)
        self.outputs: List[np.ndarray] = []
        self.statuses: List[GateStatus] = []
        self.create_subscription(Float64MultiArray, gate_node.COMMAND_TOPIC,
                                 lambda msg: self.outputs.append(np.array(msg.data)),
                                 gate_node.OUTPUT_QOS)
        self.create_subscription(GateStatus, gate_node.GATE_STATUS_TOPIC, self.statuses.append,
                                 10)
        self.create_timer(1.0 / RATE_HZ, self._publish)

    def _publish(self) -> None:
        state = JointState(name=JOINTS, position=MEASURED, velocity=[0.0, 0.0])
        state.header.stamp = self.get_clock().now().to_msg()
        self.state_pub.publish(state)
        self.command_pub.publish(planned_command_message(
            JOINTS, np.array([PLANNED]), [0.0], [0.0], state.header.stamp, 1, 1,
            int(CommandStatus.PLANNED)))

    def next_outputs(self, executor, count: int) -> List[np.ndarray]:
        """The gate's next ``count`` outputs (those already queued are skipped)."""
        spin_until(executor, lambda: False, 2.0 / RATE_HZ)  # drain what is in flight
        start = len(self.outputs)
        assert spin_until(executor, lambda: len(self.outputs) >= start + count, TIMEOUT_S), \
            "the gate went silent"
        return self.outputs[start:start + count]


def make_gate(context) -> gate_node.SafetyGateNode:
    return gate_node.SafetyGateNode(context=context, parameter_overrides=[
        Parameter("autostart", value=False), Parameter("joints", value=JOINTS),
        Parameter("control_mode", value="position"),
        Parameter("position_lower", value=[-3.0, -3.0]),
        Parameter("position_upper", value=[3.0, 3.0]),
        Parameter("max_position_step", value=[2.0, 2.0]),
        Parameter("control_rate_hz", value=RATE_HZ),
        Parameter("watchdog_timeout_s", value=3.0 / RATE_HZ)])


def assert_held(outputs: List[np.ndarray]) -> None:
    for output in outputs:
        np.testing.assert_allclose(output, MEASURED)


@pytest.fixture
def executor(ros_context):
    executor = SingleThreadedExecutor(context=ros_context)
    yield executor
    for node in list(executor.get_nodes()):
        executor.remove_node(node)
        node.destroy_node()
    executor.shutdown()


def test_the_gate_holds_in_every_state_and_passes_commands_only_while_active(
        ros_context, executor):
    gate, robot = make_gate(ros_context), RobotAndPlanner(ros_context)
    executor.add_node(gate)
    executor.add_node(robot)
    assert state_id(gate) == UNCONFIGURED
    assert_held(robot.next_outputs(executor, TICKS))
    assert "unconfigured" in robot.statuses[-1].reason

    assert gate.trigger_configure() == gate_node.SUCCESS and state_id(gate) == INACTIVE
    assert_held(robot.next_outputs(executor, TICKS))  # commands arrive, none passes
    assert robot.statuses[-1].state == GateStatus.STATE_FALLBACK
    assert "inactive" in robot.statuses[-1].reason

    assert gate.trigger_activate() == gate_node.SUCCESS
    passing = (GateStatus.STATE_PASS, GateStatus.STATE_CLAMPED)
    assert spin_until(executor, lambda: robot.statuses[-1].state in passing, TIMEOUT_S), \
        "the active gate never passed the planner's command"
    moving = robot.next_outputs(executor, TICKS)[-1]  # toward the plan (rate limited)
    assert np.all(np.sign(moving - MEASURED) == np.sign(np.subtract(PLANNED, MEASURED)))

    assert gate.trigger_deactivate() == gate_node.SUCCESS
    assert_held(robot.next_outputs(executor, TICKS))  # at once, not after the watchdog
    assert gate.trigger_cleanup() == gate_node.SUCCESS and state_id(gate) == UNCONFIGURED
    assert_held(robot.next_outputs(executor, TICKS))

    count = len(robot.outputs)
    gate.trigger_shutdown()  # the final hold, then nothing more
    spin_until(executor, lambda: False, 3.0 / RATE_HZ)
    assert len(robot.outputs) > count
    assert_held(robot.outputs[count:])


def test_an_inactive_planner_publishes_no_command(ros_context, executor, tmp_path):
    planner = PlannerNode(context=ros_context, cli_args=[
        "--ros-args", "--params-file", str(REPO / "config" / "arm7.yaml"),
        "-p", f"urdf:={REPO / 'urdf' / 'arm7.urdf'}", "-p", f"model_dir:={tmp_path}",
        "-p", "autostart:=false", "-p", "visualize_every:=0"])
    probe = Node("planner_probe", context=ros_context)
    commands: List[PlannedCommand] = []
    probe.create_subscription(PlannedCommand, "mbrl/planned_command", commands.append,
                              PLANNED_COMMAND_QOS)
    state_pub = probe.create_publisher(JointState, "joint_states", 10)

    def publish_state():
        state = JointState(name=ARM_JOINTS, position=[0.0, -0.5, 0.0, -2.0, 0.0, 1.5, 0.0],
                           velocity=[0.0] * len(ARM_JOINTS))
        state.header.stamp = probe.get_clock().now().to_msg()
        state_pub.publish(state)
    probe.create_timer(0.01, publish_state)
    executor.add_node(planner)
    executor.add_node(probe)
    assert not hasattr(planner, "controller"), "an unconfigured planner built its controller"
    assert planner.trigger_configure() == gate_node.SUCCESS and state_id(planner) == INACTIVE
    spin_until(executor, lambda: False, 1.0)
    assert planner.latest_state is not None, "the planner got no joint state"
    assert commands == [] and planner.sequence == 0

    assert planner.trigger_activate() == gate_node.SUCCESS
    assert spin_until(executor, lambda: len(commands) >= 3, TIMEOUT_S), \
        "the active planner sent no commands"

    assert planner.trigger_deactivate() == gate_node.SUCCESS
    sent = planner.sequence
    spin_until(executor, lambda: False, 1.0)
    assert planner.sequence == sent, "the deactivated planner kept commanding"
    assert planner.trigger_cleanup() == gate_node.SUCCESS
    assert planner.trigger_configure() == gate_node.SUCCESS, "configure after cleanup failed"


def test_the_manager_brings_the_gate_up_and_again_after_a_respawn(ros_context, executor):
    manager = LifecycleManagerNode(context=ros_context, parameter_overrides=[
        Parameter("managed_nodes", value=["safety_gate"]),
        Parameter("check_period_s", value=0.1), Parameter("state_timeout_s", value=0.5),
        Parameter("retry_delay_s", value=0.2)])
    gate = make_gate(ros_context)
    executor.add_node(manager)
    executor.add_node(gate)
    tracked = manager.nodes["safety_gate"]
    assert spin_until(executor, lambda: tracked.activations == 1, TIMEOUT_S), \
        "the manager did not activate the gate"
    assert state_id(gate) == ACTIVE

    executor.remove_node(gate)  # the gate's process dies and is respawned: a new instance
    gate.destroy_node()
    gate = make_gate(ros_context)
    executor.add_node(gate)
    assert spin_until(executor, lambda: tracked.activations == 2, TIMEOUT_S), \
        "the manager did not bring the respawned gate up"
    assert state_id(gate) == ACTIVE
