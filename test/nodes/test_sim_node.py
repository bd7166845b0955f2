"""Integration test of the MuJoCo simulator node on real topics and services (in-process)."""

import math
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_helpers import spin_until
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from mbrl_ros.nodes.sim_node import SimNode

ARM = str(Path(__file__).resolve().parents[2] / "urdf" / "arm7.urdf")
TIMEOUT_S = 10.0


class Probe(Node):
    """Sends commands and service calls; records /clock and /joint_states."""

    def __init__(self, context):
        super().__init__("sim_probe", context=context)
        self.states: List[JointState] = []
        self.clock: List[float] = []
        self.create_subscription(JointState, "/joint_states", self.states.append, 100)
        self.create_subscription(
            Clock, "/clock", lambda m: self.clock.append(m.clock.sec + 1e-9 * m.clock.nanosec),
            100)
        self.command_pub = self.create_publisher(Float64MultiArray, "/effort_controller/commands",
                                                 10)
        services = (("reset", Trigger), ("pause", SetBool), ("step", Trigger))
        self.service_clients = {name: self.create_client(kind, f"/sim/{name}")
                                for name, kind in services}

    def call(self, executor, name, request):
        client = self.service_clients[name]
        assert client.wait_for_service(timeout_sec=TIMEOUT_S)
        future = client.call_async(request)
        assert spin_until(executor, future.done, TIMEOUT_S)
        return future.result()

    def latest(self):
        return self.states[-1]


def _setup(ros_context, rtf):
    overrides = [Parameter("urdf", value=ARM), Parameter("real_time_factor", value=rtf),
                 Parameter("joints", value=[f"arm_joint{i}" for i in range(1, 8)])]
    sim = SimNode(context=ros_context, parameter_overrides=overrides)
    probe = Probe(ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(sim)
    executor.add_node(probe)
    return sim, probe, executor


def test_effort_commands_bad_commands_reset_pause(ros_context):
    sim, probe, executor = _setup(ros_context, 0.0)  # as fast as possible
    try:
        assert spin_until(executor, lambda: len(probe.states) > 5, TIMEOUT_S)
        assert list(probe.latest().name) == [f"arm_joint{i}" for i in range(1, 8)]
        # pause, then advance one control period per ~/step call: deterministic timing
        assert probe.call(executor, "pause", SetBool.Request(data=True)).success
        assert probe.call(executor, "reset", Trigger.Request()).success
        home = sim.sim.model.key_qpos[0]  # the 'home' keyframe
        paused_at = sim.sim.time
        for _ in range(10):
            executor.spin_once(timeout_sec=0.01)
        assert sim.sim.time == paused_at  # paused: time stands still
        assert probe.call(executor, "step", Trigger.Request()).success
        assert sim.sim.time == pytest.approx(paused_at + sim.config.control_period)
        assert spin_until(executor, lambda: probe.command_pub.get_subscription_count() > 0,
                          TIMEOUT_S)
        command = [8.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # turn the base joint (vertical axis)
        probe.command_pub.publish(Float64MultiArray(data=command))
        assert spin_until(executor, lambda: sim.sim.data.ctrl[0] == 8.0, TIMEOUT_S)
        # bad commands are dropped and the last valid one is held
        for bad in ([math.nan] * 7, [1.0] * 6, [math.inf] + [0.0] * 6):
            probe.command_pub.publish(Float64MultiArray(data=bad))
        spin_until(executor, lambda: False, 0.3)
        first = len(probe.states)
        for _ in range(20):
            assert probe.call(executor, "step", Trigger.Request()).success
        assert spin_until(executor, lambda: len(probe.states) >= first + 20, TIMEOUT_S)
        recent = probe.states[first:]
        assert all(state.effort[0] == 8.0 for state in recent)
        # consistent motion: positive torque -> positive velocity, positions integrate velocity
        stamps = np.array([s.header.stamp.sec + 1e-9 * s.header.stamp.nanosec for s in recent])
        np.testing.assert_allclose(np.diff(stamps), sim.config.control_period, atol=1e-6)
        positions = np.array([s.position[0] for s in recent])
        velocities = np.array([s.velocity[0] for s in recent])
        assert np.all(velocities > 0) and np.all(np.diff(positions) > 0)
        assert positions[-1] > home[0]
        midpoint = 0.5 * (velocities[1:] + velocities[:-1])
        np.testing.assert_allclose(np.diff(positions) / np.diff(stamps), midpoint, rtol=0.1)
        assert probe.call(executor, "pause", SetBool.Request(data=False)).success
        assert not probe.call(executor, "step", Trigger.Request()).success  # only when paused
        assert spin_until(executor, lambda: probe.clock[-1] > 1.0, TIMEOUT_S)  # runs again
        # reset (paused, so the published reset state is the latest): home pose; the clock
        # never goes back
        assert probe.call(executor, "pause", SetBool.Request(data=True)).success
        before = probe.clock[-1]
        assert probe.call(executor, "reset", Trigger.Request()).success
        assert spin_until(executor, lambda: np.allclose(probe.latest().position, home),
                          TIMEOUT_S)
        assert all(b >= a for a, b in zip(probe.clock, probe.clock[1:]))
        assert probe.clock[-1] >= before
        np.testing.assert_allclose(probe.latest().position, home)
        np.testing.assert_allclose(probe.latest().velocity, 0.0)
    finally:
        executor.shutdown()
        sim.destroy_node()
        probe.destroy_node()


@pytest.mark.parametrize("rtf", [1.0, 3.0])
def test_sim_time_runs_at_real_time_factor(ros_context, rtf):
    sim, probe, executor = _setup(ros_context, rtf)
    try:
        assert spin_until(executor, lambda: len(probe.clock) > 2, TIMEOUT_S)
        sim_start, wall_start = probe.clock[-1], time.monotonic()
        spin_until(executor, lambda: False, 1.5)
        ratio = (probe.clock[-1] - sim_start) / (time.monotonic() - wall_start)
        assert 0.8 * rtf < ratio < 1.1 * rtf
    finally:
        executor.shutdown()
        sim.destroy_node()
        probe.destroy_node()
