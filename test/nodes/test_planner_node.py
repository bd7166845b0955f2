"""planner_node on real topics: hot-swaps models between ticks, refuses corrupt and foreign
checkpoints, stamps each command with its source joint state, stops promptly; plans with the
nominal model alone when told to, and switches model source at runtime."""

import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import rclpy
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, Pose, PoseStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Header

from mbrl_ros.core.ensemble import EnsembleConfig
from mbrl_ros.core.residual import ResidualDynamics
from mbrl_ros.core.safety_gate_config import CommandStatus
from mbrl_ros.msg import ModelUpdate, PlannedCommand, PlanStatus
from mbrl_ros.nodes.qos import PLANNED_COMMAND_QOS
from mbrl_ros.tasks.reach import load_robot, nominal_dynamics
from mbrl_ros.robots.servo_model import ServoConfig
from ros_helpers import spin_until

REPO = pathlib.Path(__file__).resolve().parents[2]
URDF = str(REPO / "urdf" / "arm7.urdf")
RATE_HZ = 25.0
HOME = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]  # inside every joint range
KP, KD = (400.0, 500.0, 350.0, 250.0, 60.0, 40.0, 20.0), (40.0,)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _checkpoint(path: pathlib.Path, seed: int) -> str:
    robot = load_robot(URDF)
    nominal = nominal_dynamics(robot, 1.0 / RATE_HZ, 1, torch.device("cpu"),
                               command_mode="position", servo=ServoConfig(KP, KD))
    model = ResidualDynamics.create(nominal, 14, 7, EnsembleConfig(num_members=2, num_elites=2,
                                                                   hidden_sizes=(16,)),
                                    seed=seed)
    return model.save(str(path))


def start_planner(model_dir: pathlib.Path, *parameters: str) -> subprocess.Popen:
    """The planner in its own process, as in production, for the position-controlled arm,
    with ``parameters`` ("name:=value") on top."""
    extra = [item for parameter in parameters for item in ("-p", parameter)]
    return subprocess.Popen([
        sys.executable, "-m", "mbrl_ros.nodes.planner_node", "--ros-args",
        "-p", f"urdf:={URDF}", "-p", f"control_rate_hz:={RATE_HZ}",
        "-p", f"model_dir:={model_dir}",
        "-p", f"model_period_s:={1.0 / RATE_HZ}", "-p", "command_mode:=position",
        "-p", f"servo_kp:={list(KP)}", "-p", f"servo_kd:={list(KD)}",
        "-p", "state_timeout_s:=1.0",
        # a planning step well inside the period, so a late tick would be the planner's fault
        "-p", "planner.num_samples:=32", "-p", "planner.horizon:=5",
        "-p", "planner.num_iterations:=1", *extra])


