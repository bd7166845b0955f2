"""Mutation testing of the safety-critical modules: how many small faults their own fast unit
tests catch (docs/safety_gate.md, "Mutation testing"). Not part of ``make test``.

    python -m bench.mutation [--modules safety_gate command_limits checkpoint]
                             [--max-mutants 0] [--jobs 2] [--out results/bench/mutation.json]

A small ``ast``-based driver (no third-party tool): each mutant is one change to the module's
source -- an arithmetic operator swap (``+``/``-``, ``*``/``/``, ...), a comparison flip
(``<``/``<=``, ``==``/``!=``, ``is``/``is not``, ...), ``and``/``or``, a dropped ``not``, a
numeric or boolean constant changed, an ``if`` condition forced to ``False`` (the check is
skipped), or ``return <value>`` turned into ``return None``. Each mutant is written into a copy
of the repository under ``--workdir`` (default /tmp/mutation; the work tree is never touched)
and only that module's unit tests run against it (``pytest -x``, with a per-mutant timeout).
A mutant is *killed* when the tests fail, *survived* when they pass, *timeout* when they run
past the timeout. ``--max-mutants N`` samples N mutants per module (fixed seed) and says so.
The surviving mutants (file, line, diff) go to the JSON file.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures as cf
import copy
import difflib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TARGETS = {
    "safety_gate": ("mbrl_ros/core/safety_gate.py", ["test/core/test_safety_gate.py"]),
    "command_limits": ("mbrl_ros/core/command_limits.py",
                       ["test/core/test_safety_gate.py", "test/core/test_exploration.py"]),
    "checkpoint": ("mbrl_ros/core/checkpoint.py", ["test/core/test_checkpoint.py"]),
}

_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
               ast.FloorDiv: ast.Mult, ast.Mod: ast.Mult, ast.Pow: ast.Mult,
               ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
             ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
             ast.In: ast.NotIn, ast.NotIn: ast.In}


def _docstring_ids(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _skip_ids(tree: ast.AST) -> set[int]:
    """Nodes not to mutate: docstrings, annotations, f-string internals."""
    skip = _docstring_ids(tree)
    for node in ast.walk(tree):
        subtrees = []
        if isinstance(node, ast.JoinedStr):
            subtrees.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            subtrees.append(node.returns)
        if isinstance(node, ast.arg) and node.annotation:
            subtrees.append(node.annotation)
        if isinstance(node, ast.AnnAssign):
            subtrees.append(node.annotation)
        for sub in subtrees:
            skip.update(id(n) for n in ast.walk(sub))
    return skip


def _mutations(node: ast.AST):
    """(kind, replacement source) for each mutation of ``node``; the replacement replaces the
    node's source segment (expressions are parenthesised so precedence is kept)."""
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP:
        new = copy.deepcopy(node)
        new.op = _BINOP_SWAP[type(node.op)]()
        yield "binop", f"({ast.unparse(new)})"
    elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAP:
        new = copy.deepcopy(node)
        new.op = _BINOP_SWAP[type(node.op)]()
        yield "augassign", ast.unparse(new)
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _CMP_SWAP:
                new = copy.deepcopy(node)
                new.ops[i] = _CMP_SWAP[type(op)]()
                yield "compare", f"({ast.unparse(new)})"
    elif isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield "boolop", f"({ast.unparse(new)})"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "not", f"({ast.unparse(node.operand)})"
    elif isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool):
            yield "constant", f"({not v})"
        elif isinstance(v, int):
            yield "constant", f"({v + 1})"
        elif isinstance(v, float):
            yield "constant", f"({v * 2.0 if v != 0.0 else 1.0!r})"
    elif isinstance(node, ast.If):
        yield "if-skip", "(False)"
    elif isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None):
        yield "return", "return None"


