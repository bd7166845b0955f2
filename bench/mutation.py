"""Mutation testing of the safety-critical code: how many small faults its own fast unit tests
catch (docs/safety_gate.md, "Mutation testing"). Not part of ``make test``.

    python -m bench.mutation [--modules safety_gate command_limits checkpoint joint_names
                              rollout alignment] [--max-mutants 40] [--seed 0] [--jobs 1]
                             [--deselect TEST_ID ...] [--workdir DIR]
                             [--out results/bench/mutation.json]

The mutating is done by cosmic-ray (pinned in requirements/dev-mutation.txt, installed by
bench/mutation_venv.sh into its own venv, .build/mutation-venv; this module calls that script
itself). For each module this driver copies the repository's sources into a scratch folder
(``tempfile``; the work tree is never touched), runs the module's unit tests there once
unmutated (they must pass; the per-mutant timeout is 3x that run + 10 s), writes a cosmic-ray
configuration whose test command is the project's own Python (this venv: rclpy, torch, ...)
running only those tests (``pytest -x``), and lets ``cosmic-ray init`` list the mutants
(every operator of the tool: arithmetic, comparison, unary and boolean operator replacements,
``True``/``False``, numbers +-1, ``and``/``or``, ``break``/``continue``, exception types,
decorators removed, ``for`` loops run zero times). Mutants inside type annotations (not
evaluated: ``from __future__ import annotations``) and, where a target names a scope, outside
it are marked skipped; ``--max-mutants N`` then samples N of the rest with a fixed seed
(``--seed``) and skips the others, and ``cosmic-ray exec`` runs what is left (``--jobs J``:
J copies, each with its share). A mutant is *killed* when the tests fail, *survived* when they
pass, *timeout* when they run past the timeout, *incompetent* when cosmic-ray could not run
them. The counts and the surviving mutants (file, line, operator, diff) go to the JSON file.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures as cf
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOL_VENV = Path(os.environ.get("MUTATION_VENV", REPO / ".build/mutation-venv"))


@dataclass(frozen=True)
class Target:
    path: str
    """The module cosmic-ray mutates (relative to the repository)."""
    tests: tuple
    """pytest arguments: the module's fast unit tests."""
    scope: tuple = ()
    """Top-level classes/functions to mutate; empty: the whole module."""


TARGETS = {
    # test_workspace: the gate's workspace refusal (a gate with a WorkspaceGuard) is tested there
    "safety_gate": Target("mbrl_ros/core/safety_gate.py",
                          ("test/core/test_safety_gate.py", "test/core/test_workspace.py")),
    "command_limits": Target("mbrl_ros/core/command_limits.py",
                             ("test/core/test_safety_gate.py", "test/core/test_exploration.py")),
    "checkpoint": Target("mbrl_ros/core/checkpoint.py", ("test/core/test_checkpoint.py",)),
    "joint_names": Target("mbrl_ros/nodes/conversions.py", ("test/nodes/test_conversions.py",),
                          scope=("JointNameMap", "_optional_field")),
    # test_planner's 60 s LQR long-horizon case is left out: the other cases run the same
    # rollouts in all three propagation modes.
    "rollout": Target("mbrl_ros/core/planning/rollout.py",
                      ("test/core/test_ensemble_kernel.py", "test/core/test_planner.py",
                       "--deselect",
                       "test/core/test_planner.py::test_lqr_without_terminal_value_long_horizon")),
    "alignment": Target("mbrl_ros/data/alignment.py", ("test/data/test_alignment.py",)),
}

# Marks the chosen work items of a session as skipped (cosmic-ray's own "skipped" outcome, as its
# cr-filter-* tools do); runs with the tool venv's Python, job ids on stdin.
_SKIP = """
import json, sys
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult
ids = json.load(sys.stdin)
with use_db(sys.argv[1], WorkDB.Mode.open) as db:
    db.set_multiple_results(ids, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
"""


