"""Pure MPC -> + policy prior -> + terminal value: planning compute against success.

The planner can use a learned terminal value and a policy prior (TD-MPC style,
``mbrl_ros/core/value_policy.py``, ``mbrl_ros/core/value_prior.py``). This benchmark measures
what each stage of that path buys, per robot:

- arm: the position-controlled arm of config/arm7.yaml under the physical model mismatch of
  ``bench.mismatch`` (payload, friction, lag, backlash, weak gains), exploration data, the
  residual model on the nominal one, then ``bench.mismatch``'s reach-and-stop protocol (goals
  ``goals_within_travel``, within ``--radius`` at ``--reach-time`` and for ``--hold`` more);
  the other figure is the median final distance to the goal;
- quadruped: ``bench.quadruped_stand`` (stand explorer, heading-frame ensemble, trials from the
  crouch under the sim's pushes); the other figure is the median over trials of the worst
  height error over the judged window.

Per robot and seed: the data and the dynamics model exactly as those benchmarks make them,
then ONE :class:`~mbrl_ros.core.value_policy.ValuePolicy` trained on the same data by TD
learning with rollouts through the learned model (reward: minus the planner's own task cost,
``TaskReward``; goals relabelled in hindsight for the arm). Then every stage (``mpc``,
``mpc+policy``, ``mpc+value``, ``mpc+policy+value``, and the policy alone as a reference) at
every cell of the compute grid: horizon x samples x iterations as fractions of the config's
planner settings (``--horizons``, ``--samples``, ``--iterations``; the default grid runs from
the config's settings down to 1/13 of their compute, horizons of 100 %, 50 % and 30 %). The
same goals / trials (and pushes) for every cell of a seed. Compute per tick = samples x
horizon x iterations (policy-prior trajectories count among the samples); the controller's
wall time per tick is recorded too.

    python -m bench.value_stages --robots arm --seeds 0 1 2 --goals 10
    python -m bench.value_stages --robots quadruped --seeds 0 1 --trials 5
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from bench import quadruped_stand as stand_bench
from bench.arm_reach import collect as arm_collect, train as arm_train
from bench.mismatch import ClosedLoop, Protocol, arm_setup, reach_and_stop, reachable_in_time
from bench.params import REPO, config_from, graph_params, recorded_args
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.core.value_policy import ValuePolicy, ValuePolicyConfig
from mbrl_ros.core.value_prior import (STAGE_FULL, STAGE_MPC, STAGE_POLICY_ONLY,
                                       STAGE_POLICY_PRIOR, STAGE_VALUE, PlanningPrior,
                                       ValuePriorConfig)
from mbrl_ros.core.workspace import WorkspaceConfig
from mbrl_ros.tasks.reach import ReachCostConfig
from mbrl_ros.training.value_training import ValueTask, ValueTrainingConfig, value_data, value_task

ROBOTS = ("arm", "quadruped")
STAGES = {STAGE_MPC: ValuePriorConfig(),
          STAGE_POLICY_PRIOR: ValuePriorConfig(policy_prior=True),
          STAGE_VALUE: ValuePriorConfig(terminal_value=True),
          STAGE_FULL: ValuePriorConfig(policy_prior=True, terminal_value=True)}
"""The planning stages, run at every cell of the compute grid."""
CONFIGS = dict(arm=("config/arm7.yaml", "urdf/arm7.urdf"),
               quadruped=("config/quadruped12.yaml", "urdf/quadruped12.urdf"))
METRICS = dict(arm=("final_distance_m", "median final distance to the goal [cm]"),
               quadruped=("max_height_error_m", "median worst height error [cm]"))


@dataclasses.dataclass(frozen=True)
class Cell:
    """One planner setting of the compute grid."""

    horizon: int
    samples: int
    iterations: int

    @property
    def compute(self) -> int:
        """Sampled model steps per tick: samples x horizon x iterations."""
        return self.horizon * self.samples * self.iterations

    @property
    def name(self) -> str:
        return f"H{self.horizon}xN{self.samples}xI{self.iterations}"


def grid(planner: dict, horizons: Sequence[float], samples: Sequence[float],
         iterations: Sequence[float]) -> List[Cell]:
    """The cells: every combination of the fractions of the config's planner settings
    (rounded, at least 1; at least 4 samples), largest compute first, duplicates dropped."""
    base = (planner.get("horizon", 16), planner.get("num_samples", 512),
            planner.get("num_iterations", 3))
    cells = {Cell(max(1, round(h * base[0])), max(4, round(n * base[1])),
                  max(1, round(i * base[2])))
             for h, n, i in itertools.product(horizons, samples, iterations)}
    return sorted(cells, key=lambda c: (-c.compute, -c.horizon))


def policy_trajectories(samples: int, fraction: float) -> int:
    """Policy-prior samples among ``samples`` (at least 1, fewer than ``samples``)."""
    return int(min(samples - 1, max(1, round(fraction * samples))))


def configure(controller, cell: Cell, stage: str, agent: Optional[ValuePolicy],
              policy_fraction: float) -> None:
    """Give ``controller`` the cell's planner settings and the stage's use of ``agent``."""
    uses_policy = stage in (STAGE_POLICY_PRIOR, STAGE_FULL)
    controller.set_planner_config(dataclasses.replace(
        controller.planner_config, horizon=cell.horizon, num_samples=cell.samples,
        num_iterations=cell.iterations,
        num_policy_trajectories=policy_trajectories(cell.samples, policy_fraction)
        if uses_policy else 0))
    options = (ValuePriorConfig(policy_only=True) if stage == STAGE_POLICY_ONLY
               else STAGES[stage])
    controller.set_prior_options(options)
    if agent is not None and stage != STAGE_MPC:
        controller.set_prior(PlanningPrior(agent, 1))


def timed(controller, times: List[float]) -> None:
    """Record the wall time [ms] of every ``controller.step`` in ``times``."""
    step = controller.step

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = step(*args, **kwargs)
        times.append(1e3 * (time.perf_counter() - start))
        return result
    controller.step = wrapper


# ------------------------------------------------------------------------------ value fit
def value_training(args) -> ValueTrainingConfig:
    """The trainer's value/policy settings, with ``--horizon-s`` and ``--rollout-horizon``
    where given."""
    training = ValueTrainingConfig()
    if args.horizon_s is not None:
        training = dataclasses.replace(training, horizon_s=args.horizon_s)
    if args.rollout_horizon is not None:
        training = dataclasses.replace(training, rollout_horizon=args.rollout_horizon)
    return training.validate()


def value_config(args, model_period_s: float) -> ValuePolicyConfig:
    """The :class:`ValuePolicyConfig` the trainer uses for model steps of ``model_period_s``."""
    return value_training(args).policy_config(model_period_s)


def git_commit() -> Optional[str]:
    """The repository's HEAD (None outside a git checkout): what code the figures are of."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def fit_value(data: TransitionBatch, model, task: ValueTask, model_period_s: float, args,
              seed: int, label: str) -> Tuple[ValuePolicy, dict]:
    """One ValuePolicy as the trainer node makes it (its task: reward = minus the planner's
    cost, the planner's action box; rows in runs of consecutive transitions) from ``data``
    and rollouts through ``model``; returns it and a report (training time, losses)."""
    data = value_data(data)
    steps = args.value_steps
    agent = ValuePolicy(task.state_dim, task.action_dim, task.action_low, task.action_high,
                        value_config(args, model_period_s), seed=seed,
                        goal_dim=task.goal_dim, relative_action=task.relative_action)
    bar = tqdm(total=steps, desc=f"{label} value/policy", leave=False)
    start = time.monotonic()

    def progress(step: int, losses: Dict[str, float]) -> None:
        bar.update(1)
        if step % max(1, steps // 5) == 0 or step == steps:
            tqdm.write(f"{label} value/policy step {step}/{steps}: TD loss "
                       f"{losses['q_loss']:.3g}, policy loss {losses['policy_loss']:.3g} "
                       f"(value units; {time.monotonic() - start:.0f} s)")
    reward = task.reward
    report = agent.fit(data, steps, model=model, reward_fn=reward, seed=seed,
                       progress=progress,
                       achieved_goal=reward.achieved_goal if task.goal_dim else None)
    bar.close()
    q_loss = np.asarray(report.q_loss)
    tail = max(1, len(q_loss) // 10)
    return agent, dict(fit_s=time.monotonic() - start, steps=report.steps,
                       config=agent.config.to_dict(),
                       model_transitions=report.model_transitions,
                       value_scale=float(agent.value_scale),
                       q_loss_first=float(q_loss[:tail].mean()),
                       q_loss_last=float(q_loss[-tail:].mean()),
                       policy_loss_last=float(np.mean(report.policy_loss[-tail:])))


# ------------------------------------------------------------------------------------ arm
def arm_seed(seed: int, args, cells: List[Cell], stages: List[str]) -> dict:
    """Data, residual model, value/policy and every stage x cell of one arm seed."""
    torch.manual_seed(seed)
    config, urdf = (str(REPO / p) for p in CONFIGS["arm"])
    setup = arm_setup("position", Path(config), urdf, seed)
    workspace = WorkspaceConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in
                                   (setup.planner_params.get("workspace") or {}).items()})
    goals = reachable_in_time(setup, args.goals, np.random.default_rng(seed + 1), workspace,
                              args.max_travel_fraction * args.reach_time)
    start = time.monotonic()
    data = arm_collect(setup, args.data_seconds["arm"])
    model = arm_train(setup, "residual", data)
    collect_fit_s = time.monotonic() - start
    task = value_task("reach", setup.robot,
                      config_from(ReachCostConfig, setup.planner_params.get("cost")),
                      setup.mode, fk=setup.nominal.ee_position_batch)
    agent, fit = fit_value(data, model, task, setup.model_period, args, seed,
                           f"arm seed {seed}")
    protocol = Protocol(args.radius, args.reach_time, args.hold, 0.0, 1.0, 0.0, 0)

    def run(cell: Optional[Cell], stage: str) -> dict:
        loop = ClosedLoop(setup, model)
        configure(loop.controller, cell or args.default_cells["arm"], stage, agent,
                  args.policy_fractions["arm"])
        times: List[float] = []
        timed(loop.controller, times)
        reaches = [reach_and_stop(loop, goal, protocol) for goal in goals]
        return dict(success_rate=float(np.mean([r["reached"] for r in reaches])),
                    metric=float(np.median([r["final_distance_m"] for r in reaches])),
                    step_ms=float(np.median(times)), reaches=reaches)
    results = evaluate_all(run, cells, stages, f"arm seed {seed}")
    return dict(seed=seed, transitions=len(data), collect_fit_s=collect_fit_s, value_fit=fit,
                goals=np.asarray(goals).tolist(), results=results)


