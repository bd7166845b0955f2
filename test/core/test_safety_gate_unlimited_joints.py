"""The safety gate with a joint that has no position limits (a URDF continuous joint)."""

import math

import numpy as np
import pytest

from mbrl_ros.core.safety_gate import GateConfig, GateState, SafetyGate

JOINTS = ("shoulder", "wheel")
RATE_HZ = 100.0
PERIOD_S = 1.0 / RATE_HZ


def make_config(**overrides) -> GateConfig:
    settings = dict(joints=JOINTS, control_rate_hz=RATE_HZ, watchdog_timeout_s=PERIOD_S,
                    state_timeout_s=0.05, effort_limit=(5.0, 3.0),
                    position_lower=(-2.0, -math.inf), position_upper=(2.0, math.inf),
                    velocity_limit=(100.0, 100.0), max_position_step=(0.2, 0.2),
                    clamp_margin=0.1, resume_ramp_s=0.0, control_mode="position")
    settings.update(overrides)
    return GateConfig.from_dict(settings)


def test_position_mode_accepts_a_joint_without_position_limits():
    make_config()
    with pytest.raises(ValueError, match="position_upper must be finite in position mode"):
        make_config(position_upper=(2.0, math.inf), position_lower=(-2.0, 0.0))


def test_unlimited_joint_is_bounded_by_the_step_alone_and_never_out_of_range():
    gate = SafetyGate(make_config())
    gate.set_joint_state(JOINTS, (0.0, 7.0), (0.0, 0.0), 0.0)
    gate.set_command((0.1, 7.1), 0.0, 0.1)
    out = gate.tick(0.0)
    assert out.state == GateState.PASS
    np.testing.assert_allclose(out.command, [0.1, 7.1])
    now = PERIOD_S
    gate.set_joint_state(JOINTS, (0.0, 7.0), (0.0, 0.0), now)
    gate.set_command((0.1, 40.0), now, 0.1)  # far beyond a turn: clamped to the step bound
    out = gate.tick(now)
    assert out.state == GateState.CLAMPED and "step bound" in out.reason
    assert "nan" not in out.reason  # the range excess of an unlimited joint is 0, not NaN
    np.testing.assert_allclose(out.command, [0.1, 7.2])
