"""Quadruped stand-up benchmark without ROS: explore, learn, then stand up under pushes.

Runs the graph's core pieces (the stand explorer, the trainer's network ensemble, the planner
with the stand cost, state = joints + odometry as the trainer aligns it) in a closed loop with
the MuJoCo simulator on simulated time, with the settings of config/quadruped12.yaml:
``--explore-seconds`` of smooth random position targets between crouch and stand (the robot is
put back into its crouch when it falls, as an operator would), one ensemble fit, then
``--trials`` trials from the crouch with the sim's random pushes. A trial succeeds when, over
its last ``--window`` seconds, the base height stays within ``--height-tolerance`` (a fraction
of it) of the target and the tilt (roll and pitch) under ``--max-tilt-deg``. For reference, the
same trials (same pushes) are run with a scripted baseline that ramps the position targets from
the crouch to the standing posture in ``--ramp-seconds`` and holds them. The model is the
ensemble in the heading frame (``HeadingFrameModel``: no dependence on the base's x, y, yaw;
``--model-frame odom`` for the plain ensemble on odometry states). ``--seeds`` repeats all of
it (exploration, fit, trials) for several seeds and summarises them (mean, min, max).

    python -m bench.quadruped_stand --explore-seconds 90 --trials 10 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from bench.params import config_from, graph_params, recorded_args, simulator_from
from mbrl_ros.core.controller import ModelPredictiveController
from mbrl_ros.core.disturbance import DisturbanceConfig
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.exploration import ExplorationConfig
from mbrl_ros.core.planning.config import PlannerConfig
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.tasks.reach import load_robot
from mbrl_ros.robots.simulator import Simulator
from mbrl_ros.tasks.stand import (StandCostConfig, StandTaskConfig,
                                  HeadingFrameModel, build_stand_cost, odom_vector,
                                  stand_explorer, stand_state, stand_warm_start, tilt_angle)

REPO = Path(__file__).resolve().parents[1]


class StandSetup:
    """Robot, simulator and controller settings read from config/quadruped12.yaml."""

    def __init__(self, config_path: Path, urdf: str, seed: int,
                 package_paths: Sequence[str] = ()):
        self.sim_params, self.planner_params, self.trainer_params = graph_params(config_path)
        self.urdf, self.seed, self.package_paths = str(urdf), seed, tuple(package_paths)
        self.robot = load_robot(self.urdf, "", self.package_paths)
        self.period = 1.0 / self.planner_params.get("control_rate_hz", 25.0)
        self.cost_config = config_from(StandCostConfig, self.planner_params.get("cost")).validate()
        self.task_config = config_from(StandTaskConfig,
                                       self.planner_params.get("stand")).validate()

    def simulator(self, seed: int, pushes: bool = True) -> Simulator:
        """The simulated robot in its crouch; random pushes seeded with ``seed``."""
        return simulator_from(self.sim_params, self.urdf, self.package_paths,
                              self.robot.joint_names, seed, pushes)

    def explorer(self):
        config = config_from(ExplorationConfig, self.planner_params.get("exploration"))
        config = dataclasses.replace(config, seed=config.seed + self.seed)
        return stand_explorer(config, self.task_config, self.cost_config.posture,
                              self.robot.position_lower, self.robot.position_upper, self.period,
                              self.robot.velocity_limits)

    def controller(self, model) -> ModelPredictiveController:
        values = {k: tuple(v) if isinstance(v, list) else v
                  for k, v in (self.planner_params.get("planner") or {}).items()}
        values["seed"] = values.get("seed", 0) + self.seed
        cost = build_stand_cost(self.robot.num_joints, self.cost_config, torch.device("cpu"))
        p = self.planner_params
        warm_start = stand_warm_start(self.cost_config.posture, self.robot.velocity_limits,
                                      p.get("model_period_s", self.period),
                                      p.get("goal_seed_speed_fraction", 0.5))
        controller = ModelPredictiveController(
            PlannerConfig(**values), cost, self.explorer(), torch.device("cpu"),
            needs_goal=False, warm_start=warm_start,
            disturbance=config_from(DisturbanceConfig, p.get("disturbance")),
            model_period_s=p.get("model_period_s", self.period))
        controller.set_model(model, 1)
        return controller


def observe(sim: Simulator):
    """(q, qd, odom [13]) as the planner builds them from /joint_states and /odom."""
    q, qd, _ = sim.joint_state()
    position, quat_wxyz, linear, angular = sim.base_state()
    return q, qd, odom_vector(position, np.roll(quat_wxyz, -1), linear, angular)


def collect(setup: StandSetup, seconds: float, fall_tilt: float):
    """``(transitions, falls)``: exploration transitions at the model period; a fallen robot
    (tilt above ``fall_tilt``) is put back in its crouch (no transition spans the reset)."""
    sim, explorer = setup.simulator(setup.seed, pushes=True), setup.explorer()
    periods = int(round(setup.period / sim.config.control_period))
    states, actions, next_states, episodes = [], [], [], []
    episode, resets = 0, 0
    q, qd, odom = observe(sim)
    for _ in tqdm(range(int(seconds / setup.period)), desc="explore", leave=False):
        state = stand_state(q, qd, odom)
        command = explorer(q, qd)
        sim.set_command(command)
        sim.step(periods)
        q, qd, odom = observe(sim)
        states.append(state)
        actions.append(command)
        next_states.append(stand_state(q, qd, odom))
        episodes.append(episode)
        if tilt_angle(odom[3:7]) > fall_tilt:
            sim.reset()
            explorer.reset()
            episode, resets = episode + 1, resets + 1
            q, qd, odom = observe(sim)
    print(f"explored {seconds:.0f} s: {len(states)} transitions, {resets} falls (reset)")
    return TransitionBatch(np.array(states, np.float32), np.array(actions, np.float32),
                           np.array(next_states, np.float32),
                           episode=np.array(episodes, np.int64)), resets


def train(setup: StandSetup, data: TransitionBatch, frame: str):
    """The trainer's ensemble fitted to ``data``: in the heading frame (``frame`` "heading")
    or on the odometry states as they are ("odom")."""
    config = config_from(EnsembleConfig, setup.trainer_params.get("ensemble"))
    model = ProbabilisticEnsemble(data.state_dim, data.action_dim, config, "cpu", setup.seed)
    if frame == "heading":
        model = HeadingFrameModel(model, setup.robot.num_joints)
    model.fit(data, seed=setup.seed)
    return model


def trial(setup: StandSetup, seed: int, policy, args) -> dict:
    """One trial from the crouch; ``policy(q, qd, odom, time) -> (command, planning_ms)``."""
    sim = setup.simulator(seed)
    periods = int(round(setup.period / sim.config.control_period))
    heights, tilts, planning = [], [], []
    for _ in range(int(args.trial_seconds / setup.period)):
        q, qd, odom = observe(sim)
        heights.append(odom[2])
        tilts.append(np.degrees(tilt_angle(odom[3:7])))
        command, planning_ms = policy(q, qd, odom, sim.time)
        if planning_ms is not None:
            planning.append(planning_ms)
        sim.set_command(command)
        sim.step(periods)
    last = int(args.window / setup.period)
    target = setup.cost_config.height_target
    height_error = np.abs(np.array(heights[-last:]) - target) / target
    tilt = np.array(tilts[-last:])
    return dict(seed=seed, success=bool(height_error.max() <= args.height_tolerance
                                        and tilt.max() <= args.max_tilt_deg),
                max_height_error_m=float(height_error.max() * target),
                max_tilt_deg=float(tilt.max()),
                final_height_m=float(heights[-1]),
                planning_ms_p50=float(np.median(planning)) if planning else None)


def mpc_policy(setup: StandSetup, model):
    controller = setup.controller(model)

    def policy(q, qd, odom, now):
        step = controller.step(q, qd, odom, stamp=now)
        command = q.copy() if step.failed else step.command  # a failed plan is held (the gate)
        return command, (None if step.plan is None else step.plan.planning_time * 1e3)
    return policy


def ramp_policy(setup: StandSetup, ramp_seconds: float):
    crouch = np.asarray(setup.task_config.crouch)
    stand = np.asarray(setup.cost_config.posture)

    def policy(q, qd, odom, now):
        fraction = min(1.0, now / ramp_seconds)
        return crouch + fraction * (stand - crouch), None
    return policy


TRIAL_SEED_BASE = 1000
"""Trial ``k`` of seed ``s`` pushes with seed ``TRIAL_SEED_BASE + s * trials + k``: the learned
and scripted controllers face the same pushes, and different seeds different ones."""


def run_trials(setup: StandSetup, make_policy, args, label: str) -> dict:
    first = TRIAL_SEED_BASE + setup.seed * args.trials
    results = [trial(setup, first + k, make_policy(), args)
               for k in tqdm(range(args.trials), desc=label, leave=False)]
    successes = int(sum(r["success"] for r in results))
    planning = [r["planning_ms_p50"] for r in results if r["planning_ms_p50"] is not None]
    print(f"{label:9s}: {successes}/{args.trials} trials standing (height within "
          f"{100 * args.height_tolerance:.0f} % of {setup.cost_config.height_target} m, tilt "
          f"< {args.max_tilt_deg:.0f} deg over the last {args.window:.0f} s); median worst tilt "
          f"{np.median([r['max_tilt_deg'] for r in results]):.1f} deg"
          + (f", planning p50 {np.median(planning):.1f} ms" if planning else ""))
    return dict(successes=successes, success_rate=successes / args.trials, trials=results)


def run_seed(args, seed: int) -> dict:
    """Explore, fit and run the learned and scripted trials for one seed."""
    torch.manual_seed(seed)
    setup = StandSetup(Path(args.config), args.urdf, seed, args.package_path)
    start = time.monotonic()
    data, falls = collect(setup, args.explore_seconds, np.radians(args.fall_tilt_deg))
    model = train(setup, data, args.model_frame)
    result = dict(seed=seed, transitions=len(data), exploration_falls=falls, push=dict(
        rate_hz=setup.sim_params.get("push_rate_hz"), force_n=setup.sim_params.get("push_force"),
        duration_s=setup.sim_params.get("push_duration")))
    result["mpc"] = run_trials(setup, lambda: mpc_policy(setup, model), args, "mpc")
    result["ramp_baseline"] = run_trials(setup, lambda: ramp_policy(setup, args.ramp_seconds),
                                         args, "ramp")
    result["wall_s"] = time.monotonic() - start
    return result


def spread(values) -> dict:
    """Mean, min and max of per-seed figures."""
    values = np.asarray(values, dtype=float)
    return dict(mean=float(values.mean()), min=float(values.min()), max=float(values.max()))


def summarise(runs, trials: int) -> dict:
    """Per-seed successes of the learned and scripted controllers and exploration falls, with
    their mean, min and max over the seeds."""
    table = {name: [run[key]["successes"] for run in runs]
             for name, key in (("mpc", "mpc"), ("ramp", "ramp_baseline"))}
    falls = [run["exploration_falls"] for run in runs]
    summary = dict(seeds=[run["seed"] for run in runs], trials_per_seed=trials,
                   mpc_successes=table["mpc"], ramp_successes=table["ramp"],
                   exploration_falls=falls, mpc=spread(table["mpc"]),
                   ramp=spread(table["ramp"]), falls=spread(falls))
    print(f"{'seed':>6s} {'mpc':>7s} {'ramp':>7s} {'falls':>6s}")
    for seed, mpc, ramp, fall in zip(summary["seeds"], table["mpc"], table["ramp"], falls):
        print(f"{seed:6d} {mpc:4d}/{trials:<2d} {ramp:4d}/{trials:<2d} {fall:6d}")
    for name in ("mpc", "ramp", "falls"):
        print(f"{name:>6s}: mean {summary[name]['mean']:.1f}, min {summary[name]['min']:.0f}, "
              f"max {summary[name]['max']:.0f}" + ("" if name == "falls" else f" of {trials}"))
    return summary


def pooled(runs) -> dict:
    """All seeds' trials pooled, under the keys of a one-seed run (``mpc``, ``ramp_baseline``,
    ``transitions``, ``exploration_falls``, ``push``), for readers of the earlier format."""
    out = dict(transitions=sum(run["transitions"] for run in runs),
               exploration_falls=sum(run["exploration_falls"] for run in runs),
               push=runs[0]["push"])
    for key in ("mpc", "ramp_baseline"):
        trials = [t for run in runs for t in run[key]["trials"]]
        successes = int(sum(t["success"] for t in trials))
        out[key] = dict(successes=successes, success_rate=successes / len(trials),
                        trials=trials)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config" / "quadruped12.yaml"))
    parser.add_argument("--urdf", default=str(REPO / "urdf" / "quadruped12.urdf"),
                        help="URDF file or package:// URI")
    parser.add_argument("--package-path", action="append", default=[], metavar="DIR",
                        help="directory searched for package:// URIs (repeatable)")
    parser.add_argument("--explore-seconds", type=float, default=120.0)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--trial-seconds", type=float, default=8.0)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--height-tolerance", type=float, default=0.17,
                        help="as a fraction of the standing height (cost.height_target)")
    parser.add_argument("--max-tilt-deg", type=float, default=15.0)
    parser.add_argument("--fall-tilt-deg", type=float, default=60.0)
    parser.add_argument("--ramp-seconds", type=float, default=1.0)
    parser.add_argument("--model-frame", choices=("heading", "odom"), default="heading",
                        help="the ensemble in each state's heading frame (x, y, yaw removed) "
                             "or on the odometry states as they are")
    parser.add_argument("--seed", type=int, default=0, help="the seed of a one-seed run")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="run every seed (exploration, fit, trials) and summarise them")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "results" / "bench" /
                                             "quadruped_stand.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    runs = []
    for seed in (args.seeds or [args.seed]):
        print(f"--- seed {seed}")
        runs.append(run_seed(args, seed))
    summary = dict(args=recorded_args(vars(args)), summary=summarise(runs, args.trials), runs=runs,
                   **pooled(runs), wall_s=time.monotonic() - start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out} ({summary['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
