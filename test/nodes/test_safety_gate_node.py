"""Integration tests of the safety gate node on real topics and services.

Timing is judged in control ticks (one GateStatus per tick), not wall time, so a loaded machine
makes the tests slower but not flaky.
"""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
from rosgraph_msgs.msg import Clock
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from ros_helpers import spin_until
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from mbrl_ros.nodes.conversions import planned_command_message, seconds_to_stamp
from mbrl_ros.core.safety_gate_config import CommandStatus
from mbrl_ros.msg import GateStatus, PlannedCommand
from mbrl_ros.nodes import safety_gate_node as gate_node

ARM7_URDF = Path(__file__).resolve().parents[2] / "urdf" / "arm7.urdf"
JOINTS = ["shoulder", "elbow"]
RATE_HZ = 20.0
GOOD_COMMAND = [1.0, -1.0]
TIMEOUT_S = 5.0
PASS, FALLBACK, ESTOP = GateStatus.STATE_PASS, GateStatus.STATE_FALLBACK, GateStatus.STATE_ESTOP


EVERY_STATUS_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""The tests keep every status (the gate's latched status QoS keeps only the newest, and a
joint state and a forwarded command can each make one within a millisecond)."""


class FakeRobotAndPlanner(Node):
    """Publishes stamped planner commands and joint states; records what the gate sends.

    Stamps are simulation time (also published on /clock) when ``sim_time``, else wall time."""

    def __init__(self, context, sim_time: bool = False):
        super().__init__("fake_robot_and_planner", context=context)
        self.command_pub = self.create_publisher(
            PlannedCommand, gate_node.PLANNED_COMMAND_TOPIC, gate_node.COMMAND_QOS)
        self.state_pub = self.create_publisher(JointState, gate_node.JOINT_STATES_TOPIC,
                                               gate_node.STATE_QOS)
        self.outputs: List[np.ndarray] = []
        self.statuses: List[GateStatus] = []
        self.create_subscription(Float64MultiArray, gate_node.COMMAND_TOPIC,
                                 lambda msg: self.outputs.append(np.array(msg.data)),
                                 gate_node.OUTPUT_QOS)
        self.create_subscription(GateStatus, gate_node.GATE_STATUS_TOPIC, self.statuses.append,
                                 EVERY_STATUS_QOS)
        self.command = list(GOOD_COMMAND)
        self.command_joints = list(JOINTS)
        self.disagreement = 0.1
        self.status = CommandStatus.PLANNED
        self.planning = True
        self.sim_time = sim_time
        self.sequence = 0
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.sim_time_s = 100.0
        self.create_timer(1.0 / RATE_HZ, self.publish)
        self.estop = self.create_client(SetBool, "/safety_gate/estop")
        self.reset = self.create_client(Trigger, "/safety_gate/reset")

    def now_stamp(self):
        if self.sim_time:
            return seconds_to_stamp(self.sim_time_s)
        return self.get_clock().now().to_msg()

    def publish(self):
        self.sim_time_s += 1.0 / RATE_HZ
        self.clock_pub.publish(Clock(clock=Time(seconds=self.sim_time_s).to_msg()))
        state = JointState(name=JOINTS + ["gripper"], position=[0.1, 0.2, 0.0],
                           velocity=[0.0, 0.0, 0.0])
        state.header.stamp = self.now_stamp()
        self.state_pub.publish(state)
        if self.planning:
            self.publish_command(state.header.stamp)

    def publish_command(self, stamp, command=None, joints=None):
        self.sequence += 1
        values = self.command if command is None else command
        names = self.command_joints if joints is None else joints
        msg = PlannedCommand(sequence=self.sequence, status=int(self.status),
                             joint_names=list(names))
        msg.header.stamp = stamp
        if self.status not in (CommandStatus.FAILED, CommandStatus.INFEASIBLE):
            msg.points = planned_command_message(
                names, np.zeros((1, len(names))), [0.0], [self.disagreement], stamp, 0, 0,
                0).points
            msg.points[0].command = [float(v) for v in values]
        self.command_pub.publish(msg)

    def send_disagreement(self, value: float):
        self.disagreement = value


def make_system(ros_context, extra_overrides=()):
    """Gate node + fake robot/planner on one executor, spun until the gate passes commands."""
    overrides = list(extra_overrides) + [
        Parameter("joints", value=JOINTS), Parameter("control_rate_hz", value=RATE_HZ),
        Parameter("watchdog_timeout_s", value=1.5 / RATE_HZ),
        Parameter("effort_limit", value=[5.0, 5.0]), Parameter("resume_ticks", value=3),
        Parameter("disagreement_threshold", value=1.0),
        Parameter("disagreement_resume", value=0.5)]
    gate = gate_node.SafetyGateNode(context=ros_context, parameter_overrides=overrides)
    fake = FakeRobotAndPlanner(ros_context, sim_time=any(
        p.name == "use_sim_time" and p.value for p in overrides))
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(gate)
    executor.add_node(fake)
    assert spin_until(executor, lambda: fake.statuses and fake.statuses[-1].state == PASS,
                      TIMEOUT_S), "gate never passed the planner command"
    return executor, gate, fake


@pytest.fixture
def system(ros_context):
    executor, gate, fake = make_system(ros_context)
    yield executor, fake
    executor.shutdown()
    gate.destroy_node()
    fake.destroy_node()


def wait_for_state(executor, fake, state, timeout_s=TIMEOUT_S) -> int:
    """Spin until the gate reports ``state``; returns the index of that status."""
    start = len(fake.statuses)
    assert spin_until(executor, lambda: any(s.state == state for s in fake.statuses[start:]),
                      timeout_s), f"gate never reached state {state}"
    return next(i for i in range(start, len(fake.statuses)) if fake.statuses[i].state == state)


def call(executor, client, request):
    assert client.wait_for_service(timeout_sec=TIMEOUT_S)
    future = client.call_async(request)
    assert spin_until(executor, future.done, TIMEOUT_S)
    return future.result()


def test_falls_back_when_planner_stops_and_resumes(system):
    executor, fake = system
    np.testing.assert_array_equal(fake.outputs[-1], GOOD_COMMAND)
    fake.planning = False
    first_after_stop = len(fake.statuses)
    index = wait_for_state(executor, fake, FALLBACK)
    # The next command was due one period after the last; the fallback follows within 2 ticks.
    passes_after_stop = sum(s.state == PASS for s in fake.statuses[first_after_stop:index])
    assert passes_after_stop <= 3, passes_after_stop
    assert "watchdog" in fake.statuses[index].reason
    assert fake.statuses[index].command_age_s > fake.statuses[index].watchdog_timeout_s
    # Silence is not safe: the fallback (hold at rest = zero effort) keeps being published.
    outputs_before = len(fake.outputs)
    spin_until(executor, lambda: False, 5.0 / RATE_HZ)
    assert len(fake.outputs) - outputs_before >= 2
    np.testing.assert_allclose(fake.outputs[-1], [0.0, 0.0])
    fake.planning = True
    wait_for_state(executor, fake, PASS)
    assert fake.statuses[-1].interventions >= 1


def test_disagreement_hysteresis_and_estop_latch(system):
    executor, fake = system
    sent_at = len(fake.statuses)
    fake.send_disagreement(2.0)
    index = wait_for_state(executor, fake, FALLBACK)
    assert index - sent_at <= 2, "fallback took more than 2 control periods"
    assert "disagreement" in fake.statuses[index].reason
    fake.send_disagreement(0.8)  # below threshold, above resume: stays in fallback
    spin_until(executor, lambda: False, 5.0 / RATE_HZ)
    assert fake.statuses[-1].state == FALLBACK
    sent_at = len(fake.statuses)
    fake.send_disagreement(0.1)
    index = wait_for_state(executor, fake, PASS)
    # PASS comes on the 3rd consecutive tick below disagreement_resume (resume_ticks = 3).
    assert index - sent_at >= 2, "resumed before resume_ticks ticks below disagreement_resume"

    assert call(executor, fake.estop, SetBool.Request(data=True)).success
    wait_for_state(executor, fake, ESTOP)
    start = len(fake.statuses)
    spin_until(executor, lambda: False, 6.0 / RATE_HZ)  # good inputs do not release it
    assert all(s.state == ESTOP for s in fake.statuses[start:])
    assert not call(executor, fake.estop, SetBool.Request(data=False)).success
    response = call(executor, fake.reset, Trigger.Request())
    assert response.success, response.message
    wait_for_state(executor, fake, PASS)


def test_nan_or_wrong_size_commands_never_reach_the_robot(system):
    executor, fake = system
    for garbage in ([math.nan, 0.0], [0.0, math.inf], [1.0, 2.0, 3.0], [], [1e308 * 10]):
        fake.command = garbage
        wait_for_state(executor, fake, FALLBACK)
        spin_until(executor, lambda: False, 3.0 / RATE_HZ)
        # Malformed joint states are handled too.
        fake.state_pub.publish(JointState(name=JOINTS, position=[0.1], velocity=[]))
        fake.command = GOOD_COMMAND
        spin_until(executor, lambda: False, 2.0 / RATE_HZ)
        assert fake.statuses[-1].state == FALLBACK, "invalid command must latch until reset"
        response = call(executor, fake.reset, Trigger.Request())
        assert response.success, response.message
        wait_for_state(executor, fake, PASS)
    for output in fake.outputs:
        assert output.shape == (2,) and np.isfinite(output).all()
        assert np.all(np.abs(output) <= 5.0)


def test_ticks_follow_simulation_time(ros_context):
    executor, gate, fake = make_system(ros_context, [Parameter("use_sim_time", value=True)])
    try:
        stamp = fake.statuses[-1].header.stamp
        assert 100.0 <= stamp.sec + stamp.nanosec * 1e-9 < 1000.0  # simulation, not wall time
        fake.planning = False
        wait_for_state(executor, fake, FALLBACK)
        fake.planning = True
        wait_for_state(executor, fake, PASS)
    finally:
        executor.shutdown()
        gate.destroy_node()
        fake.destroy_node()


def test_parameters_map_to_config_and_bad_configuration_is_refused(ros_context):
    config = gate_node.gate_config_from_parameters(
        {"joints": JOINTS, "effort_limit": 4.0, "hold_kp": [1.0, 2.0], "use_sim_time": False})
    assert config.per_joint("effort_limit").tolist() == [4.0, 4.0]
    assert config.per_joint("hold_kp").tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="joints"):
        gate_node.SafetyGateNode(context=ros_context)
    with pytest.raises(ValueError, match="disagreement_resume"):
        gate_node.SafetyGateNode(context=ros_context, parameter_overrides=[
            Parameter("joints", value=JOINTS), Parameter("effort_limit", value=1.0),
            Parameter("disagreement_resume", value=5.0)])


def test_joints_and_limits_come_from_the_urdf_unless_given(ros_context):
    gate = gate_node.SafetyGateNode(context=ros_context, parameter_overrides=[
        Parameter("urdf", value=str(ARM7_URDF))])
    try:
        assert len(gate.config.joints) == 7
        assert gate.config.per_joint("effort_limit")[0] == pytest.approx(87.0)
        assert gate.config.per_joint("position_upper")[0] == pytest.approx(2.8973)
    finally:
        gate.destroy_node()
    joints = list(gate.config.joints[:2])
    gate = gate_node.SafetyGateNode(context=ros_context, parameter_overrides=[
        Parameter("urdf", value=str(ARM7_URDF)), Parameter("joints", value=joints[::-1]),
        Parameter("effort_limit", value=10.0)])
    try:
        assert list(gate.config.joints) == joints[::-1]
        assert gate.config.per_joint("effort_limit").tolist() == [10.0, 10.0]
        assert gate.config.per_joint("position_lower").tolist() == pytest.approx(
            [-1.7628, -2.8973])
    finally:
        gate.destroy_node()
    with pytest.raises(ValueError, match="not actuated joints"):
        gate_node.SafetyGateNode(context=ros_context, parameter_overrides=[
            Parameter("urdf", value=str(ARM7_URDF)), Parameter("joints", value=["nope"])])


@pytest.mark.parametrize("forward", [True, False])
def test_commands_are_forwarded_as_they_arrive(ros_context, forward):
    """With forward_on_command each planner command (20 Hz here) goes out when it arrives, not
    at the gate's next tick (2 Hz here); without it only the timer publishes."""
    gate = gate_node.SafetyGateNode(context=ros_context, parameter_overrides=[
        Parameter("joints", value=JOINTS), Parameter("control_rate_hz", value=2.0),
        Parameter("watchdog_timeout_s", value=1.0), Parameter("effort_limit", value=[5.0]),
        Parameter("forward_on_command", value=forward)])
    fake = FakeRobotAndPlanner(ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(gate)
    executor.add_node(fake)
    try:
        assert spin_until(executor, lambda: any(np.allclose(o, GOOD_COMMAND)
                                                for o in fake.outputs), TIMEOUT_S)
        start = len(fake.outputs)
        spin_until(executor, lambda: False, 2.0)
        passed = [o for o in fake.outputs[start:] if np.allclose(o, GOOD_COMMAND)]
        if forward:
            assert len(passed) >= 0.5 * 20 * 2.0, len(passed)  # about one per planner command
        else:
            assert len(fake.outputs) - start <= 2.0 * 2.0 + 1  # one per gate tick
    finally:
        executor.shutdown()
        gate.destroy_node()
        fake.destroy_node()


def test_commands_are_mapped_by_joint_name_and_unknown_joints_refused(ros_context):
    executor, gate, fake = make_system(ros_context,
                                       [Parameter("latching_faults", value=["internal_error"])])
    try:
        fake.command_joints, fake.command = JOINTS[::-1], GOOD_COMMAND[::-1]
        assert spin_until(executor, lambda: len(fake.outputs) > 3
                          and np.allclose(fake.outputs[-1], GOOD_COMMAND), TIMEOUT_S)
        fake.command_joints = ["shoulder", "wrist"]
        index = wait_for_state(executor, fake, FALLBACK)
        assert "missing ['elbow']" in fake.statuses[index].reason
    finally:
        executor.shutdown()
        gate.destroy_node()
        fake.destroy_node()


def test_a_failed_plan_is_held_and_stale_joint_states_are_refused(system):
    executor, fake = system
    fake.status = CommandStatus.FAILED
    index = wait_for_state(executor, fake, FALLBACK)
    assert "failed" in fake.statuses[index].reason
    fake.status = CommandStatus.PLANNED
    wait_for_state(executor, fake, PASS)
    fake.planning = False  # from here the test publishes: a state stamped 1 s ago
    old = fake.get_clock().now() - rclpy_duration(1.0)
    for _ in range(3):
        state = JointState(name=JOINTS, position=[0.1, 0.2], velocity=[0.0, 0.0])
        state.header.stamp = old.to_msg()
        fake.state_pub.publish(state)
        fake.publish_command(fake.get_clock().now().to_msg())
        spin_until(executor, lambda: False, 1.0 / RATE_HZ)
    index = wait_for_state(executor, fake, FALLBACK)
    assert "old" in fake.statuses[index].reason or "watchdog" in fake.statuses[index].reason


def rclpy_duration(seconds: float):
    from rclpy.duration import Duration
    return Duration(seconds=seconds)


GATE_PARAMS = """/**/safety_gate:
  ros__parameters:
    joints: [shoulder, elbow]
    control_rate_hz: 50.0
    control_mode: position
    watchdog_timeout_s: 0.1
    position_lower: [-2.0, -2.0]
    position_upper: [2.0, 2.0]
    velocity_limit: [2.0, 2.0]
    max_position_step: [0.3, 0.3]
"""


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGINT, signal.SIGINT],
                                     [signal.SIGTERM]])
