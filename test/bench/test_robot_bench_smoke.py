"""The robot benchmarks run end to end on tiny settings and write their JSON results."""

import json

from bench import arm_reach, quadruped_stand


def test_arm_reach_runs_and_reports(tmp_path):
    out = tmp_path / "arm.json"
    assert arm_reach.main(["--data-seconds", "2", "--goals", "1", "--goal-timeout", "0.4",
                           "--kinds", "nominal", "residual", "--command-delay", "0.01",
                           "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["transitions"] == 50 and summary["command_delay_s"] == 0.01
    for kind in ("nominal", "residual"):
        goals = summary["kinds"][kind]["goals"]
        assert len(goals) == 1 and goals[0]["closest_m"] <= goals[0]["final_distance_m"] + 1e-9


def test_quadruped_stand_runs_and_reports(tmp_path):
    out = tmp_path / "quadruped.json"
    assert quadruped_stand.main(["--explore-seconds", "2", "--trials", "1",
                                 "--trial-seconds", "1", "--window", "0.5",
                                 "--seeds", "0", "1", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["transitions"] == 100
    assert [run["seed"] for run in summary["runs"]] == summary["summary"]["seeds"] == [0, 1]
    for run in summary["runs"]:
        assert run["transitions"] == 50 and run["exploration_falls"] >= 0
        assert len(run["mpc"]["trials"]) == len(run["ramp_baseline"]["trials"]) == 1
    table = summary["summary"]
    assert len(table["mpc_successes"]) == len(table["ramp_successes"]) == 2
    assert table["mpc"]["min"] <= table["mpc"]["mean"] <= table["mpc"]["max"] <= 1
    assert len(summary["mpc"]["trials"]) == len(summary["ramp_baseline"]["trials"]) == 2
