"""Integration test of the MuJoCo simulator node on real topics and services (in-process)."""

import math
import time
from pathlib import Path
from typing import List

import mujoco
import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_helpers import spin_until
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger

from mbrl_ros.nodes.sim_node import SimNode
from mbrl_ros.robots.robot_model import RobotModel
from mbrl_ros.robots.urdf_resolver import resolve_urdf

ARM = str(Path(__file__).resolve().parents[2] / "urdf" / "arm7.urdf")
QUADRUPED = str(Path(__file__).resolve().parents[2] / "urdf" / "quadruped12.urdf")
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
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
        applied_at = sim.sim.time  # states stamped after this were simulated with the command

        def stamped(state):
            return state.header.stamp.sec + 1e-9 * state.header.stamp.nanosec

        for _ in range(20):
            assert probe.call(executor, "step", Trigger.Request()).success
        # by stamp, not by arrival: a state from before the command may arrive late under load
        assert spin_until(executor, lambda: sum(
            stamped(s) > applied_at + 1e-9 for s in probe.states) >= 20, TIMEOUT_S)
        recent = sorted((s for s in probe.states if stamped(s) > applied_at + 1e-9),
                        key=stamped)[:20]
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


@pytest.mark.parametrize("urdf", [ARM, QUADRUPED], ids=["arm", "quadruped"])
def test_robot_description_is_latched_urdf(ros_context, urdf):
    """robot_description as robot_state_publisher has it: reliable, transient local, depth 1,
    so a subscriber (RViz) that comes after the node started still gets the URDF."""
    sim = SimNode(context=ros_context, parameter_overrides=[
        Parameter("urdf", value=urdf), Parameter("real_time_factor", value=0.0)])
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(sim)
    late = Node("late_rviz", context=ros_context)
    try:
        spin_until(executor, lambda: sim.sim.time > 0.05, TIMEOUT_S)  # the node has started
        received: List[String] = []
        late.create_subscription(String, "/robot_description", received.append, LATCHED)
        executor.add_node(late)
        assert spin_until(executor, lambda: received, TIMEOUT_S)
        (info,) = late.get_publishers_info_by_topic("/robot_description")
        assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        assert info.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        assert received[0].data == Path(urdf).read_text()  # the file as written
        published = resolve_urdf(received[0].data)
        assert list(published.joint_limits) == list(resolve_urdf(urdf).joint_limits)
        assert set(sim.sim.joint_names) == set(published.joint_limits)
    finally:
        executor.shutdown()
        sim.destroy_node()
        late.destroy_node()


def _compose(transforms, frame: str, root: str):
    """Pose (rotation [3x3], position [3]) of ``frame`` in ``root`` along the TF tree."""
    parents = {t.child_frame_id: t for t in transforms}
    rotation, position = np.eye(3), np.zeros(3)
    while frame != root:
        transform = parents[frame].transform
        q, p = transform.rotation, transform.translation
        step = np.zeros(9)
        mujoco.mju_quat2Mat(step, np.array([q.w, q.x, q.y, q.z]))
        step = step.reshape(3, 3)
        rotation, position = step @ rotation, step @ position + np.array([p.x, p.y, p.z])
        frame = parents[frame].header.frame_id
    return rotation, position


@pytest.mark.parametrize("urdf, floating", [(ARM, False), (QUADRUPED, True)],
                         ids=["arm", "quadruped"])
def test_link_transforms_match_pinocchio(ros_context, urdf, floating):
    """The TF tree (fixed + moving joints, odom -> base) puts every link where pinocchio's
    forward kinematics does, at a random configuration and base pose."""
    sim = SimNode(context=ros_context, parameter_overrides=[Parameter("urdf", value=urdf)])
    try:
        rng = np.random.default_rng(3)
        model = RobotModel(resolve_urdf(urdf), floating_base=floating, ee_frame=None)
        limits = sim.sim.info.position_limits
        joints = rng.uniform(limits[:, 0], limits[:, 1])
        qpos = sim.sim.data.qpos
        for name, value in zip(sim.sim.joint_names, joints):
            qpos[sim.sim.model.joint(name).qposadr[0]] = value
        base = None
        if floating:
            quat = rng.normal(size=4)
            base = np.concatenate([rng.normal(size=3), quat / np.linalg.norm(quat)])
            qpos[:7] = base
        q = model.full_configuration(
            np.array([joints[sim.sim.joint_names.index(n)] for n in model.joint_names]), base)
        root = sim.config.odom_frame if floating else "world"
        transforms = sim.link_transforms(True) + sim.link_transforms(False)
        children = {t.child_frame_id for t in transforms}
        assert children == set(resolve_urdf(urdf).link_names) - {"world"}
        for link in children:
            rotation, position = _compose(transforms, link, root)
            expected_position, expected_quat = model.frame_pose(link, q)
            expected_rotation = np.zeros(9)
            mujoco.mju_quat2Mat(expected_rotation, expected_quat)
            np.testing.assert_allclose(position, expected_position, atol=1e-6, err_msg=link)
            np.testing.assert_allclose(rotation, expected_rotation.reshape(3, 3), atol=1e-6,
                                       err_msg=link)
    finally:
        sim.destroy_node()


def test_tf_published(ros_context):
    """/tf_static (latched, every fixed joint) and /tf (moving joints, odom -> base) reach a
    late subscriber at the configured rate; where tf2_msgs is installed (ROS 2 with RViz)."""
    tf2_msgs = pytest.importorskip("tf2_msgs.msg")
    sim = SimNode(context=ros_context, parameter_overrides=[
        Parameter("urdf", value=QUADRUPED), Parameter("real_time_factor", value=1.0),
        Parameter("tf_period", value=0.05)])
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(sim)
    late = Node("late_tf", context=ros_context)
    try:
        spin_until(executor, lambda: sim.sim.time > 0.05, TIMEOUT_S)
        static, dynamic = [], []
        late.create_subscription(tf2_msgs.TFMessage, "/tf_static", static.append, LATCHED)
        late.create_subscription(tf2_msgs.TFMessage, "/tf", dynamic.append, 100)
        executor.add_node(late)
        assert spin_until(executor, lambda: static and len(dynamic) > 5, TIMEOUT_S)
        assert {t.child_frame_id for t in static[0].transforms} == {
            "imu_link", "lf_foot", "lh_foot", "rf_foot", "rh_foot"}
        assert dynamic[-1].transforms[0].header.frame_id == "odom"
        assert len(dynamic[-1].transforms) == 13  # odom -> base and the 12 leg joints
        stamps = [m.transforms[0].header.stamp.sec + 1e-9 * m.transforms[0].header.stamp.nanosec
                  for m in dynamic[1:]]
        np.testing.assert_allclose(np.diff(stamps), 0.05, atol=1e-6)
    finally:
        executor.shutdown()
        sim.destroy_node()
        late.destroy_node()