# ------------------------------------------------------------------------------ quadruped
def quadruped_seed(seed: int, args, cells: List[Cell], stages: List[str]) -> dict:
    """Data, heading-frame ensemble, value/policy and every stage x cell of one seed."""
    torch.manual_seed(seed)
    config, urdf = (REPO / p for p in CONFIGS["quadruped"])
    setup = stand_bench.StandSetup(config, str(urdf), seed)
    start = time.monotonic()
    data, falls = stand_bench.collect(setup, args.data_seconds["quadruped"],
                                      np.radians(args.fall_tilt_deg))
    model = stand_bench.train(setup, data, "heading")
    collect_fit_s = time.monotonic() - start
    task = value_task("stand", setup.robot, setup.cost_config)
    period = setup.planner_params.get("model_period_s", setup.period)
    agent, fit = fit_value(data, model, task, period, args, seed, f"quadruped seed {seed}")
    trial_args = SimpleNamespace(trial_seconds=args.trial_seconds, window=args.window,
                                 height_tolerance=args.height_tolerance,
                                 max_tilt_deg=args.max_tilt_deg)
    first = stand_bench.TRIAL_SEED_BASE + seed * args.trials

    def run(cell: Optional[Cell], stage: str) -> dict:
        trials, times = [], []
        for k in range(args.trials):
            controller = setup.controller(model)
            configure(controller, cell or args.default_cells["quadruped"], stage, agent,
                      args.policy_fractions["quadruped"])
            timed(controller, times)

            def policy(q, qd, odom, now, controller=controller):
                step = controller.step(q, qd, odom, stamp=now)
                return (q.copy() if step.failed else step.command), None
            trials.append(stand_bench.trial(setup, first + k, policy, trial_args))
        return dict(success_rate=float(np.mean([t["success"] for t in trials])),
                    metric=float(np.median([t["max_height_error_m"] for t in trials])),
                    step_ms=float(np.median(times)), trials=trials)
    results = evaluate_all(run, cells, stages, f"quadruped seed {seed}")
    return dict(seed=seed, transitions=len(data), exploration_falls=falls,
                collect_fit_s=collect_fit_s, value_fit=fit, results=results)


