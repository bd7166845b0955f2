"""The demo supervisor on real topics: the same goals first with the nominal model, then — once
the planner has accepted model_source=learned — with the learned one, then — once a value/policy
is deployed — with its policy prior; the report shows each round's stage."""

from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState

from mbrl_ros.demo.goals import GoalSampler
from mbrl_ros.demo.report import write_report
from mbrl_ros.demo.supervisor import DemoConfig, DemoSupervisor
from mbrl_ros.msg import ModelUpdate, PlanStatus
from mbrl_ros.tasks.reach import load_robot
from ros_helpers import spin_until

REPO = Path(__file__).resolve().parents[2]
URDF = str(REPO / "urdf" / "arm7.urdf")
PERIOD_S = 0.01
LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def test_goals_run_with_nominal_learned_then_value_policy(ros_context, tmp_path):
    robot = load_robot(URDF)
    goals, configurations = GoalSampler().sample_with_configurations(
        robot, 2, np.random.default_rng(0))
    config = DemoConfig(data_phase_s=0.1, num_goals=2, goal_timeout_s=1.0, dwell_s=0.05,
                        reset_between_goals=False)
    supervisor = DemoSupervisor(robot, goals, config, context=ros_context)
    planner = rclpy.create_node("planner", context=ros_context)  # the parameter it switches
    planner.declare_parameter("model_source", "nominal")
    planner.declare_parameter("value.policy_prior", False)
    sources = []
    driver = rclpy.create_node("fake_arm", context=ros_context)
    clock_pub = driver.create_publisher(Clock, "/clock", 10)
    state_pub = driver.create_publisher(JointState, "/joint_states", 10)
    updates = driver.create_publisher(ModelUpdate, "/mbrl/model_update", LATCHED)
    updates.publish(ModelUpdate(version=1, model_kind="residual"))
    updates.publish(ModelUpdate(version=1, model_kind="value_policy"))
    status_pub = planner.create_publisher(PlanStatus, "/mbrl/plan/status", 10)
    pose = {"q": configurations[0] + 0.3}  # away from every goal until one is sent
    goals_seen = []

    def on_goal(msg):
        goal = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
        index = int(np.argmin(np.linalg.norm(goals - goal, axis=1)))
        goals_seen.append(index)
        sources.append((planner.get_parameter("model_source").value,
                        planner.get_parameter("value.policy_prior").value))
        pose["q"] = configurations[index]  # the arm "reaches" it at once
    driver.create_subscription(PoseStamped, "/mbrl/goal", on_goal, 10)
    now = {"ns": 1_000_000_000}

    def tick():
        now["ns"] += int(PERIOD_S * 1e9)
        stamp = Time(sec=now["ns"] // 1_000_000_000, nanosec=now["ns"] % 1_000_000_000)
        clock_pub.publish(Clock(clock=stamp))
        msg = JointState(name=list(robot.joint_names), position=list(pose["q"]),
                         velocity=[0.0] * robot.num_joints)
        msg.header.stamp = stamp
        state_pub.publish(msg)
        prior = planner.get_parameter("value.policy_prior").value
        status_pub.publish(PlanStatus(stage="mpc+policy" if prior else "mpc",
                                      value_version=int(prior)))
    driver.create_timer(0.002, tick)
    executor = SingleThreadedExecutor(context=ros_context)
    for node in (supervisor, planner, driver):
        executor.add_node(node)
    try:
        assert spin_until(executor, lambda: supervisor.done, 30.0), supervisor.progress_line()
    finally:
        executor.shutdown()
    assert goals_seen == [0, 1, 0, 1, 0, 1]
    assert sources == [("nominal", False)] * 2 + [("learned", False)] * 2 \
        + [("learned", True)] * 2
    assert [r.model for r in supervisor.results] == \
        ["nominal"] * 2 + ["learned"] * 2 + ["learned+policy"] * 2
    assert all(r.reached for r in supervisor.results)
    assert [r.stage for r in supervisor.results[-2:]] == ["mpc+policy"] * 2
    assert supervisor.value_version == 1 and supervisor.model_version == 1
    report = write_report(supervisor, tmp_path, URDF, 1.0).read_text()
    assert "with the hand-derived model alone: **2/2**" in report
    assert "with the learned model: **2/2**" in report
    assert "with + the learned policy prior: **2/2**" in report
    assert "planner stage mpc+policy" in report
    assert "value/policy versions deployed: 1" in report
    assert (tmp_path / "comparison.png").exists()
    for node in (supervisor, planner, driver):
        node.destroy_node()
