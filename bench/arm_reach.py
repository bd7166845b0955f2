"""Arm reaching benchmark without ROS: explore, learn, then reach random goals with MPC.

Runs the same core pieces as the graph (SmoothExplorer, the trainer's models, the planner
with the reach cost) in a closed loop with the MuJoCo simulator, on simulated time, so the
figure does not depend on the machine's load. For every model kind: ``--data-seconds`` of
exploration, one fit, then ``--goals`` random reachable goals, each with ``--goal-timeout``;
a goal counts when the end effector stays within ``--radius`` for ``--dwell`` seconds. Every
goal starts from the home pose (the simulator is reset), so one failure does not carry over.

    python -m bench.arm_reach --data-seconds 60 --goals 20 --kinds residual ensemble

``--methods mppi icem ilqr`` reaches the same goals with each planning method in turn (same
data, same model per kind); without it the config's ``planner.method`` is used.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from bench.params import config_from, graph_params, simulator_from
from mbrl_ros.core.controller import ModelPredictiveController
from mbrl_ros.core.disturbance import DisturbanceConfig
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.exploration import ExplorationConfig, SmoothExplorer
from mbrl_ros.core.nominal_only import NominalOnlyModel
from mbrl_ros.core.planning.config import METHODS, PlannerConfig
from mbrl_ros.core.residual import ResidualDynamics
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.demo.goals import GoalSampler
from mbrl_ros.tasks.reach import (ReachCostConfig, build_reach_cost,
                                  load_robot, nominal_dynamics, reach_explorer,
                                  reach_limits, reach_warm_start)
from mbrl_ros.robots.servo_model import servo_config
from mbrl_ros.robots.simulator import Simulator

REPO = Path(__file__).resolve().parents[1]


class ArmSetup:
    """Robot, simulator and controller settings read from a parameters file (config/*.yaml)."""

    def __init__(self, config_path: Path, urdf: str, seed: int,
                 package_paths: Sequence[str] = (),
                 params: Optional[Tuple[dict, dict, dict]] = None):
        """``params``: the (sim, planner, trainer) parameters to use instead of the file's."""
        self.sim_params, self.planner_params, self.trainer_params = (
            params if params is not None else graph_params(config_path))
        self.urdf, self.seed, self.package_paths = str(urdf), seed, tuple(package_paths)
        self.robot = load_robot(self.urdf, self.planner_params.get("ee_frame", "ee_link"),
                                self.package_paths)
        self.period = 1.0 / self.planner_params.get("control_rate_hz", 25.0)
        self.model_period = self.planner_params.get("model_period_s", self.period)
        self.compensated = bool(self.planner_params.get("gravity_compensated", False))
        self.mode = self.planner_params.get("command_mode", "effort")
        self.nominal = nominal_dynamics(
            self.robot, self.model_period, self.planner_params.get("nominal_substeps", 1),
            torch.device("cpu"), self.compensated, self.mode,
            servo_config(self.planner_params.get("servo_kp", [100.0]),
                         self.planner_params.get("servo_kd", [5.0])))

    def simulator(self) -> Simulator:
        return simulator_from(self.sim_params, self.urdf, self.package_paths,
                              self.robot.joint_names, self.seed)

    def explorer(self) -> SmoothExplorer:
        config = config_from(ExplorationConfig, dict(self.planner_params.get("exploration")
                                                     or {}, seed=self.seed))
        return reach_explorer(config, self.robot, self.mode, self.period, self.compensated)

    def controller(self, model, offset_free: bool = True, goal_seed: bool = True,
                   method: Optional[str] = None) -> ModelPredictiveController:
        """The planner node's controller for ``model`` (``offset_free``: with the config's
        disturbance estimate; ``goal_seed``: with the IK seed on each goal; ``method``: the
        planning method instead of the config's)."""
        p = self.planner_params
        values = reach_limits(self.robot, self.mode, p.get("velocity_limit_fraction", 1.5))
        values.update({k: tuple(v) if isinstance(v, list) else v
                       for k, v in (p.get("planner") or {}).items()})
        if method is not None:
            values["method"] = method
        cost_config = config_from(ReachCostConfig, p.get("cost"))
        cost = build_reach_cost(self.robot, self.nominal.ee_position_batch, cost_config, None,
                                torch.device("cpu"))
        warm_start = reach_warm_start(self.robot, self.mode, self.model_period,
                                      p.get("goal_seed_speed_fraction", 0.5) if goal_seed else 0)
        disturbance = (config_from(DisturbanceConfig, p.get("disturbance")) if offset_free
                       else DisturbanceConfig())
        controller = ModelPredictiveController(PlannerConfig(**values), cost, self.explorer(),
                                               torch.device("cpu"), warm_start=warm_start,
                                               disturbance=disturbance,
                                               model_period_s=self.model_period)
        controller.set_model(model, 1)
        return controller


def collect(setup: ArmSetup, seconds: float) -> TransitionBatch:
    """Exploration data at the model period (commands held over each period)."""
    sim, explorer = setup.simulator(), setup.explorer()
    periods = int(round(setup.model_period / sim.config.control_period))
    states, actions = [], []
    for _ in tqdm(range(int(seconds / setup.model_period)), desc="explore", leave=False):
        q, qd, _ = sim.joint_state()
        command = explorer(q, qd)
        states.append(np.concatenate([q, qd]))
        actions.append(command)
        sim.set_command(command)
        sim.step(periods)
    q, qd, _ = sim.joint_state()
    states.append(np.concatenate([q, qd]))
    states = np.array(states, dtype=np.float32)
    return TransitionBatch(states[:-1], np.array(actions, dtype=np.float32), states[1:])


def train(setup: ArmSetup, kind: str, data: TransitionBatch):
    config = config_from(EnsembleConfig, setup.trainer_params.get("ensemble"))
    if kind == "nominal":
        return NominalOnlyModel(setup.nominal, data.state_dim, data.action_dim)
    if kind == "residual":
        model = ResidualDynamics.create(setup.nominal, data.state_dim, data.action_dim, config,
                                        "cpu", setup.seed)
    else:
        model = ProbabilisticEnsemble(data.state_dim, data.action_dim, config, "cpu", setup.seed)
    model.fit(data, seed=setup.seed)
    return model


def reach(setup: ArmSetup, model, goals: np.ndarray, args,
          method: Optional[str] = None) -> list:
    """Closed-loop reaching (``method``: the planning method, None: the config's); returns
    one dict per goal."""
    sim, controller = setup.simulator(), setup.controller(model, not args.no_offset_free,
                                                          not args.no_goal_seed, method)
    periods = int(round(setup.period / sim.config.control_period))
    delay = int(round(args.command_delay / sim.config.control_period))
    if not 0 <= delay < periods:
        raise ValueError(f"--command-delay must be in [0, {setup.period}) s")
    results = []
    for goal in tqdm(goals, desc="goals", leave=False):
        sim.reset()
        controller.reset()
        controller.set_goal(goal)
        inside, reached_at, closest = 0.0, None, np.inf
        planning, holds = [], 0
        for tick in range(int(args.goal_timeout / setup.period)):
            q, qd, _ = sim.joint_state()
            distance = float(np.linalg.norm(setup.robot.ee_pose(q)[0] - goal))
            closest = min(closest, distance)
            inside = inside + setup.period if distance <= args.radius else 0.0
            if inside >= args.dwell:
                reached_at = tick * setup.period
                break
            step = controller.step(q, qd, stamp=sim.time)
            if step.plan is not None:
                planning.append(step.plan.planning_time * 1e3)
            sim.step(delay)  # the previous command is held while the plan is computed
            if step.failed:  # the safety gate would hold the arm where it is
                holds += 1
                sim.set_command(q if setup.mode == "position" else np.zeros_like(q))
            else:
                sim.set_command(step.command)
            sim.step(periods - delay)
        results.append(dict(goal=goal.tolist(), reached=reached_at is not None,
                            time_s=reached_at, final_distance_m=distance,
                            closest_m=closest, planning_ms_p50=float(np.median(planning)),
                            failed_plans=holds))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config" / "arm7.yaml"))
    parser.add_argument("--urdf", default=str(REPO / "urdf" / "arm7.urdf"),
                        help="URDF file or package:// URI")
    parser.add_argument("--package-path", action="append", default=[], metavar="DIR",
                        help="directory searched for package:// URIs (repeatable)")
    parser.add_argument("--data-seconds", type=float, default=60.0)
    parser.add_argument("--goals", type=int, default=20)
    parser.add_argument("--goal-timeout", type=float, default=10.0)
    parser.add_argument("--radius", type=float, default=0.02)
    parser.add_argument("--dwell", type=float, default=0.3)
    parser.add_argument("--kinds", nargs="+", default=["residual", "ensemble"],
                        choices=["residual", "ensemble", "nominal"],
                        help="nominal: the URDF / servo model alone, no learning")
    parser.add_argument("--command-delay", type=float, default=0.0,
                        help="seconds (simulated) between a state and its command taking effect")
    parser.add_argument("--no-goal-seed", action="store_true",
                        help="plan without the IK seed on each new goal")
    parser.add_argument("--no-offset-free", action="store_true",
                        help="plan without the disturbance estimate (offset-free MPC)")
    parser.add_argument("--methods", nargs="+", default=None, choices=list(METHODS),
                        help="planning methods to compare, each on the same goals and model "
                             "(default: the config's planner.method only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "arm_reach.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    setup = ArmSetup(Path(args.config), args.urdf, args.seed, args.package_path)
    goals = GoalSampler().sample(setup.robot, args.goals, np.random.default_rng(args.seed + 1))
    start = time.monotonic()
    data = collect(setup, args.data_seconds)
    summary = dict(data_seconds=args.data_seconds, transitions=len(data),
                   offset_free=not args.no_offset_free, goal_seed=not args.no_goal_seed,
                   command_delay_s=args.command_delay, kinds={})
    for kind in args.kinds:
        model = train(setup, kind, data)
        for method in args.methods or [None]:
            run_goals(setup, model, goals, args, kind, method, summary)
    summary["wall_s"] = time.monotonic() - start
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0


def run_goals(setup: ArmSetup, model, goals: np.ndarray, args, kind: str,
              method: Optional[str], summary: dict) -> None:
    """Reach ``goals`` with ``model`` and ``method``; record and print the outcome under the
    kind's name (``kind/method`` when a method is given)."""
    name = kind if method is None else f"{kind}/{method}"
    results = reach(setup, model, goals, args, method)
    rate = float(np.mean([r["reached"] for r in results]))
    summary["kinds"][name] = dict(success_rate=rate, goals=results)
    print(f"{name:9s}: {100 * rate:5.1f} % of {len(goals)} goals within "
          f"{100 * args.radius:.0f} cm after {args.data_seconds:.0f} s of data "
          f"(median final distance "
          f"{100 * np.median([r['final_distance_m'] for r in results]):.1f} cm, planning "
          f"p50 {np.median([r['planning_ms_p50'] for r in results]):.1f} ms)")


if __name__ == "__main__":
    raise SystemExit(main())