# ---------------------------------------------------------------------------- evaluation
def robot_cells(robot: str, args) -> Tuple[Cell, List[Cell], float]:
    """The config's planner setting, the grid (which always holds it) and the share of the
    samples that are the policy prior's (``--policy-fraction``, else the config's
    ``num_policy_trajectories`` / ``num_samples``, else 1/8)."""
    planner = graph_params(REPO / CONFIGS[robot][0])[1].get("planner") or {}
    default = grid(planner, [1.0], [1.0], [1.0])[0]
    cells = grid(planner, args.horizons, args.samples, args.iterations)
    fraction = args.policy_fraction
    if fraction is None:
        fraction = planner.get("num_policy_trajectories", 0) / default.samples or 1.0 / 8
    return default, cells if default in cells else [default] + cells, fraction


def evaluate_all(run: Callable[[Optional[Cell], str], dict], cells: List[Cell],
                 stages: List[str], label: str) -> Dict[str, List[dict]]:
    """{stage: [result per cell]} (the policy alone: one result, no cell)."""
    results: Dict[str, List[dict]] = {}
    for stage in stages:
        for cell in ([None] if stage == STAGE_POLICY_ONLY else cells):
            start = time.monotonic()
            result = run(cell, stage)
            result.update(cell=None if cell is None else dataclasses.asdict(cell),
                          compute=0 if cell is None else cell.compute,
                          wall_s=time.monotonic() - start)
            results.setdefault(stage, []).append(result)
            tqdm.write(f"{label} {stage:16s} {'-' if cell is None else cell.name:14s} "
                       f"compute {result['compute']:5d}: success "
                       f"{100 * result['success_rate']:3.0f} %, metric "
                       f"{100 * result['metric']:.1f} cm, {result['step_ms']:.1f} ms/tick "
                       f"({result['wall_s']:.0f} s)")
    return results