def test_gate_process_sends_a_final_hold_and_exits_promptly(ros_context, tmp_path, signals):
    """The gate's last command is a hold at the measured position, on one SIGINT, on two in a
    row (ros2 launch without a terminal) and on SIGTERM; it exits with 0 within 3 s."""
    params = tmp_path / "gate.yaml"
    params.write_text(GATE_PARAMS)
    gate = subprocess.Popen([sys.executable, "-m", "mbrl_ros.nodes.safety_gate_node",
                             "--ros-args", "--params-file", str(params)],
                            env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    fake = FakeRobotAndPlanner(ros_context)
    fake.command = [0.25, 0.1]  # a moving planner target 0.15 rad / 0.1 rad from the joints
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(fake)
    try:
        assert spin_until(executor, lambda: fake.outputs and np.allclose(
            fake.outputs[-1], fake.command), 20.0), "gate never passed the command"
        start = time.monotonic()
        for signum in signals:
            gate.send_signal(signum)
            time.sleep(0.02)
        while gate.poll() is None and time.monotonic() - start < 5.0:
            executor.spin_once(timeout_sec=0.01)
        stop_s = time.monotonic() - start
        spin_until(executor, lambda: False, 0.3)  # let the last messages arrive
        output = gate.communicate(timeout=5)[0].decode()
        assert gate.returncode == 0, output
        assert stop_s < 3.0, f"stopped after {stop_s:.2f} s"
        np.testing.assert_allclose(fake.outputs[-1], [0.1, 0.2], atol=1e-9)
        assert "final hold" in output
    finally:
        if gate.poll() is None:
            gate.kill()
            gate.wait()
        executor.shutdown()
        fake.destroy_node()


ARM_HOME = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]
"""The 7-DoF arm's ready pose: its end effector 0.487 m above the base."""
TABLE_HEIGHT = 0.45
"""A table just under the end effector at home: 0.15 rad of the elbow puts it below."""


