"""Robot matrix: the whole pipeline on real robots' URDFs, each with a generated config.

For every robot: fetch its URDF (the ``example-robot-data`` package, downloaded once into a
cache), generate its parameters file with ``mbrl-ros robot-config`` (no hand edits), then check

* **load**: MuJoCo and pinocchio build it with the same joints in the same order;
* **dynamics agreement**: the joint-space mass matrices of MuJoCo and pinocchio at random
  configurations (joints matched by name; relative Frobenius error);
* **stability**: the simulator holding its home pose for a few seconds stays finite and still;
* **task**: arms reach random goals with the residual model after a minute of data
  (``bench.arm_reach``); legged robots stand under pushes scaled to their weight, against the
  scripted stand (``bench.quadruped_stand``).

and write the table into ``docs/robots.md`` (between the robot-matrix markers)::

    python -m bench.robot_matrix                    # panda, ur5, go2, solo12
    python -m bench.robot_matrix --robots a1 z1 --quick
    python -m bench.robot_matrix --urdf mybot=/path/to/mybot.urdf --package-path /path/ws/src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

import mujoco
import numpy as np
import pinocchio as pin

from bench import arm_reach, quadruped_stand
from mbrl_ros.robots.config_generator import RobotConfigRequest, generate
from mbrl_ros.robots.mujoco_builder import BuildOptions, build_mujoco_model
from mbrl_ros.robots.robot_model import RobotModel

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mbrl_ros"
PACKAGE = "example-robot-data"
PREFIX = "cmeel.prefix"
ROBOTS = "share/example-robot-data/robots"
KNOWN = {
    "panda": "panda_description/urdf/panda.urdf",
    "ur5": "ur_description/urdf/ur5_robot.urdf",
    "go2": "go2_description/urdf/go2.urdf",
    "solo12": "solo_description/robots/solo12.urdf",
    "go1": "go1_description/urdf/go1.urdf",
    "a1": "a1_description/urdf/a1.urdf",
    "anymal": "anymal_c_simple_description/urdf/anymal.urdf",
    "z1": "z1_description/urdf/z1.urdf",
    "ur3": "ur_description/urdf/ur3_robot.urdf",
}
"""Robot name -> URDF inside example-robot-data's robots folder."""
DEFAULT_ROBOTS = ("panda", "ur5", "go2", "solo12")
MASS_SAMPLES = 20
"""Random configurations of the mass-matrix comparison."""
HOLD_SECONDS = 3.0
"""Simulated seconds of the stability check."""
MARK_BEGIN, MARK_END = "<!-- robot-matrix:begin -->", "<!-- robot-matrix:end -->"