def spread(values) -> dict:
    values = np.asarray(values, dtype=float)
    return dict(mean=float(values.mean()), min=float(values.min()), max=float(values.max()))


def summarise(runs: List[dict]) -> Dict[str, List[dict]]:
    """{stage: [{cell, compute, success / metric / step_ms mean, min, max over seeds}]}."""
    table: Dict[str, List[dict]] = {}
    for stage, first in runs[0]["results"].items():
        rows = []
        for index, cell in enumerate(first):
            per_seed = [run["results"][stage][index] for run in runs]
            rows.append(dict(cell=cell["cell"], compute=cell["compute"],
                             success=spread([r["success_rate"] for r in per_seed]),
                             metric_m=spread([r["metric"] for r in per_seed]),
                             step_ms=spread([r["step_ms"] for r in per_seed])))
        table[stage] = rows
    return table


def derive(table: Dict[str, List[dict]], default: Cell, per_seed: int) -> dict:
    """Per stage: the smallest compute whose mean success reaches pure MPC's at the config's
    setting less one goal / trial (1 / ``per_seed``), and its ratio to pure MPC's smallest
    and to the default compute; and the shortest horizon's success per stage."""
    mpc_default = next(r for r in table[STAGE_MPC] if r["cell"] == dataclasses.asdict(default))
    target = mpc_default["success"]["mean"]
    threshold = target - 1.0 / per_seed + 1e-9
    smallest = {}
    for stage, rows in table.items():
        if stage == STAGE_POLICY_ONLY:
            continue
        meeting = [r["compute"] for r in rows if r["success"]["mean"] >= threshold]
        smallest[stage] = min(meeting) if meeting else None
    mpc_smallest = smallest[STAGE_MPC]
    stages = {}
    for stage, compute in smallest.items():
        stages[stage] = dict(
            smallest_compute=compute,
            ratio_to_mpc_smallest=None if compute is None or not mpc_smallest
            else compute / mpc_smallest,
            ratio_to_default=None if compute is None else compute / default.compute)
    policy = table.get(STAGE_POLICY_ONLY)
    if policy:
        stages[STAGE_POLICY_ONLY] = dict(
            reaches_target=bool(policy[0]["success"]["mean"] >= threshold))
    shortest = min(r["cell"]["horizon"] for r in table[STAGE_MPC])
    short = {stage: max((r for r in rows if r["cell"]["horizon"] == shortest),
                        key=lambda r: r["compute"])
             for stage, rows in table.items() if stage != STAGE_POLICY_ONLY}
    full = stages.get(STAGE_FULL, {})
    ratio = full.get("ratio_to_mpc_smallest")
    return dict(mpc_default_success=target, threshold=threshold, stages=stages,
                goal_one_third_met=bool(ratio is not None and ratio <= 1.0 / 3.0 + 1e-9),
                shortest_horizon=shortest,
                shortest_horizon_success={stage: dict(cell=row["cell"], **row["success"])
                                          for stage, row in short.items()},
                full_beats_mpc_at_shortest_horizon=bool(
                    STAGE_FULL in short and short[STAGE_FULL]["success"]["mean"]
                    > short[STAGE_MPC]["success"]["mean"]))