class FakeArm(FakeRobotAndPlanner):
    """The 7-DoF arm resting at home, and a planner commanding position targets."""

    def __init__(self, context, joints):
        super().__init__(context)
        self.joints = list(joints)
        self.command_joints = list(joints)
        self.command = list(ARM_HOME)

    def publish(self):
        state = JointState(name=self.joints, position=ARM_HOME, velocity=[0.0] * 7)
        state.header.stamp = self.now_stamp()
        self.state_pub.publish(state)
        if self.planning:
            self.publish_command(state.header.stamp)


def elbow_moved(delta: float):
    command = list(ARM_HOME)
    command[3] += delta
    return command


def test_a_target_under_the_table_is_held_and_one_back_above_passes(ros_context):
    """Position mode, kinematics from the URDF: the gate holds a target that lowers the end
    effector under the table (joints 1 and 2, fixed under it at 0.333 m, lock nothing) and
    passes the planner again when it commands a way back up."""
    no_urdf = gate_node.SafetyGateNode(context=ros_context, parameter_overrides=[
        Parameter("joints", value=JOINTS), Parameter("effort_limit", value=1.0)])
    assert no_urdf.workspace is None
    no_urdf.destroy_node()
    gate = gate_node.SafetyGateNode(context=ros_context, parameter_overrides=[
        Parameter("urdf", value=str(ARM7_URDF)), Parameter("control_mode", value="position"),
        Parameter("control_rate_hz", value=RATE_HZ),
        Parameter("watchdog_timeout_s", value=1.5 / RATE_HZ),
        Parameter("max_position_step", value=0.5),
        Parameter("workspace.floor_height", value=TABLE_HEIGHT),
        # one decision per joint state (with forwarding, the command arriving a millisecond
        # after each joint state would get a second one, the first step of a resume ramp)
        Parameter("forward_on_command", value=False)])
    assert gate.workspace is not None
    fake = FakeArm(ros_context, gate.config.joints)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(gate)
    executor.add_node(fake)
    try:
        wait_for_state(executor, fake, PASS)
        fake.command = elbow_moved(-0.15)
        index = wait_for_state(executor, fake, FALLBACK)
        assert "ee_link" in fake.statuses[index].reason
        assert "below the floor" in fake.statuses[index].reason
        spin_until(executor, lambda: False, 2.0 / RATE_HZ)
        np.testing.assert_allclose(fake.outputs[-1], ARM_HOME)      # held where it is
        fake.command = elbow_moved(0.15)
        wait_for_state(executor, fake, PASS)
        assert spin_until(executor, lambda: np.allclose(fake.outputs[-1], fake.command),
                          TIMEOUT_S)
    finally:
        executor.shutdown()
        gate.destroy_node()
        fake.destroy_node()
