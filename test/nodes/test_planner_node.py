"""planner_node on real topics: hot-swaps models between ticks, refuses corrupt and foreign
checkpoints, stamps each command with its source joint state, streams the whole plan as timed
points (one with stream_plan off), also as a JointTrajectory when asked, stops promptly; plans
with the nominal model alone when told to, and switches model source at runtime; takes a
learned value/policy only when it fits the planner's task and cost, and uses it as the value.*
parameters say (at run time)."""

import dataclasses
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
from rcl_interfaces.msg import Log
from geometry_msgs.msg import Point, Pose, PoseStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory

from mbrl_ros.core.ensemble import EnsembleConfig
from mbrl_ros.core.residual import ResidualDynamics
from mbrl_ros.core.safety_gate_config import CommandStatus
from mbrl_ros.core.task_reward import task_cost_hash
from mbrl_ros.core.value_policy import ValuePolicy, ValuePolicyConfig
from mbrl_ros.msg import ModelUpdate, PlannedCommand, PlanStatus
from mbrl_ros.nodes.conversions import duration_to_seconds
from mbrl_ros.nodes.qos import PLANNED_COMMAND_QOS
from mbrl_ros.tasks.reach import ReachCostConfig, load_robot, nominal_dynamics
from mbrl_ros.robots.servo_model import ServoConfig
from ros_helpers import spin_until

REPO = pathlib.Path(__file__).resolve().parents[2]
URDF = str(REPO / "urdf" / "arm7.urdf")
RATE_HZ = 25.0
HORIZON = 5
HOME = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]  # inside every joint range
KP, KD = (400.0, 500.0, 350.0, 250.0, 60.0, 40.0, 20.0), (40.0,)
# as the trainer announces: dynamics and value/policy checkpoints share the topic
LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _checkpoint(path: pathlib.Path, seed: int) -> str:
    robot = load_robot(URDF)
    nominal = nominal_dynamics(robot, 1.0 / RATE_HZ, 1, torch.device("cpu"),
                               command_mode="position", servo=ServoConfig(KP, KD))
    model = ResidualDynamics.create(nominal, 14, 7, EnsembleConfig(num_members=2, num_elites=2,
                                                                   hidden_sizes=(16,)),
                                    seed=seed)
    return model.save(str(path))


def _value_checkpoint(path: pathlib.Path, seed: int, **metadata) -> str:
    """A small untrained goal-conditioned value/policy for the arm, saved with the metadata a
    trainer configured like the planner writes (``metadata`` on top); returns its sha256."""
    robot = load_robot(URDF)
    written = dict(task="reach", task_cost_hash=task_cost_hash(
        "reach", dataclasses.asdict(ReachCostConfig())), state_dim=14, action_dim=7, goal_dim=3,
        joints=list(robot.joint_names), model_period_s=1.0 / RATE_HZ, dynamics_version=3)
    written.update(metadata)
    agent = ValuePolicy(14, 7, robot.position_lower, robot.position_upper,
                        ValuePolicyConfig(hidden_sizes=(16,)), seed=seed, goal_dim=3)
    return agent.save(str(path), written)


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
        "-p", "planner.num_samples:=32", "-p", f"planner.horizon:={HORIZON}",
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
        spin_until(executor, lambda: False, 0.5)  # one at a time: each refusal is counted
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
        # the whole plan: one point per model step, each with at least the plan's largest
        # disagreement (what the controller judged it by)
        planned = commands[-1]
        assert len(planned.points) == HORIZON
        np.testing.assert_allclose([duration_to_seconds(p.time_from_start)
                                    for p in planned.points],
                                   np.arange(HORIZON) / RATE_HZ, atol=1e-9)
        assert all(p.disagreement >= planned.points[0].disagreement >= 0.0
                   for p in planned.points)
        assert all(len(c.points) == 1 for c in commands
                   if c.status == CommandStatus.EXPLORING)
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
    planner = start_planner(model_dir, "model_source:=nominal", "publish_trajectory:=true")
    probe, executor, commands, joint_pub, update_pub, goal_pub = planner_probe(
        ros_context, "nominal_probe")
    trajectories = []
    probe.create_subscription(JointTrajectory, "/mbrl/planned_trajectory", trajectories.append,
                              100)
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
        # the same plan as a JointTrajectory: position targets at the same times and stamp
        planned = commands[-1]
        assert spin_until(executor, lambda: any(
            t.header.stamp == planned.header.stamp for t in trajectories), 5.0)
        trajectory = next(t for t in trajectories if t.header.stamp == planned.header.stamp)
        assert list(trajectory.joint_names) == list(planned.joint_names)
        assert len(trajectory.points) == len(planned.points) == HORIZON
        for point, sent in zip(trajectory.points, planned.points):
            assert list(point.positions) == list(sent.command) and not point.effort
            assert point.time_from_start == sent.time_from_start
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


