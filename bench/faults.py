"""Fault table of the running arm graph: runs the fault-injection suite
(test/integration/test_fault_injection.py, real processes on real topics) and prints what it
measured per fault, as a Markdown table (docs/safety_gate.md).

    python -m bench.faults [--runs 3] [--payload-kg 0.0] [--out results/bench/faults.json]

Each run starts the graph afresh. Figures: the largest |command - measured position| from 0.5 s
after the fault (position hold), when the gate fell back (in gate periods after the fault), the
longest gap of the controller stream (gate periods, the gate's own clock), the fraction of joint
states readable after a logger crash, and how long each node took to stop after SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SUITE = "test/integration/test_fault_injection.py"


def run_suite(payload_kg: float) -> dict:
    """One run of the suite; the figures it wrote (pytest's verdict under ``passed``)."""
    with tempfile.TemporaryDirectory() as work:
        report = Path(work) / "report.json"
        env = dict(os.environ, MBRL_FAULT_REPORT=str(report),
                   MBRL_FAULT_PAYLOAD_KG=str(payload_kg))
        result = subprocess.run([sys.executable, "-m", "pytest", SUITE, "-q",
                                 "-p", "no:cacheprovider"], cwd=REPO, env=env,
                                capture_output=True, text=True)
        print(result.stdout.strip().splitlines()[-1] if result.stdout else result.stderr,
              flush=True)
        figures = json.loads(report.read_text()) if report.is_file() else {}
        figures["passed"] = result.returncode == 0
        return figures


def spread(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{np.median(values):.3g} (max {np.max(values):.3g})" if len(values) > 1 \
        else f"{values[0]:.3g}"


def table(runs: list) -> str:
    faults = sorted({name for run in runs for name in run if name != "passed"})
    lines = ["| fault | hold error [rad] | fallback after [gate periods] | max stream gap "
             "[gate periods] | other |", "|---|---|---|---|---|"]
    for fault in faults:
        rows = [run.get(fault, {}) for run in runs]
        other = []
        for key in ("readable_fraction", "lost_before_crash_s", "drift_while_gate_dead_rad",
                    "valid_checkpoints", "final_hold_error_rad"):
            if any(key in row for row in rows):
                other.append(f"{key} {spread([row.get(key) for row in rows])}")
        stops = [row["stop_seconds"] for row in rows if "stop_seconds" in row]
        if stops:
            slowest = [max(s.values()) for s in stops if s]
            other.append(f"slowest node stop {spread(slowest)} s")
        lines.append(f"| {fault} | {spread([r.get('hold_error_rad') for r in rows])} | "
                     f"{spread([r.get('fallback_after_periods') for r in rows])} | "
                     f"{spread([r.get('max_gap_periods') for r in rows])} | "
                     f"{'; '.join(other)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="graph runs (each starts afresh)")
    parser.add_argument("--payload-kg", type=float, default=0.0,
                        help="the sim's unmodelled payload (config/arm7.yaml has 0.5 kg)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "faults.json")
    args = parser.parse_args(argv)
    runs = []
    for index in range(args.runs):
        print(f"run {index + 1}/{args.runs} (payload {args.payload_kg} kg)", flush=True)
        runs.append(run_suite(args.payload_kg))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(payload_kg=args.payload_kg, runs=runs), indent=2))
    print(f"\n{sum(r['passed'] for r in runs)}/{len(runs)} runs passed every assertion\n")
    print(table(runs))
    return 0 if all(r["passed"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
