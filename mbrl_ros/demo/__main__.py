"""`make demo`: the arm in MuJoCo explores, the trainer learns, the planner reaches goals.

The simulated arm differs from its URDF and datasheet (config/arm7.yaml's sim section). The
same goals run three times: with the planner on the hand-derived model alone, with the learned
model, and with the learned model plus the trainer's learned policy prior (its rollouts among
the planner's samples, TD-MPC style). Starts arm_sim.launch.yaml with the package's launch
runner, drives the run with a supervisor node, stops the graph with SIGINT and writes a report
under results/demo/.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor

from mbrl_ros.core.workspace import WorkspaceConfig
from mbrl_ros.demo.goals import TravelGoals, goals_within_travel
from mbrl_ros.demo.report import write_report
from mbrl_ros.demo.supervisor import DemoConfig, DemoSupervisor
from mbrl_ros.tasks.reach import load_robot
from mbrl_ros.training.config_file import build_config, read_node_parameters

REPO = Path(__file__).resolve().parents[2]
PARAMS_FILE = REPO / "config" / "arm7.yaml"
"""The graph's parameters (arm_sim.launch.yaml's default); goals respect its planner's
workspace."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mbrl_ros.demo", description=__doc__)
    parser.add_argument("--out", default=str(REPO / "results" / "demo"))
    parser.add_argument("--goals", type=int, default=DemoConfig.num_goals)
    parser.add_argument("--data-seconds", type=float, default=DemoConfig.data_phase_s)
    parser.add_argument("--goal-timeout", type=float, default=DemoConfig.goal_timeout_s)
    parser.add_argument("--goal-travel", type=float, default=TravelGoals.travel_s,
                        help="goals up to this long a move from the home pose at the planner's "
                             "goal-seed speed [s] (as in bench/mismatch.py)")
    parser.add_argument("--real-time-factor", type=float, default=0.4,
                        help="simulated seconds per wall second (planning runs on sim time)")
    parser.add_argument("--model-kind", choices=("residual", "ensemble"), default="residual")
    parser.add_argument("--max-minutes", type=float, default=10.0,
                        help="stop and report after this much wall time")
    parser.add_argument("--no-compare", action="store_true",
                        help="only the learned model (skip the round with the nominal model)")
    parser.add_argument("--no-value", action="store_true",
                        help="skip the round with the learned policy prior")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def start_graph(args, out: Path) -> subprocess.Popen:
    urdf = REPO / "urdf" / "arm7.urdf"
    command = [sys.executable, "-m", "mbrl_ros.cli", "launch", "mbrl_ros", "arm_sim.launch.yaml",
               f"urdf:={urdf}", f"data_dir:={out / 'data'}", f"model_dir:={out / 'models'}",
               f"real_time_factor:={args.real_time_factor}", f"model_kind:={args.model_kind}",
               f"model_source:={'learned' if args.no_compare else 'nominal'}"]
    log = open(out / "graph.log", "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def stop_graph(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[demo] %(message)s")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    robot = load_robot(str(REPO / "urdf" / "arm7.urdf"))
    sim, planner = (read_node_parameters(PARAMS_FILE, node) for node in ("sim", "planner"))
    workspace = build_config(WorkspaceConfig, planner, "workspace.")
    travel = TravelGoals(travel_s=args.goal_travel,
                         speed_fraction=planner.get("goal_seed_speed_fraction", 1.0))
    goals = goals_within_travel(robot, np.asarray(sim["home_positions"], dtype=float),
                                args.goals, np.random.default_rng(args.seed), travel, workspace)
    config = DemoConfig(data_phase_s=args.data_seconds, num_goals=args.goals,
                        goal_timeout_s=args.goal_timeout, compare_nominal=not args.no_compare,
                        compare_value=not args.no_value)
    logging.info("starting the arm graph (log: %s)", out / "graph.log")
    graph = start_graph(args, out)
    rclpy.init()
    supervisor = DemoSupervisor(robot, goals, config)
    executor = SingleThreadedExecutor()
    executor.add_node(supervisor)
    start = last_print = time.monotonic()
    try:
        while not supervisor.done:
            executor.spin_once(timeout_sec=0.05)
            if graph.poll() is not None:
                logging.error("the graph stopped (exit %s); see %s", graph.returncode,
                              out / "graph.log")
                break
            if time.monotonic() - start > 60 * args.max_minutes:
                logging.error("time limit reached; reporting what was done")
                break
            if time.monotonic() - last_print > 5.0:
                logging.info(supervisor.progress_line())
                last_print = time.monotonic()
    except KeyboardInterrupt:
        logging.info("interrupted; reporting what was done")
    finally:
        stop_graph(graph)
    report = write_report(supervisor, out, str(REPO / "urdf" / "arm7.urdf"),
                          time.monotonic() - start)
    supervisor.destroy_node()
    rclpy.shutdown()
    print(report.read_text())
    logging.info("report: %s", report)
    return 0 if supervisor.done else 1


if __name__ == "__main__":
    sys.exit(main())
