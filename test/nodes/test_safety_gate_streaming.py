"""The safety gate node with streamed plans and with a joint_trajectory_controller output, on
real topics.

Simulated time (/clock published by the test) makes the timing checks exact: each output is
judged at the simulated time of the tick that made it (the GateStatus published with it).
"""

import contextlib

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from ros_helpers import spin_until
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from mbrl_ros.core.safety_gate_config import CommandStatus
from mbrl_ros.msg import GateStatus, PlannedCommand
from mbrl_ros.nodes import safety_gate_node as gate_node
from mbrl_ros.nodes.conversions import (duration_to_seconds, planned_command_message,
                                        seconds_to_stamp, stamp_to_seconds)

JOINTS = ["shoulder", "elbow"]
RECORD = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
"""The test keeps every message (the gate's output QoS keeps one)."""
PASS, FALLBACK = GateStatus.STATE_PASS, GateStatus.STATE_FALLBACK


class Probe:
    """Publishes /clock, joint states and planned commands; records the gate's outputs and
    statuses (one status per output, in the same order)."""

    def __init__(self, context, output_type=Float64MultiArray,
                 output_topic=gate_node.COMMAND_TOPIC):
        from rclpy.node import Node
        self.node = Node("gate_streaming_probe", context=context)
        self.clock_pub = self.node.create_publisher(Clock, "/clock", 10)
        self.state_pub = self.node.create_publisher(JointState, gate_node.JOINT_STATES_TOPIC,
                                                    gate_node.STATE_QOS)
        self.command_pub = self.node.create_publisher(
            PlannedCommand, gate_node.PLANNED_COMMAND_TOPIC, gate_node.COMMAND_QOS)
        self.outputs, self.statuses = [], []
        self.node.create_subscription(output_type, output_topic, self.outputs.append, RECORD)
        self.node.create_subscription(GateStatus, gate_node.GATE_STATUS_TOPIC,
                                      self.statuses.append, RECORD)
        self.sequence = 0

    def state(self, stamp_s: float, position=(0.0, 0.0)):
        msg = JointState(name=JOINTS, position=list(position), velocity=[0.0, 0.0])
        msg.header.stamp = seconds_to_stamp(stamp_s)
        self.state_pub.publish(msg)

    def plan(self, stamp_s, points, times, disagreement, status=CommandStatus.PLANNED):
        self.sequence += 1
        self.command_pub.publish(planned_command_message(
            JOINTS, np.asarray(points, float), times, disagreement, seconds_to_stamp(stamp_s),
            self.sequence, 1, int(status)))


def make_gate(context, *parameters):
    gate = gate_node.SafetyGateNode(context=context, parameter_overrides=[
        Parameter("joints", value=JOINTS), *parameters])
    return gate


def advance(executor, probe, gate, now_s):
    """Publish the simulated time ``now_s`` and spin until the gate's clock shows it and its
    callbacks due then (the control tick) have run."""
    probe.clock_pub.publish(Clock(clock=Time(seconds=now_s).to_msg()))
    assert spin_until(executor, lambda: gate.get_clock().now().nanoseconds >= round(
        now_s * 1e9) - 1, 5.0), f"the gate's clock never reached {now_s}"
    for _ in range(4):
        executor.spin_once(timeout_sec=0.002)


def sampled(t, times, points):
    """The plan at ``t`` s after its stamp: linear interpolation, held after the last point."""
    points = np.asarray(points, float)
    return np.array([np.interp(t, times, column) for column in points.T])


