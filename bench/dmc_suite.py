#!/usr/bin/env python3
"""A DMControl suite of ``bench.dmc`` runs with TD-MPC's protocol, and the table against TD-MPC.

Example::

    python -m bench.dmc_suite --tasks cartpole-swingup reacher-easy --seeds 3 --steps 20000
    python -m bench.dmc_suite --tasks cartpole-swingup --seeds 3 --agent gp-planner \\
        --steps 5000 --eval-every 1000 -- --model-every 500
    python -m bench.dmc_suite --table-only     # the table of every run under --out-dir

Protocol (as TD-MPC's, nicklashansen/tdmpc): 10 noise-free evaluation episodes of 1000
simulator steps, action repeat per domain (:func:`bench.dmc_env.default_action_repeat`),
environment steps counted after action repeat. One set of defaults for every task: no per-task
flag (unbounded hinge angles are found from the model, see ``bench/dmc_env.py``). Runs are
``python -m bench.dmc`` processes, one torch thread each, ``--jobs`` at a time; a run whose
summary (``seed<k>.json``) already exists with the same settings is not run again.

The table (``<out-dir>/suite.md`` and ``suite.json``) has, per task and agent, the mean ± std
over seeds of the evaluation return at each of ``--report-steps`` (at most one evaluation
interval before it: the last evaluation at or before the step), with the number of seeds, next
to TD-MPC's mean over its seeds from ``--tdmpc-results`` (TD-MPC evaluated every 20k steps:
values between are interpolated linearly and marked "~").
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from bench.dmc import run_label
from bench.recorded import recorded_args

logger = logging.getLogger("bench.dmc_suite")

REPO_ROOT = Path(__file__).resolve().parent.parent
TDMPC_EVAL_EPISODES = 10
"""Evaluation episodes per evaluation in TD-MPC's protocol."""
DEFAULT_REPORT_STEPS = (10_000, 20_000, 50_000)
"""Environment steps the table reports."""
DEFAULT_AGENT, DEFAULT_METHOD = "planner", "mppi"


@dataclass(frozen=True)
class RunSpec:
    """One ``bench.dmc`` run of the suite."""

    task: str
    seed: int
    steps: int
    agent: str
    method: str
    eval_every: int
    extra: Tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The agent's name in the table (and its folder below the task, but the default's)."""
        return run_label(self.agent, self.method)

    def folder(self, out_dir: Path) -> Path:
        """Where ``bench.dmc`` writes this run's CSV and summary."""
        base = out_dir / self.task
        default = self.agent == DEFAULT_AGENT and self.method == DEFAULT_METHOD
        return base if default else base / self.label

    def command(self, out_dir: Path, reference_dir: Path) -> List[str]:
        """The ``python -m bench.dmc`` command line."""
        return [sys.executable, "-m", "bench.dmc", "--task", self.task, "--seed", str(self.seed),
                "--steps", str(self.steps), "--agent", self.agent, "--method", self.method,
                "--eval-every", str(self.eval_every),
                "--eval-episodes", str(TDMPC_EVAL_EPISODES), "--threads", "1",
                "--out-dir", str(out_dir), "--reference-dir", str(reference_dir),
                "--no-progress", *self.extra]

    def done(self, out_dir: Path) -> bool:
        """True when a finished summary with the same steps and settings exists."""
        summary = self.folder(out_dir) / f"seed{self.seed}.json"
        try:
            with open(summary) as f:
                args = json.load(f)["args"]
        except (OSError, ValueError, KeyError):
            return False
        return (args.get("steps") == self.steps and args.get("eval_every") == self.eval_every
                and args.get("eval_episodes") == TDMPC_EVAL_EPISODES
                and args.get("agent", DEFAULT_AGENT) == self.agent
                and args.get("method", DEFAULT_METHOD) == self.method)