def fetch_example_robot_data(cache: Path = CACHE) -> Path:
    """The unpacked example-robot-data prefix (``.../cmeel.prefix``), downloaded once."""
    prefix = cache / PACKAGE / PREFIX
    if (prefix / ROBOTS).is_dir():
        return prefix
    download = cache / PACKAGE / "download"
    download.mkdir(parents=True, exist_ok=True)
    print(f"downloading {PACKAGE} into {download} (about 130 MB, once)", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                    "-d", str(download), PACKAGE], check=True)
    wheel = next(download.glob("example_robot_data-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(cache / PACKAGE)
    return prefix


def mass_matrix_error(urdf: str, package_paths: List[str], seed: int) -> float:
    """Largest relative difference of MuJoCo's and pinocchio's joint-space mass matrices."""
    model, info = build_mujoco_model(urdf, BuildOptions(search_paths=tuple(package_paths)))
    robot = RobotModel(info.urdf, floating_base=info.floating_base, ee_frame=None)
    if tuple(robot.joint_names) != tuple(info.joint_names):
        raise ValueError(f"joint order differs: MuJoCo {info.joint_names}, "
                         f"pinocchio {robot.joint_names}")
    data = mujoco.MjData(model)
    dofs = np.array([model.joint(j).dofadr[0] for j in info.joint_names])
    qpos = np.array([model.joint(j).qposadr[0] for j in info.joint_names])
    rng = np.random.default_rng(seed)
    lower = np.where(np.isfinite(robot.position_lower), robot.position_lower, -np.pi)
    upper = np.where(np.isfinite(robot.position_upper), robot.position_upper, np.pi)
    worst = 0.0
    for _ in range(MASS_SAMPLES):
        q = rng.uniform(lower, upper)
        data.qpos[:] = model.qpos0
        data.qpos[qpos] = q
        mujoco.mj_forward(model, data)
        full = np.zeros((model.nv, model.nv))
        mujoco.mj_fullM(model, data, full)
        mj = full[np.ix_(dofs, dofs)] - np.diag(model.dof_armature[dofs])
        configuration = robot.full_configuration(q)
        pm = pin.crba(robot.model, robot.data, configuration)
        pm = np.triu(pm) + np.triu(pm, 1).T
        pin_joint = robot.v_indices
        pm = pm[np.ix_(pin_joint, pin_joint)] - np.diag(robot.model.armature[pin_joint])
        worst = max(worst, float(np.linalg.norm(mj - pm) / np.linalg.norm(pm)))
    return worst


def hold_check(setup, seconds: float = HOLD_SECONDS) -> Dict[str, float]:
    """The simulator commanded to hold its home pose: finite, drift and speed at the end."""
    sim = setup.simulator() if isinstance(setup, arm_reach.ArmSetup) else \
        setup.simulator(setup.seed, pushes=False)
    home, _, _ = sim.joint_state()
    sim.set_command(home)
    sim.step(int(round(seconds / sim.config.control_period)))
    q, qd, _ = sim.joint_state()
    return dict(finite=bool(np.all(np.isfinite(q))), drift_rad=float(np.max(np.abs(q - home))),
                speed=float(np.max(np.abs(qd))))


def run_robot(name: str, urdf: str, package_paths: List[str], out_dir: Path,
              args: argparse.Namespace) -> Dict[str, object]:
    """Every check of one robot; failures are recorded, not raised."""
    row: Dict[str, object] = dict(robot=name, urdf=urdf)
    start = time.monotonic()
    try:
        generated = generate(RobotConfigRequest(urdf=urdf, package_paths=tuple(package_paths)))
        config_path = out_dir / f"{name}.yaml"
        config_path.write_text(generated.to_yaml())
        row.update(kind=generated.kind, config=str(config_path), decisions=generated.decisions)
        row["mass_matrix_error"] = mass_matrix_error(urdf, package_paths, args.seed)
        if generated.kind == "arm":
            setup = arm_reach.ArmSetup(config_path, urdf, args.seed, package_paths)
            row["hold"] = hold_check(setup)
            row["joints"] = setup.robot.num_joints
            result = out_dir / f"{name}_reach.json"
            arm_reach.main(["--config", str(config_path), "--urdf", urdf,
                            *sum((["--package-path", p] for p in package_paths), []),
                            "--data-seconds", str(args.data_seconds), "--goals",
                            str(args.goals), "--kinds", "residual", "--seed", str(args.seed),
                            "--out", str(result)])
            reach = json.loads(result.read_text())["kinds"]["residual"]
            row["task"] = dict(success_rate=reach["success_rate"], goals=len(reach["goals"]),
                               median_final_cm=100 * float(np.median(
                                   [g["final_distance_m"] for g in reach["goals"]])))
        else:
            setup = quadruped_stand.StandSetup(config_path, urdf, args.seed, package_paths)
            row["hold"] = hold_check(setup)
            row["joints"] = setup.robot.num_joints
            result = out_dir / f"{name}_stand.json"
            quadruped_stand.main(["--config", str(config_path), "--urdf", urdf,
                                  *sum((["--package-path", p] for p in package_paths), []),
                                  "--explore-seconds", str(args.explore_seconds),
                                  "--trials", str(args.trials), "--seed", str(args.seed),
                                  "--out", str(result)])
            stand = json.loads(result.read_text())
            row["task"] = dict(success_rate=stand["mpc"]["success_rate"],
                               scripted_rate=stand["ramp_baseline"]["success_rate"],
                               trials=args.trials, push_force_n=stand["push"]["force_n"])
    except Exception as error:  # noqa: BLE001 - a robot that fails is a row of the table
        row["error"] = f"{type(error).__name__}: {error}"
        print(f"{name}: {row['error']}", flush=True)
    row["wall_s"] = time.monotonic() - start
    return row


def markdown(rows: List[Dict[str, object]], command: str) -> str:
    """The table for docs/robots.md."""
    lines = [MARK_BEGIN, "", f"Produced by `{command}` (seed in the command; simulated time, "
             "so the figures do not depend on the machine's load).", "",
             "| robot | kind | joints | MuJoCo = pinocchio joints | mass matrix rel. error | "
             "holds home (drift) | task |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row and "task" not in row:
            lines.append(f"| {row['robot']} | {row.get('kind', '?')} | | | | | "
                         f"**failed**: {row['error']} |")
            continue
        hold = row.get("hold", {})
        task = row.get("task", {})
        if row.get("kind") == "arm":
            text = (f"reached {100 * task['success_rate']:.0f} % of {task['goals']} goals "
                    f"within 2 cm (median final {task['median_final_cm']:.1f} cm)")
        else:
            text = (f"stands in {100 * task['success_rate']:.0f} % of {task['trials']} trials, "
                    f"scripted stand {100 * task['scripted_rate']:.0f} % "
                    f"(pushes {task['push_force_n']} N)")
        lines.append(f"| {row['robot']} | {row['kind']} | {row.get('joints', '')} | yes | "
                     f"{row['mass_matrix_error']:.1e} | "
                     f"{'yes' if hold.get('finite') else 'no'} ({hold.get('drift_rad', 0):.3f} "
                     f"rad) | {text} |")
    lines += ["", MARK_END]
    return "\n".join(lines)


def write_docs(table: str, docs: Path) -> None:
    """Replace the table between the markers of ``docs`` (append it when absent)."""
    text = docs.read_text()
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + table + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Robot matrix\n\n" + table + "\n"
    docs.write_text(text)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", nargs="*", default=list(DEFAULT_ROBOTS),
                        help=f"robots of example-robot-data: {', '.join(KNOWN)}")
    parser.add_argument("--urdf", action="append", default=[], metavar="NAME=URDF",
                        help="another robot's URDF (repeatable)")
    parser.add_argument("--package-path", action="append", default=[], metavar="DIR")
    parser.add_argument("--data-seconds", type=float, default=60.0)
    parser.add_argument("--goals", type=int, default=20)
    parser.add_argument("--explore-seconds", type=float, default=120.0)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 20 s of data, 3 goals, 60 s exploration, 3 trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "robot_matrix"))
    parser.add_argument("--docs", default=str(REPO / "docs" / "robots.md"),
                        help="write the table here ('' for nowhere)")
    args = parser.parse_args(argv)
    if args.quick:
        args.data_seconds, args.goals, args.explore_seconds, args.trials = 20.0, 3, 60.0, 3
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    robots: Dict[str, str] = {}
    package_paths = list(args.package_path)
    if args.robots:
        prefix = fetch_example_robot_data()
        package_paths.append(str(prefix / "share"))
        unknown = [r for r in args.robots if r not in KNOWN]
        if unknown:
            parser.error(f"unknown robots {unknown}; known: {sorted(KNOWN)}")
        robots.update({r: str(prefix / ROBOTS / KNOWN[r]) for r in args.robots})
    for item in args.urdf:
        name, _, path = item.partition("=")
        robots[name] = path
    rows = []
    for name, urdf in robots.items():
        print(f"== {name}: {urdf}", flush=True)
        rows.append(run_robot(name, urdf, package_paths, out_dir, args))
        (out_dir / "matrix.json").write_text(json.dumps(rows, indent=1))
    given = sys.argv[1:] if argv is None else argv
    command = "python -m bench.robot_matrix " + " ".join(given)
    table = markdown(rows, command.strip())
    print(table)
    if args.docs:
        write_docs(table, Path(args.docs))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