def test_a_streamed_plan_is_sampled_on_every_control_tick(ros_context):
    """A plan of timed points, sent once, gives a fresh gated sample every control period (the
    interpolated plan at the tick's time, the last point after its end); a plan forwarded
    between two ticks restarts the period: no two outputs are further apart than a period."""
    period, step, start = 0.1, 0.01, 100.0
    gate = make_gate(ros_context, Parameter("use_sim_time", value=True),
                     Parameter("control_rate_hz", value=1.0 / period),
                     Parameter("effort_limit", value=[5.0, 5.0]),
                     Parameter("plan_sampling", value="linear"),
                     Parameter("resume_ramp_s", value=0.0),
                     Parameter("watchdog_timeout_s", value=1.0),
                     Parameter("state_timeout_s", value=1.0),
                     Parameter("disagreement_threshold", value=1.0),
                     Parameter("disagreement_resume", value=0.5))
    probe = Probe(ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(gate)
    executor.add_node(probe.node)
    times, points = [0.0, 0.2, 0.4], [[0.0, 0.0], [1.0, -2.0], [2.0, -4.0]]
    spread = [0.1, 0.3, 0.2]
    later_times, later_points = [0.0, 0.3], [[-1.0, 1.0], [-2.0, 2.0]]
    later_at = start + 0.86
    try:
        assert spin_until(executor, lambda: all(
            pub.get_subscription_count() > 0
            for pub in (probe.clock_pub, probe.command_pub, probe.state_pub)), 5.0)
        advance(executor, probe, gate, start)
        probe.state(start)
        spin_until(executor, lambda: False, 0.1)  # the state before the plan
        probe.plan(start, points, times, spread)
        assert spin_until(executor, lambda: probe.statuses
                          and probe.statuses[-1].state == PASS, 5.0), "no pass"
        first = len(probe.statuses)
        now = start
        for k in range(1, 151):  # 1.5 s of simulated time in 10 ms steps
            now = start + k * step
            advance(executor, probe, gate, now)
            if k % 25 == 0:  # joint states now and then (they also trigger an output when due)
                probe.state(now)
            if abs(now - later_at) < 1e-9:
                switch = len(probe.statuses)  # outputs from here on may sample the later plan
                probe.plan(later_at, later_points, later_times, [0.1, 0.1])
                assert spin_until(executor, lambda: stamp_to_seconds(
                    probe.statuses[-1].header.stamp) >= later_at - 1e-6, 5.0), "not forwarded"
        assert spin_until(executor, lambda: len(probe.outputs) == len(probe.statuses), 2.0)
        stamps = np.array([stamp_to_seconds(s.header.stamp) for s in probe.statuses])
        outputs = np.array([o.data for o in probe.outputs])
        assert all(s.state == PASS for s in probe.statuses[first:])
        for index, (stamp, output, status) in enumerate(zip(stamps, outputs, probe.statuses)):
            if index < first:
                continue
            if index < switch:
                expected = sampled(stamp - start, times, points)
                age = stamp - start
                after = int(np.searchsorted(times, min(age, times[-1]), side="right"))
                judged = max(spread[max(after - 1, 0)], spread[min(after, len(times) - 1)])
                assert status.disagreement == pytest.approx(judged), (stamp, status)
            else:
                expected = sampled(stamp - later_at, later_times, later_points)
            np.testing.assert_allclose(output, expected, atol=1e-9, err_msg=f"at {stamp}")
        intervals = np.diff(stamps[first:])
        # every period gets its output (a late timer costs at most a step of the test's clock)
        assert intervals.max() <= period + 2 * step + 1e-6, intervals.round(3).tolist()
        assert intervals.min() > 0.0
        # about one output per period: 1.5 s of ticks, the forwarded plan's output on top
        assert 14 <= len(intervals) <= 18, len(intervals)
        # after the first plan's end (0.4 s) the gate held its last point
        held = [o for s, o in zip(stamps[first:], outputs[first:])
                if start + 0.4 <= s < later_at - 1e-6]
        assert len(held) >= 3
        np.testing.assert_allclose(held, [points[-1]] * len(held))
    finally:
        executor.shutdown()
        gate.destroy_node()
        probe.node.destroy_node()


def test_joint_trajectory_output_carries_the_gated_command_and_the_hold(ros_context):
    """output_interface joint_trajectory: each tick one JointTrajectory on
    joint_trajectory_controller/joint_trajectory (the gate's joints, one point a control
    period ahead) carrying the gated command; a refused command gives a hold trajectory, and
    the final hold goes out the same way. Nothing on the forward topic."""
    rate = 20.0
    gate = make_gate(ros_context, Parameter("control_rate_hz", value=rate),
                     Parameter("control_mode", value="position"),
                     Parameter("output_interface", value="joint_trajectory"),
                     Parameter("position_lower", value=[-2.0, -2.0]),
                     Parameter("position_upper", value=[2.0, 2.0]),
                     Parameter("velocity_limit", value=[2.0, 2.0]),
                     Parameter("max_position_step", value=[0.3, 0.3]),
                     Parameter("watchdog_timeout_s", value=0.5),
                     Parameter("state_timeout_s", value=0.5))
    probe = Probe(ros_context, JointTrajectory, gate_node.TRAJECTORY_TOPIC)
    forwarded = []
    probe.node.create_subscription(Float64MultiArray, gate_node.COMMAND_TOPIC,
                                   forwarded.append, RECORD)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(gate)
    executor.add_node(probe.node)
    measured, target = [0.1, 0.2], [0.25, 0.1]
    state = {"status": CommandStatus.PLANNED}

    def robot_and_planner():
        now = probe.node.get_clock().now().nanoseconds * 1e-9
        probe.state(now, measured)
        probe.plan(now, [target], [0.0], [0.1], state["status"])
    probe.node.create_timer(1.0 / rate, robot_and_planner)

    def positions(msg):
        return np.array(msg.points[0].positions)
    try:
        assert spin_until(executor, lambda: probe.outputs and np.allclose(
            positions(probe.outputs[-1]), target), 10.0), "the gated command never went out"
        for msg in probe.outputs:
            assert list(msg.joint_names) == JOINTS and len(msg.points) == 1
            assert duration_to_seconds(msg.points[0].time_from_start) == pytest.approx(
                1.0 / rate)
            assert stamp_to_seconds(msg.header.stamp) == 0.0  # start now
            assert not msg.points[0].velocities and not msg.points[0].effort
        state["status"] = CommandStatus.FAILED  # refused: a hold where the robot is
        count = len(probe.statuses)
        assert spin_until(executor, lambda: any(
            s.state == FALLBACK for s in probe.statuses[count:]), 5.0)
        spin_until(executor, lambda: False, 3.0 / rate)
        np.testing.assert_allclose(positions(probe.outputs[-1]), measured)
        count = len(probe.outputs)
        gate.on_shutdown()
        assert spin_until(executor, lambda: len(probe.outputs) > count, 2.0)
        np.testing.assert_allclose(positions(probe.outputs[-1]), measured)
        assert not forwarded, "the forward topic was used"
    finally:
        executor.shutdown()
        gate.destroy_node()
        probe.node.destroy_node()


@pytest.mark.parametrize("mode,interface,error", [
    ("effort", "joint_trajectory", "needs control_mode 'position'"),
    ("velocity", "joint_trajectory", "needs control_mode 'position'"),
    ("position", "trajectory", "output_interface must be one of")])
def test_output_interfaces_that_make_no_sense_are_refused(ros_context, mode, interface, error):
    with pytest.raises(ValueError, match=error):
        make_gate(ros_context, Parameter("control_mode", value=mode),
                  Parameter("output_interface", value=interface),
                  Parameter("effort_limit", value=[5.0, 5.0]),
                  Parameter("velocity_limit", value=[2.0, 2.0]),
                  Parameter("position_lower", value=[-2.0, -2.0]),
                  Parameter("position_upper", value=[2.0, 2.0]),
                  Parameter("max_position_step", value=[0.3, 0.3]))


@contextlib.contextmanager
def scheduled_gate(context, period: float, start: float):
    """A gate on simulated time at ``1 / period`` Hz, ticking on joint states only
    (no forwarding), with the probe connected and the clock at ``start``."""
    gate = make_gate(context, Parameter("use_sim_time", value=True),
                     Parameter("control_rate_hz", value=1.0 / period),
                     Parameter("effort_limit", value=[5.0, 5.0]),
                     Parameter("forward_on_command", value=False))
    probe = Probe(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(gate)
    executor.add_node(probe.node)
    try:
        assert spin_until(executor, lambda: all(
            pub.get_subscription_count() > 0 for pub in (probe.clock_pub, probe.state_pub)),
            5.0)
        advance(executor, probe, gate, start)
        yield gate, probe, executor
    finally:
        executor.shutdown()
        gate.destroy_node()
        probe.node.destroy_node()


def test_each_joint_state_at_the_control_rate_gets_one_output(ros_context):
    """The gate answers each joint state by its stamp (the robot's tick), even when its clock
    still shows the previous tick (simulated time arrives after the joint state), and its timer
    adds nothing while joint states keep coming: one output per joint state."""
    period, start, ticks = 0.01, 50.0, 40
    with scheduled_gate(ros_context, period, start) as (gate, probe, executor):
        spin_until(executor, lambda: False, 0.1)
        first = len(probe.statuses)
        for k in range(1, ticks + 1):
            now = start + k * period
            probe.state(now)  # the robot's tick k, before the clock shows it
            assert spin_until(executor, lambda: len(probe.statuses) >= first + k, 2.0), \
                f"joint state {k} unanswered"
            advance(executor, probe, gate, now)
        spin_until(executor, lambda: False, 0.1)
        assert len(probe.statuses) - first == ticks


def test_a_backlog_of_joint_states_gets_one_output(ros_context):
    """Joint states the gate handles late (its clock a few periods past their stamps) are
    scheduled by the clock: a backlog gets at most one output, not a burst of stale ticks."""
    period, start, backlog = 0.01, 80.0, 5
    with scheduled_gate(ros_context, period, start) as (gate, probe, executor):
        late = start + (backlog + 3) * period  # the clock is 3 periods past the last stamp
        advance(executor, probe, gate, late)
        spin_until(executor, lambda: False, 0.1)
        first = len(probe.statuses)
        for k in range(1, backlog + 1):
            probe.state(start + k * period)
        spin_until(executor, lambda: False, 0.3)
        # the timer may have answered this period already: at most one output, never a burst
        assert len(probe.statuses) - first <= 1