def tool_venv() -> Path:
    """Create/refresh the cosmic-ray venv (idempotent, seconds when nothing changed)."""
    subprocess.run(["bash", str(REPO / "bench/mutation_venv.sh")], check=True,
                   env={**os.environ, "MUTATION_VENV": str(TOOL_VENV)})
    return TOOL_VENV


def tool_version(venv: Path) -> str:
    out = subprocess.run([str(venv / "bin/cosmic-ray"), "--version"], capture_output=True,
                         text=True, check=True).stdout.strip()
    return out.replace(", version ", " ")


def _copy_repo(dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("mbrl_ros", "test", "config", "urdf"):
        if (REPO / name).exists():
            shutil.copytree(REPO / name, dest / name, ignore=ignore)
    for name in ("pytest.ini", "setup.cfg", "setup.py", "package.xml"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)


def _env(copy_root: Path) -> dict:
    """The environment of the tests: the copy first on PYTHONPATH, the work tree not at all."""
    env = dict(os.environ)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
             if p and Path(p).resolve() != REPO]
    env["PYTHONPATH"] = os.pathsep.join([str(copy_root), str(copy_root / "test")] + parts)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a same-size mutant must never reuse a stale .pyc
    return env


def _test_command(tests: tuple) -> list:
    return [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
            "-o", "addopts=", *tests]


def _baseline(copy_root: Path, tests: tuple) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(_test_command(tests), cwd=copy_root, env=_env(copy_root),
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"the unit tests fail on the unmutated copy ({' '.join(tests)}):\n"
                         + proc.stdout[-3000:])
    return time.monotonic() - t0


def _spans(source: str, scope: tuple) -> tuple[list, list]:
    """(positions to keep: the scope's definitions, positions to skip: annotations), each a
    list of ((line, col), (end_line, end_col))."""
    tree = ast.parse(source)

    def span(n):
        return (n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset)

    keep = [span(n) for n in tree.body
            if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in scope]
    if scope and len(keep) != len(scope):
        raise SystemExit(f"scope {scope}: not all found")
    skip = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            skip.append(span(node.returns))
        elif isinstance(node, ast.arg) and node.annotation:
            skip.append(span(node.annotation))
        elif isinstance(node, ast.AnnAssign):
            skip.append(span(node.annotation))
    return keep, skip


def _inside(mutation: dict, spans: list) -> bool:
    start, end = tuple(mutation["start_pos"]), tuple(mutation["end_pos"])
    return any(a <= start and end <= b for a, b in spans)