def generate(source: str) -> list[dict]:
    """All mutants of ``source``: dicts with kind, line, and the mutated source."""
    tree = ast.parse(source)
    skip = _skip_ids(tree)
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln.encode()))
    raw = source.encode()
    mutants = []
    for node in ast.walk(tree):
        if id(node) in skip or not hasattr(node, "end_lineno"):
            continue
        target = node.test if isinstance(node, ast.If) else node
        start = offsets[target.lineno - 1] + target.col_offset
        end = offsets[target.end_lineno - 1] + target.end_col_offset
        for kind, repl in _mutations(node):
            mutated = (raw[:start] + repl.encode() + raw[end:]).decode()
            if mutated == source:
                continue
            try:
                ast.parse(mutated)
            except SyntaxError:
                continue
            mutants.append({"kind": kind, "line": target.lineno, "source": mutated})
    mutants.sort(key=lambda m: (m["line"], m["kind"]))
    return mutants


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
    env = dict(os.environ)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
             if p and Path(p).resolve() != REPO]
    env["PYTHONPATH"] = os.pathsep.join([str(copy_root), str(copy_root / "test")] + parts)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a same-size mutant must never reuse a stale .pyc
    return env


def _pytest(copy_root: Path, tests: list[str], timeout: float) -> tuple[str, float]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           "-o", "addopts=", *tests]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=copy_root, env=_env(copy_root), timeout=timeout,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0
    return ("survived" if proc.returncode == 0 else "killed"), time.monotonic() - t0


def _diff(path: str, before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True),
                                        after.splitlines(keepends=True),
                                        f"a/{path}", f"b/{path}", n=0))


def run_module(name: str, workdir: Path, jobs: int, max_mutants: int, seed: int) -> dict:
    path, tests = TARGETS[name]
    original = (REPO / path).read_text()
    mutants = generate(original)
    total = len(mutants)
    if max_mutants and total > max_mutants:
        mutants = sorted(random.Random(seed).sample(mutants, max_mutants),
                         key=lambda m: (m["line"], m["kind"]))
    roots = [workdir / f"{name}-{i}" for i in range(jobs)]
    for root in roots:
        _copy_repo(root)
    baseline, base_s = _pytest(roots[0], tests, timeout=600)
    if baseline != "survived":
        raise SystemExit(f"{name}: the unit tests fail on the unmutated copy ({tests})")
    timeout = 3.0 * base_s + 10.0
    free = list(roots)

    def one(m):
        root = free.pop()
        try:
            (root / path).write_text(m["source"])
            status, _ = _pytest(root, tests, timeout)
        finally:
            (root / path).write_text(original)
            free.append(root)
        return status

    with cf.ThreadPoolExecutor(jobs) as pool:
        statuses = list(pool.map(one, mutants))
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
    counts = {s: statuses.count(s) for s in ("killed", "survived", "timeout")}
    survivors = [{"file": path, "line": m["line"], "kind": m["kind"],
                  "diff": _diff(path, original, m["source"])}
                 for m, s in zip(mutants, statuses) if s == "survived"]
    return {"module": path, "tests": tests, "generated": total, "mutants": len(mutants),
            "sampled": len(mutants) < total, **counts, "per_mutant_timeout_s": round(timeout, 1),
            "survivors": survivors}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", nargs="+", default=["safety_gate", "command_limits"],
                    choices=sorted(TARGETS))
    ap.add_argument("--max-mutants", type=int, default=0,
                    help="sample at most this many mutants per module (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/mutation"))
    ap.add_argument("--out", type=Path, default=REPO / "results/bench/mutation.json")
    args = ap.parse_args(argv)
    if args.workdir.resolve().is_relative_to(REPO):
        ap.error("--workdir must be outside the repository")
    results = []
    for name in args.modules:
        t0 = time.monotonic()
        res = run_module(name, args.workdir, args.jobs, args.max_mutants, args.seed)
        res["wall_s"] = round(time.monotonic() - t0, 1)
        results.append(res)
        print(f"{name}: {res['mutants']} mutants in {res['wall_s']} s", file=sys.stderr)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")  # after each module
    print("| module | mutants | killed | survived | timeout |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        sampled = f" (sampled of {r['generated']})" if r["sampled"] else ""
        print(f"| {r['module']} | {r['mutants']}{sampled} | {r['killed']} | {r['survived']} "
              f"| {r['timeout']} |")
    print(f"survivors: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