def run_one(spec: RunSpec, out_dir: Path, reference_dir: Path) -> int:
    """Run ``spec`` (its log next to its CSV); returns the exit code."""
    folder = spec.folder(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(folder / f"seed{spec.seed}.log", "w") as log:
        return subprocess.call(spec.command(out_dir, reference_dir), stdout=log,
                               stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)


def run_suite(specs: Sequence[RunSpec], out_dir: Path, reference_dir: Path, jobs: int
              ) -> Dict[RunSpec, int]:
    """Run every spec not yet done, ``jobs`` at a time; ``{spec: exit code}`` of those run."""
    todo = [s for s in specs if not s.done(out_dir)]
    logger.info("%d of %d runs to do (%d already done)", len(todo), len(specs),
                len(specs) - len(todo))
    codes: Dict[RunSpec, int] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(todo), desc="dmc suite", unit="run") as bar:
        futures = {pool.submit(run_one, s, out_dir, reference_dir): s for s in todo}
        for future, spec in futures.items():
            codes[spec] = future.result()
            if codes[spec] != 0:
                logger.error("%s seed %d (%s) failed with exit code %d; see %s", spec.task,
                             spec.seed, spec.label, codes[spec],
                             spec.folder(out_dir) / f"seed{spec.seed}.log")
            bar.update(1)
    return codes


# ------------------------------------------------------------------------------ the table
def read_curve(path: Path) -> Dict[int, float]:
    """``{env step: return}`` of one of our CSVs (columns step, return); bad rows skipped."""
    curve: Dict[int, float] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                curve[int(float(row["step"]))] = float(row["return"])
            except (KeyError, TypeError, ValueError):
                continue
    return curve


def our_runs(out_dir: Path) -> Dict[Tuple[str, str], Dict[int, Dict[int, float]]]:
    """``{(task, agent label): {seed: curve}}`` of every finished run under ``out_dir`` (a
    run is finished when its summary JSON exists)."""
    runs: Dict[Tuple[str, str], Dict[int, Dict[int, float]]] = defaultdict(dict)
    for summary in sorted(out_dir.glob("*/**/seed*.json")):
        relative = summary.parent.relative_to(out_dir).parts
        task = relative[0]
        label = relative[1] if len(relative) > 1 else run_label(DEFAULT_AGENT, DEFAULT_METHOD)
        csv_path = summary.with_suffix(".csv")
        if csv_path.exists():
            runs[(task, label)][int(summary.stem[len("seed"):])] = read_curve(csv_path)
    return dict(runs)


def value_at(curve: Dict[int, float], step: int, eval_every: int) -> Optional[float]:
    """The last evaluation at or before ``step`` and less than ``eval_every`` before it."""
    before = [s for s in curve if step - eval_every < s <= step]
    return curve[max(before)] if before else None


def reference_at(path: Path, step: int) -> Tuple[Optional[float], bool, int]:
    """TD-MPC's mean return over its seeds at ``step``: ``(mean, interpolated, seeds)``;
    (None, False, 0) when the file is missing or does not reach the step."""
    if not path.exists():
        return None, False, 0
    by_seed: Dict[str, Dict[int, float]] = defaultdict(dict)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                by_seed[row.get("seed", "0")][int(float(row["step"]))] = float(row["return"])
            except (KeyError, TypeError, ValueError):
                continue
    values, interpolated = [], False
    for curve in by_seed.values():
        steps = np.array(sorted(curve), dtype=float)
        if len(steps) == 0 or not steps[0] <= step <= steps[-1]:
            continue
        interpolated |= step not in curve
        values.append(float(np.interp(step, steps, [curve[int(s)] for s in steps])))
    if not values:
        return None, False, 0
    return float(np.mean(values)), interpolated, len(values)


