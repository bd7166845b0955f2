"""Model-mismatch benchmark: what a learned model adds to a hand-derived one, per second of data.

The simulated arm differs from its URDF and datasheet the way real arms do: the mismatch of the
config's sim section (config/arm7.yaml; ``mbrl-ros robot-config`` writes the same for any arm),
with magnitudes fixed from physical ranges (docs/benchmarks.md) and never tuned to a result:

- an unmodelled payload of 30 % of the arm's rated payload,
- Coulomb friction of 5 % and viscous friction of 2 % (per rad/s) of each joint's effort limit,
- a 20 ms first-order actuator lag,
- 0.5 deg of backlash (position-controlled joints),
- actuator gains 20 % below the datasheet (servo stiffness and damping, motor torque constant).

Two arms, the same URDF: the position-controlled arm of config/arm7.yaml (a PD servo in the
driver) and a torque-controlled variant (torques on top of the driver's gravity compensation).
For each arm, seed and amount of robot data (exploration seconds) it fits a residual on the
nominal model and a pure network ensemble, and runs the planner (the graph's controller: MPPI,
offset-free estimate, IK seed) on two tasks where dynamics matter:

- reach-and-stop: from the home pose to a random goal whose joint travel takes 50-100 % of
  ``--max-travel-fraction`` of the time at the speed of the planner's goal seed (the
  config's ``goal_seed_speed_fraction`` of the velocity limits); success when the end
  effector is within ``--radius`` of it at ``--reach-time`` and stays there for ``--hold``;
- tracking: reach a point, then follow it around a horizontal circle; the RMS distance while
  it moves is reported.

The nominal model alone (what the arm's planner uses without data) is the 0 s point of the
residual and the flat reference line. Output: one JSON (``--out``) and a plot (``--plot``).

    python -m bench.mismatch --seeds 0 1 2 --goals 10 --data-seconds 20 60 160
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from tqdm import tqdm

from bench.arm_reach import REPO, ArmSetup, collect, train
from bench.params import graph_params
from mbrl_ros.core.workspace import WorkspaceConfig
from mbrl_ros.demo.goals import TravelGoals, goals_within_travel

MISMATCH_PARAMETERS = ("friction_scale", "damping_scale", "payload_mass",
                       "coulomb_friction_fraction", "viscous_friction_fraction",
                       "actuator_lag_s", "backlash_rad", "actuator_gain_scale")
"""The sim parameters that make the simulated arm differ from its URDF (reported)."""
NO_MISMATCH = dict(friction_scale=1.0, damping_scale=1.0, payload_mass=0.0,
                   coulomb_friction_fraction=0.0, viscous_friction_fraction=0.0,
                   actuator_lag_s=0.0, backlash_rad=0.0, actuator_gain_scale=1.0)

ARMS = ("position", "effort")
PLOTTED = ("success_{}", "tracking_rms_{}_m")
"""The table's columns on the plot's two rows (with "mean", "min", "max")."""
ARM_TITLES = dict(position="position-controlled", effort="torque-controlled")
KINDS = ("nominal", "residual", "ensemble")


def torque_controlled(params: Tuple[dict, dict, dict]) -> Tuple[dict, dict, dict]:
    """The parameters of the same arm driven by joint torques (the driver compensates the
    links' weight, as torque-controlled arms' drivers do); the servo settings are dropped."""
    sim, planner, trainer = (copy.deepcopy(p) for p in params)
    for section in (sim, planner, trainer):
        for key in ("position_kp", "position_kv", "servo_kp", "servo_kd"):
            section.pop(key, None)
    sim.update(control_mode="effort", controller_name="effort_controller",
               gravity_compensation=True)
    planner.update(command_mode="effort", gravity_compensated=True)
    trainer.update(command_mode="effort", gravity_compensated=True)
    trainer.setdefault("ensemble", {}).pop("relative_action", None)
    return sim, planner, trainer


def arm_setup(arm: str, config: Path, urdf: str, seed: int, mismatch: bool = True) -> ArmSetup:
    """The arm (``position`` or ``effort``) with the config's model mismatch (or none: the
    nominal model is then exact up to time discretisation; a check of the protocol)."""
    sim, planner, trainer = graph_params(config)
    if not mismatch:
        sim = dict(sim, **NO_MISMATCH)
    params = (sim, planner, trainer)
    if arm == "effort":
        params = torque_controlled(params)
    return ArmSetup(config, urdf, seed, params=params)


@dataclass(frozen=True)
class Protocol:
    """What is measured per goal (all times simulated)."""

    radius: float
    reach_time: float
    hold: float
    track_radius: float
    track_period: float
    track_settle: float
    track_episodes: int
    command_delay_s: float = 0.0


class ClosedLoop:
    """The planner driving the simulated arm, one planner period at a time; the safety gate's
    hold is applied when a plan fails."""

    def __init__(self, setup: ArmSetup, model, command_delay_s: float = 0.0) -> None:
        self.setup, self.sim = setup, setup.simulator()
        self.controller = setup.controller(model)
        self.periods = int(round(setup.period / self.sim.config.control_period))
        self.delay = int(round(command_delay_s / self.sim.config.control_period))
        if not 0 <= self.delay < self.periods:
            raise ValueError(f"the command delay must be in [0, {setup.period}) s")

    def start(self, goal: np.ndarray) -> None:
        self.sim.reset()
        self.controller.reset()
        self.controller.set_goal(goal)

    def move_target(self, target: np.ndarray) -> None:
        """Move the cost's target without re-seeding the plan (a moving goal)."""
        self.controller.cost.term("end_effector").set_target(np.asarray(target).tolist())

    def tick(self) -> np.ndarray:
        """One planner period; returns the end-effector position at the start of it."""
        q, qd, _ = self.sim.joint_state()
        step = self.controller.step(q, qd, stamp=self.sim.time)
        self.sim.step(self.delay)  # the previous command is held while the plan is computed
        if step.failed:
            self.sim.set_command(q if self.setup.mode == "position" else np.zeros_like(q))
        else:
            self.sim.set_command(step.command)
        self.sim.step(self.periods - self.delay)
        return self.setup.robot.ee_pose(q)[0]