def test_value_policy_is_checked_and_used_as_the_value_settings_say(ros_context, tmp_path):
    torch.set_num_threads(1)
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    planner = start_planner(model_dir, "stream_plan:=false")
    probe, executor, commands, joint_pub, update_pub, goal_pub = planner_probe(
        ros_context, "value_probe")
    statuses = []
    probe.create_subscription(PlanStatus, "/mbrl/plan/status", statuses.append, 100)
    diagnostics = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diagnostics.extend(
        s for s in m.status if s.name.endswith("planner")), 10)
    logs = []
    probe.create_subscription(Log, "/rosout", lambda m: logs.append(m.msg)
                              if m.name == "planner" else None, 100)
    robot = load_robot(URDF)
    probe.create_timer(0.01, lambda: joint_pub.publish(JointState(
        header=Header(stamp=probe.get_clock().now().to_msg()), name=list(robot.joint_names),
        position=HOME, velocity=[0.0] * 7)))
    parameters = AsyncParameterClient(probe, "planner")

    def announce(version, path, sha, verdict, kind="value_policy"):
        """Announce a checkpoint and wait for the planner's verdict (a log line starting so):
        one at a time, so a newer announcement never supersedes one still being loaded."""
        count = len(logs)
        update_pub.publish(ModelUpdate(version=version, checkpoint_path=str(path), sha256=sha,
                                       model_kind=kind))
        assert spin_until(executor, lambda: any(line.startswith(verdict)
                                                for line in logs[count:]), 20.0), verdict

    def set_values(**values):
        future = parameters.set_parameters([Parameter(f"value.{name}", value=value)
                                            for name, value in values.items()])
        executor.spin_until_future_complete(future, timeout_sec=10.0)
        return all(result.successful for result in future.result().results)

    def newest_status(condition):
        count = len(statuses)
        return spin_until(executor, lambda: len(statuses) > count and condition(statuses[-1]),
                          20.0)

    def diagnostic(key, expected):
        """True once the planner's diagnostics say ``key``: ``expected``."""
        return spin_until(executor, lambda: diagnostics and {
            kv.key: kv.value for kv in diagnostics[-1].values}[key] == expected, 10.0)

    dynamics = model_dir / "model_000003.mbrl"
    dynamics_sha = _checkpoint(dynamics, 0)
    good, foreign_cost, corrupt, newer = (model_dir / f"value_00000{v}.mbrl" for v in range(1, 5))
    good_sha, newer_sha = _value_checkpoint(good, 0), _value_checkpoint(newer, 1)
    foreign_sha = _value_checkpoint(foreign_cost, 2, task_cost_hash="f" * 64)
    corrupt_sha = _value_checkpoint(corrupt, 3)
    data = bytearray(corrupt.read_bytes())
    data[-10:] = bytes(b ^ 0xFF for b in data[-10:])
    corrupt.write_bytes(bytes(data))
    try:
        assert newest_status(lambda m: m.exploring and m.stage == "" and m.value_version == 0)
        goal_pub.publish(PoseStamped(header=Header(frame_id="world"),
                                     pose=Pose(position=Point(x=0.4, y=0.1, z=0.5))))
        announce(3, dynamics, dynamics_sha, "accepted model v3", kind="residual")
        assert newest_status(lambda m: m.model_version == 3 and not m.exploring)
        # value/policy versions count on their own: v1 after dynamics v3 is new
        announce(1, good, good_sha, "accepted value/policy v1")
        assert diagnostic("value_version", "1"), "value/policy v1 not swapped in"
        # held, but the value.* settings are all off (the default): pure MPC
        assert newest_status(lambda m: True)
        assert (statuses[-1].stage, statuses[-1].value_version) == ("mpc", 0)
        assert parameters.wait_for_services(timeout_sec=10.0)
        assert set_values(policy_prior=True, terminal_value=True)
        assert newest_status(lambda m: m.stage == "mpc+policy+value"), "settings not applied"
        status = statuses[-1]
        assert (status.value_version, status.model_version, status.planner) == (1, 3, "mppi")
        assert not set_values(policy_prior="yes"), "a non-boolean setting was accepted"

        count = len(statuses)
        announce(2, foreign_cost, foreign_sha,  # trained for another cost
                 "refusing value/policy v2: its task_cost_hash is 'fff")
        announce(3, corrupt, corrupt_sha, "refusing value/policy v3: ")  # hash mismatch
        # a dynamics model is no value/policy, nor a value/policy a dynamics model
        announce(4, dynamics, dynamics_sha, "refusing value/policy v4: ")
        announce(5, good, good_sha, "refusing model v5: ", kind="residual")
        assert any("keeping v1" in line for line in logs if line.startswith("refusing value"))
        spin_until(executor, lambda: len(statuses) > count + RATE_HZ / 2, 20.0)
        assert {(m.model_version, m.value_version, m.stage) for m in statuses[count:]} == {
            (3, 1, "mpc+policy+value")}, "a refused checkpoint replaced the one in use"
        assert diagnostic("refused_values", "3") and diagnostic("refused_models", "1")
        announce(6, newer, newer_sha, "accepted value/policy v6")  # hot-swapped between ticks
        assert newest_status(lambda m: m.value_version == 6), "value/policy v6 not swapped in"
        assert statuses[-1].model_version == 3

        assert set_values(policy_only=True)
        count = len(commands)
        assert newest_status(lambda m: m.planner == "policy"), "no policy-only status"
        status = statuses[-1]
        assert (status.stage, status.value_version, status.mode) == ("policy", 6, "task")
        assert status.max_disagreement >= 0.0 and len(status.disagreement) == 1
        assert spin_until(executor, lambda: any(c.status == CommandStatus.POLICY
                                                for c in commands[count:]), 5.0)
        policy = [c for c in commands[count:] if c.status == CommandStatus.POLICY][-1]
        assert policy.model_version == 3 and len(policy.points) == 1
        lower, upper = np.array(robot.position_lower), np.array(robot.position_upper)
        command = np.array(policy.points[0].command)  # within the policy's bounds
        assert np.all(command >= lower - 1e-6) and np.all(command <= upper + 1e-6)
        assert diagnostic("stage", "policy")
        assert set_values(policy_only=False)
        assert newest_status(lambda m: m.stage == "mpc+policy+value" and m.planner == "mppi")
        count = len(commands)
        assert spin_until(executor, lambda: len(commands) > count, 5.0)
        # planned again (the untrained model's plans may be the least violating ones)
        assert commands[-1].status in (CommandStatus.PLANNED, CommandStatus.RECOVERING)
        assert len(commands[-1].points) == 1  # stream_plan false: the first action only
        future = parameters.set_parameters([Parameter("stream_plan", value=True)])
        executor.spin_until_future_complete(future, timeout_sec=10.0)
        assert not future.result().results[0].successful, "stream_plan is read at start"
    finally:
        planner.send_signal(signal.SIGINT)
        planner.wait(timeout=30)
        executor.shutdown()
        probe.destroy_node()
    assert planner.returncode == 0