def suite_table(out_dir: Path, tdmpc_dir: Path, report_steps: Sequence[int],
                eval_every: int) -> Tuple[str, List[dict]]:
    """Markdown table and its rows: task × agent × return at each report step."""
    rows = []
    for (task, label), seeds in sorted(our_runs(out_dir).items()):
        row = {"task": task, "agent": label, "seeds": sorted(seeds), "at": {}}
        for step in report_steps:
            values = [v for v in (value_at(c, step, eval_every) for c in seeds.values())
                      if v is not None]
            reference, interpolated, reference_seeds = reference_at(
                tdmpc_dir / f"{task}.csv", step)
            row["at"][step] = {
                "mean": float(np.mean(values)) if values else None,
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "n": len(values), "tdmpc": reference, "tdmpc_interpolated": interpolated,
                "tdmpc_seeds": reference_seeds}
        rows.append(row)
    header = "| task | agent | " + " | ".join(
        f"{step // 1000}k: ours (seeds) | {step // 1000}k: TD-MPC" for step in report_steps)
    lines = [header + " |", "|---|---|" + "---|---|" * len(report_steps)]
    for row in rows:
        cells = [row["task"], row["agent"]]
        for step in report_steps:
            at = row["at"][step]
            spread = f" ± {at['std']:.0f}" if at["n"] > 1 else ""
            ours = "–" if at["mean"] is None else f"{at['mean']:.0f}{spread} ({at['n']})"
            theirs = "–" if at["tdmpc"] is None else (
                f"{'~' if at['tdmpc_interpolated'] else ''}{at['tdmpc']:.0f}")
            cells += [ours, theirs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", rows


def write_table(out_dir: Path, tdmpc_dir: Path, report_steps: Sequence[int],
                eval_every: int) -> str:
    """Write ``suite.md`` and ``suite.json`` under ``out_dir``; returns the markdown."""
    markdown, rows = suite_table(out_dir, tdmpc_dir, report_steps, eval_every)
    (out_dir / "suite.md").write_text(markdown)
    with open(out_dir / "suite.json", "w") as f:
        json.dump({"report_steps": list(report_steps), "eval_every": eval_every,
                   "eval_episodes": TDMPC_EVAL_EPISODES,
                   **recorded_args({"tdmpc_results": str(tdmpc_dir)}), "rows": rows},
                  f, indent=2)
    return markdown


def parse_args(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
    """Our arguments, and those after ``--`` (passed to every ``bench.dmc`` run)."""
    argv = list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["cartpole-swingup", "reacher-easy"],
                        help="<domain>-<task> names (TD-MPC's, e.g. cup-catch)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20_000, help="environment steps per run")
    parser.add_argument("--agent", default=DEFAULT_AGENT, help="bench.dmc --agent")
    parser.add_argument("--method", default=DEFAULT_METHOD, help="bench.dmc --method")
    parser.add_argument("--eval-every", type=int, default=10_000,
                        help="environment steps between evaluations (and at 0)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each)")
    parser.add_argument("--report-steps", type=int, nargs="+", default=DEFAULT_REPORT_STEPS)
    parser.add_argument("--out-dir", default=str(REPO_ROOT / "results" / "bench" / "dmc_suite"))
    parser.add_argument("--reference-dir",
                        default=str(REPO_ROOT.parent / "shared" / "reference"),
                        help="reference curves for the plots (tdmpc/, tdmpc2/)")
    parser.add_argument("--tdmpc-results", default="",
                        help="folder of TD-MPC's results/*.csv (a clone of "
                             "nicklashansen/tdmpc has all its tasks); default: "
                             "<reference-dir>/tdmpc")
    parser.add_argument("--table-only", action="store_true", help="only write the table")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv), extra


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    out_dir, reference_dir = Path(args.out_dir), Path(args.reference_dir)
    tdmpc_dir = Path(args.tdmpc_results) if args.tdmpc_results else reference_dir / "tdmpc"
    failed = 0
    if not args.table_only:
        specs = [RunSpec(task, seed, args.steps, args.agent, args.method, args.eval_every,
                         tuple(extra))
                 for task in args.tasks
                 for seed in range(args.first_seed, args.first_seed + args.seeds)]
        failed = sum(code != 0 for code in run_suite(specs, out_dir, reference_dir,
                                                     args.jobs).values())
    print(write_table(out_dir, tdmpc_dir, args.report_steps, args.eval_every))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