def reach_and_stop(loop: ClosedLoop, goal: np.ndarray, protocol: Protocol) -> dict:
    loop.start(goal)
    period = loop.setup.period
    ticks = int(round((protocol.reach_time + protocol.hold) / period)) + 1
    distances = np.array([np.linalg.norm(loop.tick() - goal) for _ in range(ticks)])
    times = np.arange(ticks) * period
    judged = distances[times >= protocol.reach_time - 1e-9]
    inside = np.nonzero(distances <= protocol.radius)[0]
    return dict(reached=bool(np.all(judged <= protocol.radius)),
                first_inside_s=float(times[inside[0]]) if inside.size else None,
                final_distance_m=float(distances[-1]), max_hold_error_m=float(judged.max()))


def circle(centre: np.ndarray, radius: float, phase: float) -> np.ndarray:
    """A point of the horizontal circle through ``centre`` (where it starts, phase 0)."""
    return centre + radius * np.array([np.cos(phase) - 1.0, np.sin(phase), 0.0])


def tracking(loop: ClosedLoop, start: np.ndarray, protocol: Protocol) -> dict:
    loop.start(start)
    period = loop.setup.period
    for _ in range(int(round(protocol.track_settle / period))):
        loop.tick()
    errors = []
    for tick in range(int(round(protocol.track_period / period))):
        target = circle(start, protocol.track_radius,
                        2 * np.pi * tick * period / protocol.track_period)
        loop.move_target(target)
        errors.append(np.linalg.norm(loop.tick() - target))
    return dict(rms_m=float(np.sqrt(np.mean(np.square(errors)))), max_m=float(np.max(errors)))


def reachable_in_time(setup: ArmSetup, count: int, rng: np.random.Generator,
                      workspace: WorkspaceConfig, travel_s: float) -> np.ndarray:
    """[count, 3] goals around the home pose whose slowest joint needs 50-100 % of
    ``travel_s`` at the speed the planner's goal seed moves at (its
    ``goal_seed_speed_fraction`` of the URDF velocity limits)."""
    home = setup.simulator().joint_state()[0]
    speed = setup.planner_params.get("goal_seed_speed_fraction", 1.0)
    return goals_within_travel(setup.robot, home, count, rng,
                               TravelGoals(travel_s=travel_s, speed_fraction=speed), workspace)


def evaluate(setup: ArmSetup, model, goals: np.ndarray, protocol: Protocol) -> dict:
    loop = ClosedLoop(setup, model, protocol.command_delay_s)
    reaches = [reach_and_stop(loop, goal, protocol)
               for goal in tqdm(goals, desc="reach", leave=False)]
    tracks = [tracking(loop, goal, protocol)
              for goal in tqdm(goals[:protocol.track_episodes], desc="track", leave=False)]
    return dict(success_rate=float(np.mean([r["reached"] for r in reaches])),
                tracking_rms_m=float(np.mean([t["rms_m"] for t in tracks])) if tracks else None,
                reaches=reaches, tracks=tracks)


