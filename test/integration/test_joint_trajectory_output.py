"""The safety gate driving a joint_trajectory_controller (``output_interface:
joint_trajectory``), in the arm graph started from its launch file: the simulator takes the
trajectories as a joint_trajectory_controller does, and nothing goes to the forward topic."""

import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import rclpy
import yaml
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from mbrl_ros.msg import GateStatus
from ros_helpers import spin_until, stop_launch

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((REPO / "config" / "arm7.yaml").read_text())
GATE = CONFIG["/**/safety_gate"]["ros__parameters"]
JOINTS = GATE["joints"]
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
GOAL = (0.45, 0.2, 0.5)
"""A reachable end-effector goal of the shipped arm (world frame, m)."""
MOVED_RAD = 0.05
"""The arm must move at least this much: only the gate's trajectories command it."""
HOLD_RAD = 0.02
"""The final hold is the measured pose within this."""


@pytest.mark.slow
def test_gate_drives_a_joint_trajectory_controller(ros_context, tmp_path):
    config = yaml.safe_load((REPO / "config" / "arm7.yaml").read_text())
    config["/**/safety_gate"]["ros__parameters"]["output_interface"] = "joint_trajectory"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(config))
    runner = subprocess.Popen(
        [sys.executable, "-m", "mbrl_ros.cli", "launch", "mbrl_ros", "arm_sim.launch.yaml",
         f"params_file:={params}", f"data_dir:={tmp_path / 'data'}",
         f"model_dir:={tmp_path / 'models'}", "model_source:=nominal"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node = rclpy.create_node("trajectory_probe", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    seen = {"trajectories": [], "forward": 0, "states": [], "gate": []}
    node.create_subscription(JointTrajectory, "/position_controller/joint_trajectory",
                             seen["trajectories"].append, 100)
    node.create_subscription(Float64MultiArray, "/position_controller/commands",
                             lambda _: seen.__setitem__("forward", seen["forward"] + 1), 100)
    node.create_subscription(JointState, "/joint_states", lambda m: seen["states"].append(
        np.array([m.position[list(m.name).index(j)] for j in JOINTS])), 10)
    node.create_subscription(GateStatus, "/mbrl/gate/status",
                             lambda m: seen["gate"].append(m.state), LATCHED)
    goal_pub = node.create_publisher(PoseStamped, "/mbrl/goal", 10)
    goal = PoseStamped()
    goal.header.frame_id = "world"
    goal.pose.position.x, goal.pose.position.y, goal.pose.position.z = GOAL
    goal.pose.orientation.w = 1.0
    try:
        assert spin_until(executor, lambda: len(seen["trajectories"]) > 20, 90.0), \
            "no trajectories from the gate"
        start = len(seen["states"])
        deadline = time.monotonic() + 30.0

        def moved() -> float:
            states = seen["states"][start:]
            return float(np.ptp(np.array(states), axis=0).max()) if states else 0.0

        # until the arm has moved enough (a loaded machine plans slowly) or the deadline
        while time.monotonic() < deadline and not (
                GateStatus.STATE_PASS in seen["gate"] and moved() >= MOVED_RAD):
            goal_pub.publish(goal)
            spin_until(executor, lambda: False, 0.5)
        assert GateStatus.STATE_PASS in seen["gate"], "the gate never passed a planned command"
        travel = moved()
        assert travel >= MOVED_RAD, f"the arm moved {travel:.3f} rad: trajectories not followed"
        assert seen["forward"] == 0, "the gate also published on the forward topic"
        period = 1.0 / GATE["control_rate_hz"]
        for message in seen["trajectories"][-50:]:
            assert list(message.joint_names) == JOINTS and len(message.points) == 1
            point = message.points[0]
            assert np.all(np.isfinite(point.positions)) and len(point.positions) == len(JOINTS)
            ahead = point.time_from_start.sec + 1e-9 * point.time_from_start.nanosec
            assert ahead == pytest.approx(period, abs=1e-6)
        assert runner.poll() is None, "the graph stopped early"
    finally:
        output = stop_launch(runner, executor)
        node.destroy_node()
    assert runner.returncode == 0, output[-3000:]
    final = np.array(seen["trajectories"][-1].points[0].positions)
    assert float(np.max(np.abs(final - seen["states"][-1]))) <= HOLD_RAD, \
        "the last trajectory is no hold"
