"""The mismatch benchmark runs end to end on tiny settings: both arms, every model kind, a
JSON table per data amount and a plot; the simulated arm carries the config's mismatch."""

import json

import pytest

from bench import mismatch


def test_mismatch_bench_runs_and_reports(tmp_path):
    out, plot = tmp_path / "mismatch.json", tmp_path / "mismatch.png"
    assert mismatch.main(["--seeds", "0", "--goals", "1", "--data-seconds", "1", "2",
                          "--reach-time", "0.2", "--hold", "0.08", "--track-episodes", "1",
                          "--track-settle", "0.08", "--track-period", "0.16",
                          "--out", str(out), "--plot", str(plot)]) == 0
    summary = json.loads(out.read_text())
    assert summary["mismatch"]["actuator_lag_s"] == pytest.approx(0.02)
    assert summary["mismatch"]["payload_mass"] > 0
    for arm in mismatch.ARMS:
        table = summary["table"][arm]
        assert [row["data_seconds"] for row in table["nominal"]] == [0.0]
        for kind in ("residual", "ensemble"):
            assert [row["data_seconds"] for row in table[kind]] == [1.0, 2.0]
            for row in table[kind]:
                assert 0.0 <= row["success_min"] <= row["success_mean"] <= row["success_max"]
                assert row["tracking_rms_mean_m"] > 0.0
    assert plot.stat().st_size > 0
    combined = tmp_path / "combined.json"
    assert mismatch.main(["--combine", str(out), "--out", str(combined),
                          "--plot", str(tmp_path / "combined.png")]) == 0
    merged = json.loads(combined.read_text())
    assert merged["table"] == summary["table"]
    assert set(merged["protocol"]) == set(mismatch.ARMS)


def test_torque_controlled_variant_drops_the_servo():
    sim, planner, trainer = mismatch.torque_controlled((
        {"control_mode": "position", "position_kp": [1.0]},
        {"command_mode": "position", "servo_kp": [1.0]},
        {"command_mode": "position", "ensemble": {"relative_action": [0]}}))
    assert sim["control_mode"] == "effort" and sim["gravity_compensation"]
    assert "position_kp" not in sim and "servo_kp" not in planner
    assert planner["command_mode"] == trainer["command_mode"] == "effort"
    assert "relative_action" not in trainer["ensemble"]
