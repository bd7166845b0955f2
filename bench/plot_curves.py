#!/usr/bin/env python3
"""Plot our dm_control learning curves next to the TD-MPC and TD-MPC2 reference curves.

Example::

    python -m bench.plot_curves --task cartpole-swingup

Ours: ``<results>/<task>/seed*.csv`` (columns step, return). References (optional):
``<reference-dir>/tdmpc/<task>.csv`` (seed, step, return) and
``<reference-dir>/tdmpc2/<task>.csv`` (step, reward, seed). Each curve is the mean over seeds
with a min-max band; a missing or unreadable reference is skipped with a warning.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger("bench.plot_curves")

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCES = (("TD-MPC", "tdmpc", "return"), ("TD-MPC2", "tdmpc2", "reward"))
"""(label, folder, return column) of the reference curves."""


def read_curves(paths: Sequence[Path], value_column: str) -> Dict[str, Dict[int, float]]:
    """``{seed label: {step: return}}`` from CSVs with columns step, ``value_column`` and
    optionally seed (else the file name is the seed label). Bad rows are skipped."""
    curves: Dict[str, Dict[int, float]] = defaultdict(dict)
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    step, value = int(float(row["step"])), float(row[value_column])
                except (KeyError, TypeError, ValueError):
                    continue
                if np.isfinite(value):
                    curves[row.get("seed") or path.stem][step] = value
    return dict(curves)


def aggregate(curves: Dict[str, Dict[int, float]], max_step: Optional[int] = None
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, mean, low, high)`` over seeds at every step any seed has (up to max_step)."""
    by_step: Dict[int, List[float]] = defaultdict(list)
    for curve in curves.values():
        for step, value in curve.items():
            if max_step is None or step <= max_step:
                by_step[step].append(value)
    steps = np.array(sorted(by_step), dtype=float)
    values = [by_step[int(s)] for s in steps]
    return (steps, np.array([np.mean(v) for v in values]),
            np.array([np.min(v) for v in values]), np.array([np.max(v) for v in values]))


def plot_task(task: str, results_dir: Path, reference_dir: Path,
              out_path: Optional[Path] = None, max_step: Optional[int] = None) -> Path:
    """Write ``<results_dir>/<task>/curve.png`` (or ``out_path``); returns its path.

    The x range is up to ``max_step`` (default: 5x our last step, at least 100k) so that the
    references' early phase stays readable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = read_curves(sorted((results_dir / task).glob("seed*.csv")), "return")
    last = max((max(c) for c in ours.values() if c), default=0)
    max_step = max_step or max(100_000, 5 * last)
    fig, ax = plt.subplots(figsize=(6, 4))
    series = [("mbrl_ros (ours)", ours)]
    for label, folder, column in REFERENCES:
        path = reference_dir / folder / f"{task}.csv"
        if not path.is_file():
            logger.warning("no reference curve %s", path)
            continue
        try:
            series.append((label, read_curves([path], column)))
        except (OSError, csv.Error) as exc:
            logger.warning("cannot read reference %s: %s", path, exc)
    for label, curves in series:
        steps, mean, low, high = aggregate(curves, max_step)
        if not len(steps):
            continue
        seeds = f"{len(curves)} seed" + ("s" if len(curves) > 1 else "")
        ax.plot(steps, mean, marker="o", markersize=3, label=f"{label} ({seeds})")
        ax.fill_between(steps, low, high, alpha=0.2)
    ax.set_xlim(0, max_step)
    ax.set_ylim(0, 1000)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(task)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out_path = out_path or results_dir / task / "curve.png"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=80)
    plt.close(fig)
    return out_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--results-dir", default=str(REPO_ROOT / "results" / "bench" / "dmc"))
    parser.add_argument("--reference-dir",
                        default=str(REPO_ROOT.parent / "shared" / "reference"))
    parser.add_argument("--out", default="", help="image path (default: next to our CSVs)")
    parser.add_argument("--max-step", type=int, default=0, help="x-axis limit (0: auto)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO)
    path = plot_task(args.task, Path(args.results_dir), Path(args.reference_dir),
                     Path(args.out) if args.out else None, args.max_step or None)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