def run_seed(arm: str, seed: int, args, protocol: Protocol) -> Dict[str, List[dict]]:
    """Every cell of one arm and seed: {kind: [{data_seconds, ...results}]}."""
    torch.manual_seed(seed)
    setup = arm_setup(arm, Path(args.config), args.urdf, seed, not args.no_mismatch)
    workspace = WorkspaceConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in
                                   (setup.planner_params.get("workspace") or {}).items()})
    goals = reachable_in_time(setup, args.goals, np.random.default_rng(seed + 1), workspace,
                              args.max_travel_fraction * args.reach_time)
    cells: Dict[str, List[dict]] = {kind: [] for kind in args.kinds}
    data = collect(setup, max(args.data_seconds))  # shorter runs are its beginning
    steps_per_second = 1.0 / setup.model_period
    if "nominal" in args.kinds:
        cells["nominal"].append(dict(data_seconds=0.0, **evaluate(
            setup, train(setup, "nominal", data), goals, protocol)))
    for seconds in args.data_seconds:
        part = data[:int(round(seconds * steps_per_second))]
        for kind in (k for k in args.kinds if k != "nominal"):
            fit_start = time.monotonic()
            model = train(setup, kind, part)
            result = evaluate(setup, model, goals, protocol)
            cells[kind].append(dict(data_seconds=seconds, fit_s=time.monotonic() - fit_start,
                                    **result))
            tqdm.write(f"{arm} seed {seed} {kind:8s} {seconds:5.0f} s: "
                       f"{100 * result['success_rate']:3.0f} % reach-and-stop, tracking RMS "
                       f"{100 * (result['tracking_rms_m'] or float('nan')):.1f} cm")
    return cells


def summarise(runs: Dict[str, Dict[int, Dict[str, List[dict]]]]) -> Dict[str, dict]:
    """{arm: {kind: [{data_seconds, success mean/min/max, tracking mean/min/max}]}}."""
    table: Dict[str, dict] = {}
    for arm, seeds in runs.items():
        table[arm] = {}
        kinds = next(iter(seeds.values())).keys()
        for kind in kinds:
            rows = []
            for index, cell in enumerate(next(iter(seeds.values()))[kind]):
                success = [s[kind][index]["success_rate"] for s in seeds.values()]
                rms = [s[kind][index]["tracking_rms_m"] for s in seeds.values()]
                rms = [r for r in rms if r is not None]
                rows.append(dict(data_seconds=cell["data_seconds"], success_mean=np.mean(success),
                                 success_min=min(success), success_max=max(success),
                                 tracking_rms_mean_m=float(np.mean(rms)) if rms else None,
                                 tracking_rms_min_m=min(rms) if rms else None,
                                 tracking_rms_max_m=max(rms) if rms else None))
            table[arm][kind] = rows
    return table