# ----------------------------------------------------------------------------------- plot
def plot(results: Dict[str, dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5),
                                squeeze=False)
    colours = {STAGE_MPC: "k", STAGE_POLICY_PRIOR: "tab:orange", STAGE_VALUE: "tab:green",
               STAGE_FULL: "tab:blue", STAGE_POLICY_ONLY: "tab:red"}
    for ax, (robot, result) in zip(axes[0], results.items()):
        for stage, rows in result["table"].items():
            if stage == STAGE_POLICY_ONLY:
                ax.axhline(100 * rows[0]["success"]["mean"], color=colours[stage],
                           linestyle=":", label="policy alone (no planning)")
                continue
            rows = sorted(rows, key=lambda r: r["compute"])
            x = [r["compute"] for r in rows]
            mean = np.array([r["success"]["mean"] for r in rows])
            low = mean - [r["success"]["min"] for r in rows]
            high = np.array([r["success"]["max"] for r in rows]) - mean
            ax.errorbar(x, 100 * mean, yerr=100 * np.array([low, high]), color=colours[stage],
                        marker="o", capsize=3, alpha=0.85, label=stage)
            for r in rows if stage == STAGE_MPC else []:
                point = (r["compute"], 100 * r["success"]["mean"])
                ax.annotate(f"H{r['cell']['horizon']}", point, textcoords="offset points",
                            xytext=(3, -10), fontsize=7)
        ax.axvline(result["default_cell"]["compute"], color="grey", linestyle="--",
                   linewidth=0.8)
        ax.set_xscale("log")
        ax.set_ylim(-5, 105)
        ax.set_xlabel("planning compute per tick: samples x horizon x iterations")
        ax.set_ylabel("success [%] (mean, min-max over seeds)")
        ax.set_title(f"{robot} ({len(result['seeds'])} seeds)")
        ax.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def report(robot: str, result: dict) -> None:
    table, derived = result["table"], result["derived"]
    unit = METRICS[robot][1]
    print(f"\n{robot}: success mean (min-max) over seeds {result['seeds']}; {unit}; ms/tick")
    for stage, rows in table.items():
        for r in rows:
            cell = "-" if r["cell"] is None else Cell(**r["cell"]).name
            print(f"  {stage:16s} {cell:14s} {r['compute']:5d}  "
                  f"{100 * r['success']['mean']:5.1f} % ({100 * r['success']['min']:.0f}-"
                  f"{100 * r['success']['max']:.0f})  {100 * r['metric_m']['mean']:5.1f} cm  "
                  f"{r['step_ms']['mean']:6.1f} ms")
    print(f"  pure MPC at the default setting: {100 * derived['mpc_default_success']:.1f} %; "
          f"smallest compute reaching it (less one goal/trial):")
    for stage, d in derived["stages"].items():
        if "smallest_compute" in d:
            print(f"    {stage:16s} {d['smallest_compute']}  ratio to pure MPC's "
                  f"{d['ratio_to_mpc_smallest']}, to the default {d['ratio_to_default']}")
    print(f"  goal (<= 1/3 of pure MPC's compute) met: {derived['goal_one_third_met']}; "
          f"full beats pure MPC at horizon {derived['shortest_horizon']}: "
          f"{derived['full_beats_mpc_at_shortest_horizon']}")


