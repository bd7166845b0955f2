"""The DMControl suite runner: TD-MPC's protocol on every run, resumable, and its table."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("dm_control")

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench import dmc_suite  # noqa: E402

TINY = ["--seed-steps", "16", "--episode-length", "16", "--model-every", "16",
        "--model-epochs", "1", "--train-every", "16", "--members", "2", "--hidden", "8",
        "--value-hidden", "8", "--reward-hidden", "8", "--horizon", "2", "--samples", "8",
        "--iterations", "1", "--policy-trajectories", "1", "--no-plot"]


def write_csv(path: Path, rows, header=("step", "return")) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]))


def test_runs_with_tdmpc_protocol_and_resumes(tmp_path, capsys):
    out = tmp_path / "suite"
    argv = ["--tasks", "cartpole-swingup", "--seeds", "1", "--steps", "32", "--eval-every",
            "32", "--report-steps", "32", "--out-dir", str(out), "--reference-dir",
            str(tmp_path / "none"), "--", *TINY]
    assert dmc_suite.main(argv) == 0
    summary = json.loads((out / "cartpole-swingup" / "seed0.json").read_text())
    assert summary["args"]["eval_episodes"] == dmc_suite.TDMPC_EVAL_EPISODES == 10
    assert summary["action_repeat"] == 8
    table = (out / "suite.md").read_text()
    assert "| cartpole-swingup | planner-mppi |" in table
    # a finished run is not run again
    spec = dmc_suite.RunSpec("cartpole-swingup", 0, 32, "planner", "mppi", 32, tuple(TINY))
    assert spec.done(out)
    assert not dmc_suite.RunSpec("cartpole-swingup", 0, 64, "planner", "mppi", 32).done(out)
    assert dmc_suite.run_suite([spec], out, tmp_path, jobs=1) == {}


def test_table_means_seeds_and_compares_with_tdmpc(tmp_path):
    out, tdmpc = tmp_path / "suite", tmp_path / "tdmpc"
    for seed, late in ((0, 800.0), (1, 900.0)):
        write_csv(out / "reacher-easy" / f"seed{seed}.csv", [(0, 10), (10000, 500), (20000, late)])
        (out / "reacher-easy" / f"seed{seed}.json").write_text("{}")
    # an unfinished run (no summary) is left out
    write_csv(out / "reacher-easy" / "seed2.csv", [(0, 10), (10000, 0), (20000, 0)])
    write_csv(out / "reacher-easy" / "mbpo" / "seed0.csv", [(0, 5), (10000, 100)])
    (out / "reacher-easy" / "mbpo" / "seed0.json").write_text("{}")
    write_csv(tdmpc / "reacher-easy.csv", [(1, 0, 0), (1, 20000, 400), (2, 0, 0),
                                           (2, 20000, 600)], header=("seed", "step", "return"))
    markdown, rows = dmc_suite.suite_table(out, tdmpc, (10000, 20000, 50000), 10000)
    default = next(r for r in rows if r["agent"] == "planner-mppi")
    assert default["seeds"] == [0, 1]
    assert default["at"][20000]["mean"] == pytest.approx(850.0)
    assert default["at"][20000]["std"] == pytest.approx(70.71, abs=0.01)
    assert default["at"][20000]["tdmpc"] == pytest.approx(500.0)
    assert not default["at"][20000]["tdmpc_interpolated"]
    assert default["at"][10000]["tdmpc"] == pytest.approx(250.0)
    assert default["at"][10000]["tdmpc_interpolated"]
    assert default["at"][50000]["mean"] is None and default["at"][50000]["tdmpc"] is None
    mbpo = next(r for r in rows if r["agent"] == "mbpo")
    assert mbpo["at"][10000]["mean"] == 100.0 and mbpo["at"][20000]["mean"] is None
    assert "850 ± 71 (2) | 500" in markdown and "~250" in markdown
    assert "| reacher-easy | mbpo | 100 (1) |" in markdown  # one seed: no spread