def planner_probe(ros_context, name: str):
    """A node that talks to the planner as the graph does, with its executor: ``(node,
    executor, the planned commands received, joint state, model update and goal
    publishers)``."""
    probe = rclpy.create_node(name, context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(probe)
    commands = []
    probe.create_subscription(PlannedCommand, "/mbrl/planned_command", commands.append,
                              PLANNED_COMMAND_QOS)
    return (probe, executor, commands, probe.create_publisher(JointState, "/joint_states", 10),
            probe.create_publisher(ModelUpdate, "/mbrl/model_update", LATCHED),
            probe.create_publisher(PoseStamped, "/mbrl/goal", 10))


def test_model_swap_and_corrupt_checkpoints_are_refused(ros_context, tmp_path):
    torch.set_num_threads(1)
    model_dir, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    model_dir.mkdir()
    elsewhere.mkdir()
    # the planner runs as in production, in its own process
    planner = start_planner(model_dir, "disturbance.gain:=0.2", "planner.propagation:=mean")
    probe, executor, commands, joint_pub, update_pub, goal_pub = planner_probe(
        ros_context, "planner_probe")
    statuses = []
    probe.create_subscription(
        PlanStatus, "/mbrl/plan/status",
        lambda m: statuses.append((m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec,
                                   m.model_version, m.exploring)), 100)
    diagnostics = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diagnostics.extend(
        s for s in m.status if s.name.endswith("planner")), 10)
    state_stamps = set()
    robot = load_robot(URDF)
    names = list(reversed(robot.joint_names))  # order must not matter

    def publish_state():
        msg = JointState(name=names, position=HOME[::-1], velocity=[0.0] * 7)
        msg.header.stamp = probe.get_clock().now().to_msg()
        state_stamps.add((msg.header.stamp.sec, msg.header.stamp.nanosec))
        joint_pub.publish(msg)
    probe.create_timer(0.01, publish_state)

    def announce(version, path, sha):
        update_pub.publish(ModelUpdate(version=version, checkpoint_path=str(path), sha256=sha,
                                       model_kind="residual"))
    # checkpoints are written before spinning, so every gap measured is the planner's own
    good, corrupt, wrong_hash, good4 = (model_dir / f"model_00000{v}.mbrl" for v in range(1, 5))
    good_sha, corrupt_sha, good4_sha = (_checkpoint(good, 0), _checkpoint(corrupt, 1),
                                        _checkpoint(good4, 3))
    foreign = elsewhere / "model_000005.mbrl"  # valid, hash matches, outside model_dir
    foreign_sha = _checkpoint(foreign, 4)
    escape = model_dir / "model_000006.mbrl"  # a link inside model_dir leading out of it
    escape.symlink_to(foreign)
    _checkpoint(wrong_hash, seed=2)
    data = bytearray(corrupt.read_bytes())
    data[-10:] = bytes(b ^ 0xFF for b in data[-10:])  # flip them: zeros may be there already
    corrupt.write_bytes(bytes(data))
    try:
        assert spin_until(executor, lambda: len(statuses) > 5, 20.0), "planner is not ticking"
        goal_pub.publish(PoseStamped(header=Header(frame_id="world"),
                                     pose=Pose(position=Point(x=0.4, y=0.1, z=0.5))))
        announce(1, good, good_sha)
        assert spin_until(executor, lambda: statuses[-1][1] == 1, 20.0), "v1 not picked up"
        announce(2, corrupt, corrupt_sha)
        spin_until(executor, lambda: False, 0.5)  # the latched topic keeps the newest only
        announce(3, wrong_hash, "0" * 64)
        count = len(statuses)
        spin_until(executor, lambda: len(statuses) > count + 2 * RATE_HZ, 20.0)
        assert {v for _, v, _ in statuses[count:]} == {1}, "a corrupt model replaced v1"
        announce(5, foreign, foreign_sha)
        spin_until(executor, lambda: False, 0.5)
        announce(6, escape, foreign_sha)
        count = len(statuses)
        spin_until(executor, lambda: len(statuses) > count + RATE_HZ, 20.0)
        assert {v for _, v, _ in statuses[count:]} == {1}, "a foreign checkpoint was loaded"

        announce(7, good4, good4_sha)
        swap = len(statuses)
        assert spin_until(executor, lambda: statuses[-1][1] == 7, 20.0), "v7 not picked up"
        spin_until(executor, lambda: False, 0.5)
        # the swap from v1 to v4 (a checkpoint load off the control thread) costs no tick:
        # status stamps (the planner's clock at publish time) stay one period apart
        assert not statuses[-1][2], "the planner is not planning toward the goal"
        stamps = np.array([status[0] for status in statuses[swap - 5:]])
        assert np.diff(stamps).max() < 2.5 / RATE_HZ, np.diff(stamps).max()
        # every command names its joints, is stamped with a joint state it planned from and
        # numbered in order; explored first, then planned with the model
        assert all(list(c.joint_names) == list(robot.joint_names) for c in commands)
        assert all((c.header.stamp.sec, c.header.stamp.nanosec) in state_stamps
                   for c in commands)
        sequence = [c.sequence for c in commands]
        assert sequence == sorted(sequence) and len(set(sequence)) == len(sequence)
        assert commands[0].status == CommandStatus.EXPLORING
        assert commands[-1].status == CommandStatus.PLANNED and commands[-1].model_version == 7
        assert len(commands[-1].points) == 1 and commands[-1].points[0].disagreement >= 0.0
        assert spin_until(executor, lambda: diagnostics and "model v7" in diagnostics[-1].message,
                          5.0), "planner diagnostics missing"
        values = {kv.key: kv.value for kv in diagnostics[-1].values}
        assert int(values["refused_models"]) == 4  # corrupt, wrong hash, foreign, escaping
    finally:
        start = time.monotonic()
        planner.send_signal(signal.SIGINT)
        planner.wait(timeout=30)
        stop_s = time.monotonic() - start
        executor.shutdown()
        probe.destroy_node()
    assert planner.returncode == 0 and stop_s < 3.0, (planner.returncode, stop_s)
    assert len(statuses) > 2 * RATE_HZ


def test_nominal_model_source_plans_without_data_and_switches_at_runtime(
        ros_context, tmp_path):
    torch.set_num_threads(1)
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    planner = start_planner(model_dir, "model_source:=nominal")
    probe, executor, commands, joint_pub, update_pub, goal_pub = planner_probe(
        ros_context, "nominal_probe")
    robot = load_robot(URDF)
    probe.create_timer(0.01, lambda: joint_pub.publish(JointState(
        header=Header(stamp=probe.get_clock().now().to_msg()), name=list(robot.joint_names),
        position=HOME, velocity=[0.0] * 7)))
    parameters = AsyncParameterClient(probe, "planner")

    def set_source(value):
        future = parameters.set_parameters([Parameter("model_source", value=value)])
        executor.spin_until_future_complete(future, timeout_sec=10.0)
        return future.result().results[0].successful

    def newest(condition):
        count = len(commands)
        return spin_until(executor, lambda: len(commands) > count and condition(commands[-1]),
                          20.0)
    try:
        assert newest(lambda c: c.status == CommandStatus.EXPLORING), "no exploration"
        goal_pub.publish(PoseStamped(header=Header(frame_id="world"),
                                     pose=Pose(position=Point(x=0.4, y=0.1, z=0.5))))
        # no data and no model: planned with the nominal model (version 0)
        assert newest(lambda c: c.status == CommandStatus.PLANNED and c.model_version == 0)
        checkpoint = model_dir / "model_000001.mbrl"
        sha = _checkpoint(checkpoint, 0)
        update_pub.publish(ModelUpdate(version=1, checkpoint_path=str(checkpoint), sha256=sha,
                                       model_kind="residual"))
        spin_until(executor, lambda: False, 1.0)
        assert newest(lambda c: True) and commands[-1].model_version == 0, \
            "a learned model replaced the nominal one"
        assert parameters.wait_for_services(timeout_sec=10.0)
        assert not set_source("neither"), "a bad model source was accepted"
        assert set_source("learned")
        assert newest(lambda c: c.model_version == 1), "the learned model kept aside is unused"
        assert set_source("nominal")
        assert newest(lambda c: c.model_version == 0), "no switch back to the nominal model"
    finally:
        planner.send_signal(signal.SIGINT)
        planner.wait(timeout=30)
        executor.shutdown()
        probe.destroy_node()
    assert planner.returncode == 0
