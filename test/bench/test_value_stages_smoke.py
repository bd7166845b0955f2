"""The value-stages benchmark runs end to end on tiny settings: both robots, every stage at
every cell of the compute grid, the derived compute ratios and a plot."""

import json

import pytest

from bench import value_stages


@pytest.mark.slow
def test_value_stages_bench_runs_every_stage_and_cell(tmp_path):
    out, plot = tmp_path / "value_stages.json", tmp_path / "value_stages.png"
    assert value_stages.main([
        "--robots", "arm", "quadruped", "--seeds", "0", "--data-seconds", "2", "2",
        "--value-steps", "4", "--horizons", "1", "0.3", "--samples", "0.25",
        "--goals", "1", "--reach-time", "0.12", "--hold", "0.04",
        "--trials", "1", "--trial-seconds", "0.2", "--window", "0.08",
        "--out", str(out), "--plot", str(plot)]) == 0
    summary = json.loads(out.read_text())
    assert summary["value_training"]["horizon_s"] > 0  # the trainer's settings
    for robot in value_stages.ROBOTS:
        result = summary["robots"][robot]
        cells = [(c["horizon"], c["samples"], c["iterations"]) for c in result["cells"]]
        default = result["default_cell"]
        assert (default["horizon"], default["samples"], default["iterations"]) in cells
        assert len(cells) == 3  # the default setting, then H 100 % and 30 % at 25 % samples
        table = result["table"]
        assert set(table) == set(value_stages.STAGES) | {"policy"}
        for stage in value_stages.STAGES:
            rows = table[stage]
            assert [(r["cell"]["horizon"], r["cell"]["samples"], r["cell"]["iterations"])
                    for r in rows] == cells
            for row in rows:
                assert row["compute"] == row["cell"]["horizon"] * row["cell"]["samples"] \
                    * row["cell"]["iterations"]
                assert 0.0 <= row["success"]["min"] <= row["success"]["mean"] \
                    <= row["success"]["max"] <= 1.0
                assert row["step_ms"]["mean"] > 0.0
        assert [r["compute"] for r in table["policy"]] == [0]
        assert set(result["derived"]["stages"]) == set(table)
        assert result["runs"][0]["value_fit"]["steps"] == 4
        assert 0.0 < result["runs"][0]["value_fit"]["config"]["discount"] < 1.0
    assert plot.stat().st_size > 0
    combined = tmp_path / "combined.json"
    assert value_stages.main(["--combine", str(out), "--out", str(combined),
                              "--plot", str(tmp_path / "combined.png")]) == 0
    assert json.loads(combined.read_text())["robots"].keys() == summary["robots"].keys()