def plot(table: Dict[str, dict], path: Path, data_seconds: List[float]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(2, len(table), figsize=(5.5 * len(table), 7), squeeze=False)
    styles = dict(nominal=("k", "--"), residual=("tab:blue", "-"), ensemble=("tab:orange", "-"))
    labels = dict(nominal="nominal model only", residual="residual (nominal + network)",
                  ensemble="network only")
    for column, (arm, kinds) in enumerate(table.items()):
        for kind, rows in kinds.items():
            colour, line = styles[kind]
            if kind == "nominal":  # no data: a flat reference line
                rows = [dict(rows[0], data_seconds=s) for s in [0.0] + list(data_seconds)]
            elif kind == "residual" and "nominal" in kinds:  # 0 s of data: the nominal model
                rows = [kinds["nominal"][0]] + rows
            x = [r["data_seconds"] for r in rows]
            for row_index, key in enumerate(PLOTTED):  # both in percent or cm: x 100
                mean, low, high = ([r[key.format(stat)] for r in rows]
                                   for stat in ("mean", "min", "max"))
                if any(m is None for m in mean):
                    continue
                ax = axes[row_index][column]
                ax.plot(x, 100 * np.array(mean), color=colour, linestyle=line, marker="o",
                        label=labels[kind])
                ax.fill_between(x, 100 * np.array(low), 100 * np.array(high), color=colour,
                                alpha=0.15)
        axes[0][column].set_title(f"{ARM_TITLES.get(arm, arm)} arm")
        axes[0][column].set_ylabel("reach-and-stop success [%] (mean, min-max over seeds)")
        axes[1][column].set_ylabel("tracking RMS error [cm]")
        axes[1][column].set_xlabel("robot data [s]")
        axes[0][column].set_ylim(-5, 105)
        axes[0][column].legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def combine(paths: List[Path], out: Path, plot_path: Path) -> int:
    """One result file and plot from runs with the same mismatch, seeds and goals: different
    arms (run side by side), or more amounts of data for an arm (rows merged by amount)."""
    parts = [json.loads(path.read_text()) for path in paths]
    first = parts[0]
    for part in parts[1:]:
        for key in ("mismatch", "seeds", "goals"):
            if part[key] != first[key]:
                raise SystemExit(f"cannot combine: {key} differs ({part[key]} vs {first[key]})")
    table: Dict[str, Dict[str, Dict[float, dict]]] = {}
    runs: Dict[str, Dict[str, Dict[str, Dict[float, dict]]]] = {}
    protocol, wall = {}, {}
    for part in parts:
        for arm, kinds in part["table"].items():
            protocol.setdefault(arm, part["protocol"])
            wall[arm] = wall.get(arm, 0.0) + part["wall_s"]
            for kind, rows in kinds.items():
                table.setdefault(arm, {}).setdefault(kind, {}).update(
                    {row["data_seconds"]: row for row in rows})
        for arm, seeds in part["runs"].items():
            for seed, kinds in seeds.items():
                for kind, cells in kinds.items():
                    runs.setdefault(arm, {}).setdefault(seed, {}).setdefault(kind, {}).update(
                        {cell["data_seconds"]: cell for cell in cells})

    def ordered(rows: Dict[float, dict]) -> List[dict]:
        return [rows[key] for key in sorted(rows)]
    merged_table = {arm: {kind: ordered(rows) for kind, rows in kinds.items()}
                    for arm, kinds in table.items()}
    data_seconds = sorted({row["data_seconds"] for kinds in merged_table.values()
                           for kind, rows in kinds.items() if kind != "nominal" for row in rows})
    merged = dict(first, table=merged_table, data_seconds=data_seconds, protocol=protocol,
                  wall_s=wall, runs={arm: {seed: {kind: ordered(cells)
                                                  for kind, cells in kinds.items()}
                                           for seed, kinds in seeds.items()}
                                     for arm, seeds in runs.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=1, default=float))
    plot(merged["table"], plot_path, merged["data_seconds"])
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config" / "arm7.yaml"))
    parser.add_argument("--urdf", default=str(REPO / "urdf" / "arm7.urdf"))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--goals", type=int, default=10)
    parser.add_argument("--data-seconds", nargs="+", type=float, default=[20.0, 60.0, 160.0])
    parser.add_argument("--radius", type=float, default=0.02)
    parser.add_argument("--reach-time", type=float, default=1.0)
    parser.add_argument("--hold", type=float, default=0.5)
    parser.add_argument("--max-travel-fraction", type=float, default=0.6,
                        help="goals whose joint travel from home at the goal seed's speed "
                             "takes at most this fraction of --reach-time")
    parser.add_argument("--track-radius", type=float, default=0.08)
    parser.add_argument("--track-period", type=float, default=4.0)
    parser.add_argument("--track-settle", type=float, default=1.5)
    parser.add_argument("--track-episodes", type=int, default=3)
    parser.add_argument("--command-delay", type=float, default=0.0,
                        help="seconds (simulated) between a state and its command taking effect "
                             "(the graph's planning time)")
    parser.add_argument("--no-mismatch", action="store_true",
                        help="the simulated arm as its URDF says (checks the protocol)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "mismatch.json"))
    parser.add_argument("--plot", default=str(REPO / "docs" / "img" / "mismatch.png"))
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="merge earlier runs' results (arms run side by side, or more "
                             "amounts of data) into --out and --plot, and run nothing")
    args = parser.parse_args(argv)
    if args.combine:
        return combine([Path(path) for path in args.combine], Path(args.out), Path(args.plot))
    torch.set_num_threads(args.threads)
    protocol = Protocol(args.radius, args.reach_time, args.hold, args.track_radius,
                        args.track_period, args.track_settle, args.track_episodes,
                        args.command_delay)
    start = time.monotonic()
    runs: Dict[str, Dict[int, Dict[str, List[dict]]]] = {}
    for arm in args.arms:
        runs[arm] = {seed: run_seed(arm, seed, args, protocol) for seed in args.seeds}
    table = summarise(runs)
    sim = arm_setup(ARMS[0], Path(args.config), args.urdf, 0, not args.no_mismatch).sim_params
    summary = dict(mismatch={name: sim.get(name) for name in MISMATCH_PARAMETERS},
                   protocol=protocol.__dict__, seeds=args.seeds, goals=args.goals,
                   data_seconds=args.data_seconds, table=table,
                   runs={arm: {str(k): v for k, v in seeds.items()}
                         for arm, seeds in runs.items()},
                   wall_s=time.monotonic() - start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1, default=float))
    plot(table, Path(args.plot), args.data_seconds)
    for arm, kinds in table.items():
        for kind, rows in kinds.items():
            for row in rows:
                rms = row["tracking_rms_mean_m"]
                print(f"{arm:8s} {kind:8s} {row['data_seconds']:5.0f} s: success "
                      f"{100 * row['success_mean']:5.1f} % (min {100 * row['success_min']:.0f}, "
                      f"max {100 * row['success_max']:.0f}); tracking RMS "
                      f"{'-' if rms is None else f'{100 * rms:.1f} cm'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
