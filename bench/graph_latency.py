"""Latency of the running graph: /joint_states message -> gated command, with the trainer busy.

Starts arm_sim.launch.yaml with the package's runner and a derived parameters file (planner
triggered by every joint state, control at ``--rate`` Hz, trainer retraining continuously),
waits for a model and sends a goal, then for ``--seconds`` measures on real topics:

- latency: from a /joint_states message to the first gated command on the sim's controller
  topic (/position_controller/commands for config/arm7.yaml) that carries the plan answering
  it (ROS receive times at a probe node on the same machine);
- missed ticks: joint-state messages the planner did not answer, and gaps in the gated
  command stream longer than 1.5 control periods.

    python -m bench.graph_latency --rate 100 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy
import yaml
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_ros.msg import ModelUpdate, PlannedCommand
from mbrl_ros.nodes.qos import PLANNED_COMMAND_QOS

REPO = Path(__file__).resolve().parents[1]
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def derived_params(rate: float, model_kind: str, out: Path) -> Path:
    """arm7.yaml with the planner and gate at ``rate`` and one model step per period."""
    params = yaml.safe_load((REPO / "config" / "arm7.yaml").read_text())
    period = 1.0 / rate
    planner = params["/**/planner"]["ros__parameters"]
    planner.update(control_rate_hz=rate, model_period_s=period, trigger="joint_states",
                   visualize_every=0)
    planner["planner"].update(num_samples=64, horizon=8, num_iterations=1)
    trainer = params["/**/trainer"]["ros__parameters"]
    trainer.update(model_period_s=period, retrain_period_s=1.0, model_kind=model_kind,
                   min_transitions=int(5 * rate))
    trainer["alignment"].update(control_rate_hz=rate, command_latency_s=0.5 * period)
    params["/**/safety_gate"]["ros__parameters"]["control_rate_hz"] = rate
    params["/**/sim"]["ros__parameters"]["control_period"] = period
    path = out / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


class Probe:
    """Receive times of joint states, planned and gated commands."""

    def __init__(self, node, command_topic: str):
        self.node = node
        self.joint_states, self.planned, self.gated = [], [], []
        self.model_version = 0
        node.create_subscription(JointState, "/joint_states",
                                 lambda m: self.joint_states.append(time.monotonic()), 100)
        node.create_subscription(PlannedCommand, "/mbrl/planned_command",
                                 lambda m: self.planned.append(time.monotonic()),
                                 PLANNED_COMMAND_QOS)
        node.create_subscription(Float64MultiArray, command_topic,
                                 lambda m: self.gated.append(time.monotonic()), 100)
        node.create_subscription(ModelUpdate, "/mbrl/model_update", self._on_model, LATCHED)
        self.goal_pub = node.create_publisher(PoseStamped, "/mbrl/goal", 10)

    def _on_model(self, msg):
        self.model_version = max(self.model_version, msg.version)

    def send_goal(self, xyz):
        msg = PoseStamped()
        msg.header.frame_id = "world"
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = xyz
        msg.pose.orientation.w = 1.0
        self.goal_pub.publish(msg)

    def reset(self):
        self.joint_states, self.planned, self.gated = [], [], []


def analyse(probe: Probe, rate: float) -> dict:
    js, planned, gated = (np.array(x) for x in (probe.joint_states, probe.planned, probe.gated))
    # each planned command answers the latest joint state received before it
    answered = js[np.searchsorted(js, planned, side="right") - 1]
    # the first gated command at or after each planned command carries it
    index = np.searchsorted(gated, planned, side="left")
    valid = index < len(gated)
    latency = (gated[index[valid]] - answered[valid]) * 1e3
    gaps = np.diff(gated)
    return dict(joint_states=len(js), planned=len(planned), gated=len(gated),
                unanswered_joint_states=int(len(js) - len(np.unique(answered))),
                latency_ms_p50=float(np.percentile(latency, 50)),
                latency_ms_p99=float(np.percentile(latency, 99)),
                latency_ms_max=float(latency.max()),
                gated_gaps_over_1_5_periods=int(np.sum(gaps > 1.5 / rate)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--model-kind", choices=("residual", "ensemble"), default="ensemble")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="longest wait for the first model")
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "graph_latency.json"))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mbrl_latency_"))
    params = derived_params(args.rate, args.model_kind, work)
    controller = yaml.safe_load(params.read_text())["/**/sim"]["ros__parameters"].get(
        "controller_name", "position_controller")
    graph = subprocess.Popen(
        [sys.executable, "-m", "mbrl_ros.cli", "launch", "mbrl_ros", "arm_sim.launch.yaml",
         f"params_file:={params}", f"data_dir:={work / 'data'}", f"model_dir:={work / 'models'}",
         f"model_kind:={args.model_kind}", f"controller:={controller}"],
        stdout=open(work / "graph.log", "w"), stderr=subprocess.STDOUT)
    rclpy.init()
    node = rclpy.create_node("latency_probe")
    probe = Probe(node, f"/{controller}/commands")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    result = {}
    try:
        deadline = time.monotonic() + args.timeout
        while probe.model_version == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        if probe.model_version == 0:
            print(f"no model within {args.timeout} s; see {work / 'graph.log'}")
            return 1
        probe.send_goal((0.45, 0.2, 0.5))
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
        probe.reset()
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
        result = dict(rate_hz=args.rate, seconds=args.seconds, model_kind=args.model_kind,
                      model_version=probe.model_version, **analyse(probe, args.rate))
    finally:
        graph.send_signal(signal.SIGINT)
        graph.wait(timeout=60)
        node.destroy_node()
        rclpy.shutdown()
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
