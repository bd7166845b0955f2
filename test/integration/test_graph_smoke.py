"""The whole arm graph, started from its launch file with the package's runner, on real topics.

Sees data logged to bags, a model trained and announced, the planner swapping it in, planned
commands passing the gate unchanged to the robot's controller topic; Ctrl-C then ends with the
gate's final hold and leaves no process behind.
"""

import os
import pathlib
import subprocess
import sys
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
import numpy as np
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_ros.msg import GateStatus, ModelUpdate, PlannedCommand, PlanStatus
from mbrl_ros.nodes.qos import PLANNED_COMMAND_QOS
from ros_helpers import spin_until, stop_launch

REPO = pathlib.Path(__file__).resolve().parents[2]
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def on_plan(command: np.ndarray, plan) -> bool:
    """True if ``command`` is a sample of the streamed ``plan`` (points ``[P][J]``), as the
    gate takes it unchanged: a point, or a point on the line between two consecutive ones."""
    points = np.asarray(plan, dtype=float)
    if len(points) == 0 or points.shape[1] != len(command):
        return False
    if np.any(np.all(np.abs(points - command) <= 1e-9, axis=1)):
        return True
    for start, end in zip(points[:-1], points[1:]):
        step = end - start
        moving = np.abs(step) > 1e-9
        if not moving.any() or np.any(np.abs(command[~moving] - start[~moving]) > 1e-9):
            continue
        weights = (command[moving] - start[moving]) / step[moving]
        if 0.0 <= weights.min() and weights.max() <= 1.0 and np.ptp(weights) <= 1e-6:
            return True
    return False


def _runner(arguments, cwd):
    return subprocess.Popen([sys.executable, "-m", "mbrl_ros.cli", "launch", *arguments],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("launch_file, extra", [
    ("arm_sim.launch.yaml", []),
    ("quadruped_sim.launch.yaml", []),
    ("robot.launch.yaml", [f"urdf:={REPO / 'urdf' / 'arm7.urdf'}"]),
])
def test_launch_files_resolve(launch_file, extra, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mbrl_ros.cli", "launch", "--dry-run", "mbrl_ros", launch_file,
         *extra], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    for node in ("logger", "trainer", "planner", "safety_gate"):
        assert f"__node:={node}" in result.stdout


@pytest.mark.slow
def test_full_loop_logs_trains_and_commands(ros_context, tmp_path):
    data_dir, model_dir = tmp_path / "data", tmp_path / "models"
    runner = _runner(["mbrl_ros", "arm_sim.launch.yaml", f"data_dir:={data_dir}",
                      f"model_dir:={model_dir}", "real_time_factor:=2.0"], tmp_path)
    node = rclpy.create_node("smoke_probe", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    seen = {"commands": [], "updates": [], "plan_versions": [], "gate": [], "planned": set(),
            "state": None}
    node.create_subscription(Float64MultiArray, "/position_controller/commands",
                             lambda m: seen["commands"].append(
                                 (np.array(m.data), seen["state"])), 100)
    node.create_subscription(PlannedCommand, "/mbrl/planned_command", lambda m: seen[
        "planned"].add(tuple(tuple(p.command) for p in m.points)), PLANNED_COMMAND_QOS)
    names = [f"arm_joint{i}" for i in range(1, 8)]
    node.create_subscription(JointState, "/joint_states", lambda m: seen.__setitem__(
        "state", np.array([m.position[list(m.name).index(j)] for j in names])), 10)
    node.create_subscription(ModelUpdate, "/mbrl/model_update",
                             lambda m: seen["updates"].append(m), LATCHED)
    node.create_subscription(PlanStatus, "/mbrl/plan/status",
                             lambda m: seen["plan_versions"].append(m.model_version), 10)
    node.create_subscription(GateStatus, "/mbrl/gate/status",
                             lambda m: seen["gate"].append(m.state), LATCHED)
    try:
        assert spin_until(executor, lambda: len(seen["commands"]) > 20, 60.0), \
            "no gated commands"
        assert spin_until(executor, lambda: bool(seen["updates"]), 150.0), "no model announced"
        update = seen["updates"][-1]
        assert pathlib.Path(update.checkpoint_path).is_file()
        assert len(update.sha256) == 64 and update.num_transitions >= 200
        assert spin_until(executor, lambda: seen["plan_versions"]
                          and seen["plan_versions"][-1] >= update.version, 30.0), \
            "the planner did not pick up the model"
        assert any(p.is_dir() and (p / "metadata.yaml").is_file() for p in data_dir.iterdir())
        assert runner.poll() is None, "the graph stopped early"
        # planned commands went through the gate unchanged (not only fallbacks)
        assert GateStatus.STATE_PASS in seen["gate"], "the gate never passed a command"
        assert any(on_plan(c, plan) for c, _ in seen["commands"] for plan in seen["planned"]), \
            "no planner command reached the controller unchanged"
    finally:
        output = stop_launch(runner, executor)
        node.destroy_node()
    assert runner.returncode == 0, output[-3000:]
    final, measured = seen["commands"][-1]
    assert float(np.max(np.abs(final - measured))) <= 0.02, "the last command is no hold"
    time.sleep(0.5)
    leftovers = subprocess.run(["pgrep", "-f", str(data_dir)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", f"processes left behind: {leftovers.stdout}"
    assert os.listdir(model_dir), "no checkpoint written"