def _dump(venv: Path, session: Path) -> list:
    out = subprocess.run([str(venv / "bin/cosmic-ray"), "dump", str(session)],
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _skip(venv: Path, session: Path, job_ids: list) -> None:
    subprocess.run([str(venv / "bin/python"), "-c", _SKIP, str(session)],
                   input=json.dumps(job_ids), text=True, check=True)


def _key(item: dict) -> tuple:
    m = item["mutations"][0]
    return tuple(m["start_pos"]), m["operator_name"], m["occurrence"]


def _status(result: dict) -> str:
    if result["worker_outcome"] != "normal" or result["test_outcome"] == "incompetent":
        return "incompetent"
    if result["test_outcome"] == "killed":
        return "timeout" if result.get("output") == "timeout" else "killed"
    return "survived"


def run_module(name: str, venv: Path, workdir: Path, jobs: int, max_mutants: int,
               seed: int, deselect: tuple = ()) -> dict:
    target = TARGETS[name]
    target = Target(target.path, target.tests + tuple(
        arg for test in deselect if test.split("::")[0] in target.tests
        for arg in ("--deselect", test)), target.scope)
    roots = [workdir / f"{name}-{i}" for i in range(jobs)]
    for root in roots:
        _copy_repo(root)
    base_s = _baseline(roots[0], target.tests)
    timeout = 3.0 * base_s + 10.0
    config = workdir / f"{name}.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(target.path)}\n"
        "excluded-modules = []\n"
        f"timeout = {timeout:.1f}\n"
        f"test-command = {json.dumps(shlex.join(_test_command(target.tests)))}\n"
        "\n[cosmic-ray.distributor]\nname = \"local\"\n")
    session = workdir / f"{name}.sqlite"
    subprocess.run([str(venv / "bin/cosmic-ray"), "init", str(config), str(session)],
                   cwd=roots[0], check=True)
    items = sorted((item for item, _ in _dump(venv, session)), key=_key)
    keep, skip = _spans((REPO / target.path).read_text(), target.scope)
    eligible = [it for it in items if (not keep or _inside(it["mutations"][0], keep))
                and not _inside(it["mutations"][0], skip)]
    chosen = eligible
    if max_mutants and len(eligible) > max_mutants:
        chosen = sorted(random.Random(seed).sample(eligible, max_mutants), key=_key)
    sessions = []
    for j, root in enumerate(roots):
        share = {it["job_id"] for it in chosen[j::jobs]}
        path = root / "session.sqlite"
        shutil.copy2(session, path)
        _skip(venv, path, [it["job_id"] for it in items if it["job_id"] not in share])
        sessions.append(path)

    def execute(j):
        subprocess.run([str(venv / "bin/cosmic-ray"), "exec", str(config), str(sessions[j])],
                       cwd=roots[j], env=_env(roots[j]), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return _dump(venv, sessions[j])

    with cf.ThreadPoolExecutor(jobs) as pool:
        done = [pair for rows in pool.map(execute, range(jobs)) for pair in rows]
    results = sorted(((it, res) for it, res in done if res and res["worker_outcome"] != "skipped"),
                     key=lambda pair: _key(pair[0]))
    statuses = [_status(res) for _, res in results]
    counts = {s: statuses.count(s) for s in ("killed", "survived", "timeout", "incompetent")}
    survivors = []
    for (item, res), status in zip(results, statuses):
        if status != "survived":
            continue
        m = item["mutations"][0]
        survivors.append({"file": target.path, "line": m["start_pos"][0],
                          "col": m["start_pos"][1], "operator": m["operator_name"],
                          "occurrence": m["occurrence"], "definition": m["definition_name"],
                          "diff": res["diff"].removeprefix("--- mutation diff ---\n")})
    return {"module": target.path, "tests": list(target.tests),
            "scope": list(target.scope), "generated": len(items), "eligible": len(eligible),
            "mutants": len(results), "sampled": len(chosen) < len(eligible), "seed": seed,
            **counts, "per_mutant_timeout_s": round(timeout, 1), "survivors": survivors}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", nargs="+", default=sorted(TARGETS), choices=sorted(TARGETS))
    ap.add_argument("--max-mutants", type=int, default=40,
                    help="sample at most this many mutants per module (0: all, thousands)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1,
                    help="copies run side by side (each runs its share of the mutants)")
    ap.add_argument("--deselect", nargs="+", default=[], metavar="TEST_ID",
                    help="pytest node ids left out of the targets that run their file")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="scratch folder (default: a new temporary one, removed at the end)")
    ap.add_argument("--out", type=Path, default=REPO / "results/bench/mutation.json")
    args = ap.parse_args(argv)
    if args.workdir is not None and args.workdir.resolve().is_relative_to(REPO):
        ap.error("--workdir must be outside the repository")
    venv = tool_venv()
    tool = tool_version(venv)
    own = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="mbrl-mutation-")) if own else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for name in args.modules:
            t0 = time.monotonic()
            res = run_module(name, venv, workdir, max(1, args.jobs), args.max_mutants,
                             args.seed, tuple(args.deselect))
            res["tool"] = tool
            res["wall_s"] = round(time.monotonic() - t0, 1)
            results.append(res)
            print(f"{name}: {res['mutants']} mutants in {res['wall_s']} s", file=sys.stderr)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")  # after each module
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{tool}, seed {args.seed}")
    print("| module | mutants | killed | survived | timeout | incompetent |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        sampled = f" (sampled of {r['eligible']})" if r["sampled"] else ""
        print(f"| {r['module']} | {r['mutants']}{sampled} | {r['killed']} | {r['survived']} "
              f"| {r['timeout']} | {r['incompetent']} |")
    print(f"survivors: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