def combine(paths: List[Path], out: Path, plot_path: Path) -> int:
    """One result file and plot from runs of different robots (run one after the other)."""
    parts = [json.loads(path.read_text()) for path in paths]
    for part in parts[1:]:
        if part["value_training"] != parts[0]["value_training"]:
            raise SystemExit("cannot combine: the value/policy settings differ")
    robots = {robot: dict(result, args=result.get("args", part["args"]))
              for part in parts for robot, result in part["robots"].items()}
    summary = dict(args=[part["args"] for part in parts],
                   git_commit=[part["git_commit"] for part in parts],
                   value_training=parts[0]["value_training"], robots=robots,
                   wall_s=sum(part["wall_s"] for part in parts))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    plot(robots, plot_path)
    for robot, result in robots.items():
        report(robot, result)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", nargs="+", default=list(ROBOTS), choices=ROBOTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--data-seconds", nargs="+", type=float, default=[60.0, 90.0],
                        help="seconds of exploration data: one value for every robot or one "
                             "per robot of --robots (in its order)")
    parser.add_argument("--value-steps", type=int, default=3000,
                        help="TD updates of the value/policy per seed")
    parser.add_argument("--horizons", "--horizon-fractions", dest="horizons", nargs="+",
                        type=float, default=[1.0, 0.5, 0.3],
                        help="planning horizons as fractions of the config's")
    parser.add_argument("--samples", "--sample-fractions", dest="samples", nargs="+",
                        type=float, default=[1.0, 0.25],
                        help="samples per iteration as fractions of the config's")
    parser.add_argument("--iterations", "--iteration-fractions", dest="iterations",
                        nargs="+", type=float, default=[1.0],
                        help="iterations as fractions of the config's")
    parser.add_argument("--stages", nargs="+", default=list(STAGES) + [STAGE_POLICY_ONLY],
                        choices=list(STAGES) + [STAGE_POLICY_ONLY])
    parser.add_argument("--policy-fraction", type=float, default=None,
                        help="share of the samples drawn by rolling out the policy prior "
                             "(default: the config's num_policy_trajectories / num_samples)")
    parser.add_argument("--horizon-s", type=float, default=None,
                        help="how far ahead the value looks [s] (its discount per model step: "
                             "exp(-model period / this); default: the trainer's)")
    parser.add_argument("--rollout-horizon", type=int, default=None,
                        help="model-rollout steps of the value training, 0: real data only "
                             "(default: the trainer's)")
    # arm (bench.mismatch's reach-and-stop)
    parser.add_argument("--goals", type=int, default=10)
    parser.add_argument("--radius", type=float, default=0.02)
    parser.add_argument("--reach-time", type=float, default=1.0)
    parser.add_argument("--hold", type=float, default=0.5)
    parser.add_argument("--max-travel-fraction", type=float, default=0.6)
    # quadruped (bench.quadruped_stand)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--trial-seconds", type=float, default=8.0)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--height-tolerance", type=float, default=0.17)
    parser.add_argument("--max-tilt-deg", type=float, default=15.0)
    parser.add_argument("--fall-tilt-deg", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "value_stages.json"))
    parser.add_argument("--plot", default=str(REPO / "docs" / "img" / "value_stages.png"))
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="merge earlier runs' results (different robots) into --out and "
                             "--plot, and run nothing")
    args = parser.parse_args(argv)
    if args.combine:
        return combine([Path(path) for path in args.combine], Path(args.out), Path(args.plot))
    if len(args.data_seconds) not in (1, len(args.robots)):
        parser.error("--data-seconds takes one value or one per robot")
    recorded = recorded_args(vars(args))
    args.data_seconds = dict(zip(args.robots, itertools.cycle(args.data_seconds))) \
        if len(args.data_seconds) == 1 else dict(zip(args.robots, args.data_seconds))
    args.default_cells, args.policy_fractions = {}, {}
    commit = git_commit()  # at the start: the code this process imported
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    results: Dict[str, dict] = {}
    for robot in args.robots:
        default, cells, fraction = robot_cells(robot, args)
        args.default_cells[robot], args.policy_fractions[robot] = default, fraction
        stages = list(args.stages) if STAGE_MPC in args.stages else [STAGE_MPC] + args.stages
        print(f"{robot}: {len(cells)} cells x {len(stages)} stages per seed: "
              + ", ".join(f"{c.name} ({c.compute})" for c in cells))
        robot_start = time.monotonic()
        seed_fn = arm_seed if robot == "arm" else quadruped_seed
        runs = [seed_fn(seed, args, cells, stages) for seed in args.seeds]
        table = summarise(runs)
        per_seed = args.goals if robot == "arm" else args.trials
        results[robot] = dict(
            args=recorded, seeds=args.seeds, data_seconds=args.data_seconds[robot],
            per_seed_episodes=per_seed, metric=METRICS[robot][0],
            policy_fraction=fraction,
            default_cell=dict(dataclasses.asdict(default),
                              compute=default.compute),
            cells=[dict(dataclasses.asdict(c), compute=c.compute) for c in cells],
            stages=stages, table=table, derived=derive(table, default, per_seed),
            value_fit=dict(fit_s=spread([r["value_fit"]["fit_s"] for r in runs]),
                           steps=args.value_steps),
            runs=runs, wall_s=time.monotonic() - robot_start)
        report(robot, results[robot])
    summary = dict(args=recorded, git_commit=commit,
                   value_training=dataclasses.asdict(value_training(args)), robots=results,
                   wall_s=time.monotonic() - start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    plot(results, Path(args.plot))
    print(f"wrote {args.out} and {args.plot} ({summary['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
