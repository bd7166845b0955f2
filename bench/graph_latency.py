"""Timing of the running graph with streamed plans, with the trainer busy.

Starts arm_sim.launch.yaml with the package's runner and a derived parameters file: the sim
and the safety gate at ``--rate`` Hz (joint states and control ticks), the planner on its own
timer at ``--plan-rate`` Hz (one model step per plan period) sending its whole plan, which the
gate samples on every tick; the trainer retrains continuously (at its own lowered priority, its
``niceness``). Waits for a model and sends a goal, then for ``--seconds`` measures on real
topics (ROS receive times at a probe node on the same machine):

- the command stream on the sim's controller topic (/position_controller/commands for
  config/arm7.yaml): intervals between gated commands in control periods (p50, p99, p99.9,
  max; how many longer than 1.5 and 3 periods);
- latency from each /joint_states message to the next gated command (p50, p99, max ms);
- the planner's own rate: planned commands per second, their intervals, points per command.

The sim stands in for the robot's driver and the probe for the controller, so both run at
real-time priority (SCHED_FIFO, as ros2_control's controller manager does) where the system
allows it; the JSON records whether they did.

    python -m bench.graph_latency --rate 100 --seconds 600 --out results/bench/graph_100hz.json
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

from bench.processes import node_pids
from mbrl_ros.msg import ModelUpdate, PlannedCommand
from mbrl_ros.nodes.qos import PLANNED_COMMAND_QOS
from mbrl_ros.nodes.spin import set_realtime_priority

REPO = Path(__file__).resolve().parents[1]
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def derived_params(rate: float, plan_rate: float, model_kind: str, stream: bool,
                   forward_on_command: bool, out: Path) -> Path:
    """arm7.yaml with the sim and the gate at ``rate``, the planner (and the model step) at
    ``plan_rate``."""
    params = yaml.safe_load((REPO / "config" / "arm7.yaml").read_text())
    model_period = 1.0 / plan_rate
    planner = params["/**/planner"]["ros__parameters"]
    planner.update(control_rate_hz=plan_rate, model_period_s=model_period, trigger="timer",
                   visualize_every=0, stream_plan=stream)
    trainer = params["/**/trainer"]["ros__parameters"]
    trainer.update(model_period_s=model_period, retrain_period_s=1.0, model_kind=model_kind,
                   min_transitions=int(5 * plan_rate))
    trainer["alignment"].update(control_rate_hz=plan_rate,
                                command_latency_s=0.5 * model_period)
    params["/**/safety_gate"]["ros__parameters"].update(control_rate_hz=rate,
                                                        forward_on_command=forward_on_command)
    params["/**/sim"]["ros__parameters"]["control_period"] = 1.0 / rate
    path = out / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


DRIVER_PRIORITY = 30
"""SCHED_FIFO priority of the sim, which stands in for the robot's driver (ros2_control's
controller manager runs at real-time priority); above the gate's (config: 20)."""
PROBE_PRIORITY = 10
"""SCHED_FIFO priority of the probe, which stands in for the controller receiving commands."""


class Probe:
    """Receive times of joint states, planned and gated commands."""

    def __init__(self, node, command_topic: str):
        self.node = node
        self.joint_states, self.planned, self.gated, self.points = [], [], [], []
        self.model_version = 0
        node.create_subscription(JointState, "/joint_states",
                                 lambda m: self.joint_states.append(time.monotonic()), 100)
        node.create_subscription(PlannedCommand, "/mbrl/planned_command", self._on_planned,
                                 PLANNED_COMMAND_QOS)
        node.create_subscription(Float64MultiArray, command_topic,
                                 lambda m: self.gated.append(time.monotonic()), 100)
        node.create_subscription(ModelUpdate, "/mbrl/model_update", self._on_model, LATCHED)
        self.goal_pub = node.create_publisher(PoseStamped, "/mbrl/goal", 10)

    def _on_planned(self, msg):
        self.planned.append(time.monotonic())
        self.points.append(len(msg.points))

    def _on_model(self, msg):
        self.model_version = max(self.model_version, msg.version)

    def send_goal(self, xyz):
        msg = PoseStamped()
        msg.header.frame_id = "world"
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = xyz
        msg.pose.orientation.w = 1.0
        self.goal_pub.publish(msg)

    def reset(self):
        self.joint_states, self.planned, self.gated, self.points = [], [], [], []


def _percentiles(values: np.ndarray, name: str, quantiles=(50, 99)) -> dict:
    if values.size == 0:
        return {f"{name}_p{q}".replace(".", "_"): None for q in quantiles} | {f"{name}_max": None}
    result = {f"{name}_p{q}".replace(".", "_"): float(np.percentile(values, q))
              for q in quantiles}
    result[f"{name}_max"] = float(values.max())
    return result


def analyse(probe: Probe, rate: float, seconds: float) -> dict:
    js, planned, gated = (np.array(x) for x in (probe.joint_states, probe.planned, probe.gated))
    intervals = np.diff(gated) * rate  # in control periods
    # each joint state -> the first gated command received after it
    index = np.searchsorted(gated, js, side="right")
    valid = index < len(gated)
    latency = (gated[index[valid]] - js[valid]) * 1e3
    plan_intervals = np.diff(planned) * 1e3
    return dict(
        joint_states=len(js), planned=len(planned), gated=len(gated),
        gated_rate_hz=len(gated) / seconds,
        **_percentiles(intervals, "interval_periods", (50, 99, 99.9)),
        intervals_over_1_5_periods=int(np.sum(intervals > 1.5)),
        intervals_over_3_periods=int(np.sum(intervals > 3.0)),
        **_percentiles(latency, "state_to_command_ms"),
        plan_rate_hz=len(planned) / seconds,
        **_percentiles(plan_intervals, "plan_interval_ms"),
        points_per_plan_mean=float(np.mean(probe.points)) if probe.points else None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0,
                        help="control rate: the sim's joint states and the gate's ticks [Hz]")
    parser.add_argument("--plan-rate", type=float, default=25.0,
                        help="the planner's rate, one model step per plan [Hz]")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--no-stream", action="store_true",
                        help="the planner sends its first action only (stream_plan false)")
    parser.add_argument("--forward-on-command", choices=("true", "false"), default="false",
                        help="the gate also publishes each plan as it arrives (an output "
                        "between two ticks)")
    parser.add_argument("--model-kind", choices=("residual", "ensemble"), default="ensemble")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="longest wait for the first model")
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "graph_latency.json"))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mbrl_latency_"))
    params = derived_params(args.rate, args.plan_rate, args.model_kind, not args.no_stream,
                            args.forward_on_command == "true", work)
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
        sim = node_pids(graph.pid).get("sim")
        priorities = dict(
            sim=set_realtime_priority(DRIVER_PRIORITY, sim) if sim else "sim not found",
            probe=set_realtime_priority(PROBE_PRIORITY))
        print("real-time priority: " + ", ".join(
            f"{name} {'SCHED_FIFO' if not error else 'normal (' + error + ')'}"
            for name, error in priorities.items()), flush=True)
        probe.send_goal((0.45, 0.2, 0.5))
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
        probe.reset()
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
        result = dict(rate_hz=args.rate, plan_rate_setting_hz=args.plan_rate,
                      stream_plan=not args.no_stream, seconds=args.seconds,
                      forward_on_command=args.forward_on_command == "true",
                      model_kind=args.model_kind, model_version=probe.model_version,
                      real_time_priority={k: not v for k, v in priorities.items()},
                      **analyse(probe, args.rate, args.seconds))
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
