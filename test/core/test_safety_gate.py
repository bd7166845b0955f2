"""Tests for the ROS-free safety gate: every rule, the fallbacks, and a garbage-input fuzz."""

import collections
import math

import numpy as np
import pytest

from mbrl_ros.core.safety_gate import (
    CommandStatus, Fault, GateCommand, GateConfig, GateState, SafetyGate)

JOINTS = ("shoulder", "elbow")
RATE_HZ = 100.0
PERIOD_S = 1.0 / RATE_HZ
EFFORT_LIMIT = (5.0, 3.0)


def make_config(**overrides) -> GateConfig:
    settings = dict(joints=JOINTS, control_rate_hz=RATE_HZ, watchdog_timeout_s=PERIOD_S,
                    state_timeout_s=0.05, effort_limit=EFFORT_LIMIT, position_lower=(-2.0, -1.0),
                    position_upper=(2.0, 1.0), velocity_limit=(4.0, 4.0),
                    max_position_step=(0.2, 0.2), disagreement_threshold=1.0,
                    disagreement_resume=0.5, resume_ticks=3, hold_kp=(10.0, 20.0), hold_kd=2.0,
                    clamp_margin=0.1, resume_ramp_s=0.0)
    settings.update(overrides)
    return GateConfig.from_dict(settings)


def feed(gate: SafetyGate, now: float, command=(1.0, -1.0), positions=(0.0, 0.0),
         velocities=(0.0, 0.0), disagreement=0.1):
    """Give the gate fresh inputs at ``now`` and tick it."""
    gate.set_joint_state(JOINTS, positions, velocities, now)
    if command is not None:
        gate.set_command(command, now, disagreement)
    return gate.tick(now)


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("overrides, message", [
    (dict(joints=()), "joints"),
    (dict(joints=("a", "a")), "joints"),
    (dict(effort_limit=(1.0, 2.0, 3.0)), "effort_limit has 3 values"),
    (dict(effort_limit=math.inf), "effort_limit must be finite in effort mode"),
    (dict(control_mode="position", max_position_step=math.inf), "max_position_step"),
    (dict(control_mode="torque"), "control_mode"),
    (dict(plan_sampling="cubic"), "plan_sampling"),
    (dict(control_mode="velocity", fallback="damping"), "fallback"),
    (dict(disagreement_resume=2.0), "disagreement_resume"),
    (dict(resume_ticks=0), "resume_ticks"),
    (dict(watchdog_timeout_s=0.0), "watchdog_timeout_s"),
    (dict(position_lower=(3.0, 0.0)), "position_lower < position_upper"),
    (dict(hold_kp=-1.0), "hold_kp"),
    (dict(latching_faults=("bogus",)), "latching_faults"),
    (dict(effort_limit=(1.0, math.nan)), "NaN"),
    (dict(velocity_limt=1.0), "unknown safety gate settings"),
])
def test_config_rejects_bad_settings(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(**overrides)


def test_config_accepts_joint_limits_as_arrays_and_urdf_style():
    arrays = GateConfig.from_dict(dict(joints=JOINTS, joint_limits=dict(
        effort_limit=[5.0, 3.0], position_lower=[-2.0, -1.0], position_upper=[2.0, 1.0])))
    assert arrays.per_joint("effort_limit").tolist() == [5.0, 3.0]
    urdf = GateConfig.from_dict(dict(joints=JOINTS, joint_limits={
        "elbow": {"lower": -1.0, "upper": 1.0, "effort": 3.0, "velocity": 4.0},
        "shoulder": {"lower": -2.0, "upper": 2.0, "effort": 5.0}}))
    assert urdf.per_joint("effort_limit").tolist() == [5.0, 3.0]
    assert urdf.per_joint("position_lower").tolist() == [-2.0, -1.0]
    assert urdf.per_joint("velocity_limit").tolist() == [math.inf, 4.0]
    with pytest.raises(ValueError, match="no entry for joints"):
        GateConfig.from_dict(dict(joints=JOINTS, joint_limits={"elbow": {"effort": 1.0}}))
    with pytest.raises(ValueError, match="both flat and in joint_limits"):
        GateConfig.from_dict(dict(joints=JOINTS, effort_limit=1.0,
                                  joint_limits={"effort_limit": [1.0, 1.0]}))


def test_config_takes_joints_and_unset_limits_from_urdf_limits():
    urdf = {"j1": {"lower": -1.0, "upper": 1.0, "velocity": 2.0, "effort": 10.0},
            "j2": {"lower": -3.0, "upper": 3.0, "velocity": 4.0, "effort": 20.0}}
    config = GateConfig.from_dict({}, urdf_limits=urdf)
    assert config.joints == ("j1", "j2")
    assert config.per_joint("effort_limit").tolist() == [10.0, 20.0]
    config = GateConfig.from_dict({"joints": ["j2"], "effort_limit": 5.0}, urdf_limits=urdf)
    assert config.per_joint("effort_limit").tolist() == [5.0]  # explicit value wins
    assert config.per_joint("position_upper").tolist() == [3.0]
    with pytest.raises(ValueError, match="not actuated joints"):
        GateConfig.from_dict({"joints": ["j3"]}, urdf_limits=urdf)


# ------------------------------------------------------------------------------ pass / watchdog
def test_fresh_valid_command_passes_unchanged():
    gate = SafetyGate(make_config())
    out = feed(gate, 0.0)
    assert out.state == GateState.PASS and out.fault is None
    np.testing.assert_array_equal(out.command, [1.0, -1.0])
    assert out.commands_passed == 1 and out.interventions == 0


def test_no_command_yet_publishes_fallback():
    gate = SafetyGate(make_config())
    out = feed(gate, 0.0, command=None)
    assert out.state == GateState.FALLBACK and out.fault == Fault.NO_COMMAND
    assert out.command.shape == (2,) and math.isinf(out.command_age_s)


def test_watchdog_falls_back_within_two_periods_of_planner_silence_and_recovers():
    gate = SafetyGate(make_config())
    for tick in range(5):
        assert feed(gate, tick * PERIOD_S).state == GateState.PASS
    last_command_time = 4 * PERIOD_S
    fallback_tick = None
    for tick in range(5, 10):
        out = feed(gate, tick * PERIOD_S, command=None)
        if out.state == GateState.FALLBACK:
            fallback_tick = tick
            break
    assert fallback_tick is not None and out.fault == Fault.STALE_COMMAND
    assert fallback_tick * PERIOD_S - last_command_time <= 2 * PERIOD_S + 1e-9
    # Stale commands do not latch: the planner coming back resumes passing.
    assert feed(gate, 10 * PERIOD_S).state == GateState.PASS


def test_command_from_the_future_after_clock_jump_is_stale():
    gate = SafetyGate(make_config())
    feed(gate, 10.0)
    gate.set_joint_state(JOINTS, (0.0, 0.0), (0.0, 0.0), 0.0)
    out = gate.tick(0.0)  # simulation clock reset
    assert out.state == GateState.FALLBACK and out.fault == Fault.STALE_COMMAND


# ------------------------------------------------------------------------------ invalid commands
@pytest.mark.parametrize("garbage", [
    (math.nan, 1.0), (1.0, math.inf), (-math.inf, 0.0), (), (1.0,), (1.0, 2.0, 3.0),
    "not a command", None, [[1.0, 2.0], [3.0, 4.0]], (1.0, "x"),
])
def test_invalid_command_is_never_passed_and_latches_until_reset(garbage):
    gate = SafetyGate(make_config())
    feed(gate, 0.0)
    gate.set_command(garbage, PERIOD_S)
    out = feed(gate, PERIOD_S, command=None)
    assert out.state == GateState.FALLBACK and out.fault == Fault.INVALID_COMMAND
    assert out.latched and out.command.shape == (2,) and np.isfinite(out.command).all()
    # A good command alone does not clear the latch ...
    assert feed(gate, 2 * PERIOD_S).state == GateState.FALLBACK
    # ... reset does, once the inputs are good again.
    ok, message = gate.reset(2 * PERIOD_S)
    assert ok, message
    assert feed(gate, 3 * PERIOD_S).state == GateState.PASS


def test_reset_refused_while_inputs_are_bad():
    gate = SafetyGate(make_config())
    feed(gate, 0.0, command=(math.nan, 0.0))
    ok, message = gate.reset(0.0)
    assert not ok and "non-finite" in message
    assert feed(gate, PERIOD_S, command=None).state == GateState.FALLBACK


def test_invalid_command_does_not_latch_when_not_configured():
    gate = SafetyGate(make_config(latching_faults=()))
    assert feed(gate, 0.0, command=(math.nan, 0.0)).state == GateState.FALLBACK
    assert feed(gate, PERIOD_S).state == GateState.PASS


# ------------------------------------------------------------------------------ limits
def test_slightly_out_of_limits_is_clamped_far_out_falls_back():
    gate = SafetyGate(make_config())
    out = feed(gate, 0.0, command=(5.4, -3.2))  # 8 % and 6.7 % over: inside the 10 % margin
    assert out.state == GateState.CLAMPED
    np.testing.assert_allclose(out.command, [5.0, -3.0])
    assert out.interventions == 0 and out.commands_passed == 1 and out.commands_clamped == 1
    assert "effort limit" in out.reason
    out = feed(gate, PERIOD_S, command=(9.0, 0.0))
    assert out.state == GateState.FALLBACK and out.fault == Fault.OUT_OF_LIMITS
    assert out.interventions == 1
    assert feed(gate, 2 * PERIOD_S).state == GateState.PASS


def test_clamp_policy_clamps_far_out_commands():
    gate = SafetyGate(make_config(out_of_limits="clamp"))
    out = feed(gate, 0.0, command=(1e9, -1e9))
    assert out.state == GateState.CLAMPED
    np.testing.assert_allclose(out.command, [5.0, -3.0])


def test_position_mode_limits_step_and_hold():
    gate = SafetyGate(make_config(control_mode="position", velocity_limit=(100.0, 100.0)))
    assert gate.tick(0.0).command is None  # no state, nothing passed: no safe position known
    out = feed(gate, 0.0, command=(0.5, 0.1), positions=(0.4, 0.0))
    assert out.state == GateState.PASS
    out = feed(gate, PERIOD_S, command=(1.5, 0.0), positions=(0.4, 0.0))  # step 1.1 > 0.2
    assert out.state == GateState.CLAMPED and "step bound" in out.reason
    np.testing.assert_allclose(out.command, [0.6, 0.0])  # saturated at the bound
    out = feed(gate, 2 * PERIOD_S, command=(2.6, 0.0), positions=(0.4, 0.0))  # 15 % past range
    assert out.state == GateState.FALLBACK and out.fault == Fault.OUT_OF_LIMITS
    np.testing.assert_allclose(out.command, [0.4, 0.0])  # holds the captured position
    out = feed(gate, 3 * PERIOD_S, command=(2.6, 0.0), positions=(0.45, 0.0))
    np.testing.assert_allclose(out.command, [0.4, 0.0])  # still the position at entry


def test_velocity_mode_clamps_and_falls_back_to_zero_velocity():
    gate = SafetyGate(make_config(control_mode="velocity"))
    out = feed(gate, 0.0, command=(4.2, 0.0))
    assert out.state == GateState.CLAMPED and out.command[0] == 4.0
    out = feed(gate, PERIOD_S, command=(1.0, 1.0), disagreement=5.0)
    assert out.state == GateState.FALLBACK
    np.testing.assert_array_equal(out.command, [0.0, 0.0])


def test_limit_guard_stops_joints_moving_out_of_limits():
    gate = SafetyGate(make_config())
    # Elbow at 0.99 moving up at 1 rad/s: crosses the 1.0 limit within the 50 ms lookahead.
    out = feed(gate, 0.0, positions=(0.0, 0.99), velocities=(0.0, 1.0))
    assert out.state == GateState.FALLBACK and out.fault == Fault.LIMIT_GUARD
    assert "elbow" in out.reason
    # Moving back inside is fine.
    assert feed(gate, PERIOD_S, positions=(0.0, 0.99), velocities=(0.0, -1.0)).state \
        == GateState.PASS
    # Over the velocity limit and the command pushes further: fallback; braking passes.
    out = feed(gate, 2 * PERIOD_S, command=(1.0, 0.0), velocities=(4.5, 0.0))
    assert out.fault == Fault.LIMIT_GUARD
    assert feed(gate, 3 * PERIOD_S, command=(-1.0, 0.0), velocities=(4.5, 0.0)).state \
        == GateState.PASS


# ------------------------------------------------------------------------------ joint state
def test_joint_state_is_mapped_by_name_and_missing_joints_mean_unavailable():
    gate = SafetyGate(make_config())
    gate.set_command((1.0, -1.0), 0.0)
    gate.set_joint_state(["gripper", "elbow", "shoulder"], [9.0, 0.3, 0.2], [9.0, 0.0, 0.0], 0.0)
    assert gate.tick(0.0).state == GateState.PASS
    np.testing.assert_array_equal(gate._positions, [0.2, 0.3])
    gate = SafetyGate(make_config())
    gate.set_command((1.0, -1.0), 0.0)
    gate.set_joint_state(["shoulder"], [0.0], [0.0], 0.0)
    out = gate.tick(0.0)
    assert out.fault == Fault.STATE_UNAVAILABLE and "elbow" in out.reason
    gate.set_joint_state(["elbow"], [0.0], [0.0], 0.0)  # a second publisher fills in the rest
    assert gate.tick(0.0).state == GateState.PASS


@pytest.mark.parametrize("positions, velocities", [
    ([0.0, math.nan], [0.0, 0.0]), ([0.0, 0.0], []), ([0.0], [0.0]), ("junk", [0.0, 0.0])])
def test_bad_joint_state_makes_state_unavailable(positions, velocities):
    gate = SafetyGate(make_config())
    feed(gate, 0.0)
    gate.set_joint_state(JOINTS, positions, velocities, PERIOD_S)
    gate.set_command((1.0, -1.0), 0.06)
    out = gate.tick(0.06)  # the good reading at t=0 has gone stale by now
    assert out.state == GateState.FALLBACK and out.fault == Fault.STATE_UNAVAILABLE
    np.testing.assert_array_equal(out.command, [0.0, 0.0])  # hold without state: zero effort


# ------------------------------------------------------------------------------ disagreement
def test_disagreement_hysteresis():
    gate = SafetyGate(make_config())
    t = 0.0
    assert feed(gate, t, disagreement=0.9).state == GateState.PASS
    states = []
    for disagreement in (1.5, 0.8, 0.4, 0.4, 0.7, 0.4, 0.4, 0.4, 0.4):
        t += PERIOD_S
        states.append(feed(gate, t, disagreement=disagreement).state)
    fb, ok = GateState.FALLBACK, GateState.PASS
    # Enter above 1.0; 0.8 is under the threshold but not under 0.5; 0.7 restarts the count;
    # resume after three consecutive ticks below 0.5.
    assert states == [fb, fb, fb, fb, fb, fb, fb, ok, ok]
    assert gate.interventions == 1


@pytest.mark.parametrize("forged", [math.nan, -1.0, math.inf, "junk"])
def test_nan_negative_or_unreadable_disagreement_is_untrusted(forged):
    gate = SafetyGate(make_config())
    assert feed(gate, 0.0, disagreement=0.2).state == GateState.PASS
    out = feed(gate, PERIOD_S, disagreement=forged)
    assert out.fault in (Fault.DISAGREEMENT, Fault.INVALID_COMMAND)
    assert out.state == GateState.FALLBACK


def test_each_command_is_judged_by_its_own_disagreement():
    """A trusted command after an untrusted one needs the resume ticks of its own values: the
    gate never judges a command by another command's disagreement."""
    gate = SafetyGate(make_config(resume_ticks=1))
    assert feed(gate, 0.0, disagreement=5.0).fault == Fault.DISAGREEMENT
    assert feed(gate, PERIOD_S, disagreement=0.1).state == GateState.PASS


# ------------------------------------------------------------------------------ e-stop / fallback
def test_estop_latches_until_reset():
    gate = SafetyGate(make_config())
    feed(gate, 0.0)
    gate.estop()
    for tick in range(1, 4):
        out = feed(gate, tick * PERIOD_S)
        assert out.state == GateState.ESTOP and out.latched
    assert out.interventions == 1
    ok, _ = gate.reset(10.0)  # planner silent by then: refused
    assert not ok
    assert feed(gate, 10.0).state == GateState.ESTOP
    ok, message = gate.reset(10.0)
    assert ok and "e-stop" in message
    assert feed(gate, 10.0 + PERIOD_S).state == GateState.PASS


def test_hold_fallback_torque_opposes_displacement_and_velocity():
    gate = SafetyGate(make_config())
    feed(gate, 0.0, positions=(0.5, -0.2))
    gate.estop()
    out = feed(gate, PERIOD_S, positions=(0.5, -0.2))  # captures the hold position
    np.testing.assert_allclose(out.command, [0.0, 0.0])
    out = feed(gate, 2 * PERIOD_S, positions=(0.6, -0.25), velocities=(0.0, 0.0))
    np.testing.assert_allclose(out.command, [10.0 * -0.1, 20.0 * 0.05])
    out = feed(gate, 3 * PERIOD_S, positions=(0.5, -0.2), velocities=(1.0, -1.0))
    np.testing.assert_allclose(out.command, [-2.0, 2.0])
    out = feed(gate, 4 * PERIOD_S, positions=(5.0, -0.2))  # far away: clamped to the limit
    np.testing.assert_allclose(out.command, [-5.0, 0.0])


@pytest.mark.parametrize("policy, expected", [("zero_effort", [0.0, 0.0]),
                                              ("damping", [-2.0, 1.0])])
def test_other_effort_fallbacks(policy, expected):
    gate = SafetyGate(make_config(fallback=policy))
    out = feed(gate, 0.0, positions=(0.3, 0.3), velocities=(1.0, -0.5), disagreement=9.0)
    assert out.state == GateState.FALLBACK
    np.testing.assert_allclose(out.command, expected)


def test_internal_exception_gives_fallback_not_a_crash(monkeypatch):
    gate = SafetyGate(make_config())
    feed(gate, 0.0)

    def explode(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(gate, "_evaluate", explode)
    out = feed(gate, PERIOD_S)
    assert out.state == GateState.FALLBACK and out.fault == Fault.INTERNAL_ERROR
    assert "boom" in out.reason and out.latched
    np.testing.assert_array_equal(out.command, [0.0, 0.0])
    out = gate.tick(math.nan)  # unusable clock
    assert out.state == GateState.FALLBACK and out.command.shape == (2,)


# ------------------------------------------------------------------------------ fuzz
GARBAGE = [math.nan, math.inf, -math.inf, 1e300, -1e300, 0.0, 1.0, -3.0]


def random_array(rng: np.random.Generator):
    kind = rng.integers(6)
    if kind == 0:
        return rng.normal(0.0, 10.0 ** rng.integers(-2, 6), size=rng.integers(0, 5))
    if kind == 1:
        return rng.choice(GARBAGE, size=rng.integers(0, 4))
    if kind == 2:
        return rng.uniform(-1.0, 1.0, size=2)
    if kind == 3:
        return "garbage"
    if kind == 4:
        return None
    return [[rng.normal()]]


@pytest.mark.parametrize("mode", ["effort", "position", "velocity"])
def test_fuzz_outputs_are_always_finite_sized_and_within_limits(mode):
    rng = np.random.default_rng(1234)
    config = make_config(control_mode=mode, out_of_limits=str(rng.choice(["clamp", "fallback"])))
    gate = SafetyGate(config)
    lower, upper = config.per_joint("position_lower"), config.per_joint("position_upper")
    bound = config.per_joint("effort_limit" if mode == "effort" else "velocity_limit")
    states = collections.Counter()
    now = 0.0
    positions, last_sent = np.zeros(2), None
    for _ in range(3000):
        now += float(rng.choice([PERIOD_S] * 8 + [0.0, -PERIOD_S, 0.5]))
        stamp = float(rng.choice([now] * 8 + [now - 0.005, now + 1.0, math.nan]))
        positions = np.clip(positions + rng.normal(0.0, 0.02, 2), -0.9, 0.9)
        velocities = rng.normal(0.0, 1.0, 2)
        if rng.random() < 0.7:  # mostly plausible commands (some slightly out of limits)
            plausible = {"effort": rng.uniform(-1.05, 1.05, 2) * bound,
                         "velocity": rng.uniform(-1.05, 1.05, 2) * bound,
                         "position": positions + rng.uniform(-0.21, 0.21, 2)}[mode]
            last_sent = plausible if rng.random() < 0.9 else random_array(rng)
            disagreement = rng.choice(GARBAGE + [0.1] * 8) if rng.random() < 0.2 else 0.1
            status = int(rng.choice([0, 0, 0, 1, 2, 3, 4, 5, 99]))
            gate.set_command(last_sent, stamp, disagreement, status)
        if rng.random() < 0.8:
            names = list(JOINTS) if rng.random() < 0.9 else \
                list(rng.permutation(list(JOINTS) + ["other"]))[:rng.integers(0, 4)]
            if rng.random() < 0.9:
                gate.set_joint_state(names, positions, velocities, stamp)
            else:
                gate.set_joint_state(names, random_array(rng), random_array(rng), stamp)
        if rng.random() < 0.01:
            gate.estop()
        if rng.random() < 0.2:
            gate.reset(now)
        out = gate.tick(now if rng.random() < 0.999 else math.nan)
        states[out.state] += 1
        assert isinstance(out.state, GateState)
        if out.command is None:
            assert mode == "position"
            continue
        assert out.command.shape == (2,) and np.isfinite(out.command).all()
        if out.state == GateState.PASS:  # garbage is never passed
            np.testing.assert_array_equal(out.command, np.asarray(last_sent, dtype=float))
        if mode == "position":
            assert (out.command >= lower).all() and (out.command <= upper).all()
        else:
            assert (np.abs(out.command) <= bound).all()
    # The fuzz must reach every state, or it tests nothing.
    assert all(states[state] > 0 for state in GateState), states


# ------------------------------------------------------------------------------ command fields
def plan(points, times, disagreement, stamp, status=CommandStatus.PLANNED):
    return GateCommand(points=np.asarray(points, dtype=float), times=np.asarray(times, float),
                       disagreement=np.asarray(disagreement, float), status=status,
                       source_stamp=stamp)


@pytest.mark.parametrize("status", [CommandStatus.FAILED, CommandStatus.INFEASIBLE])
def test_failed_or_infeasible_plan_is_held_not_passed(status):
    gate = SafetyGate(make_config(control_mode="position"))
    feed(gate, 0.0, command=(0.1, 0.1), positions=(0.0, 0.0))
    gate.set_command(plan(np.zeros((0, 2)), [], [], PERIOD_S, status))
    gate.set_joint_state(JOINTS, (0.05, 0.05), (0.0, 0.0), PERIOD_S)
    out = gate.tick(PERIOD_S)
    assert out.state == GateState.FALLBACK and out.fault == Fault.PLANNER_FAILED
    np.testing.assert_allclose(out.command, [0.05, 0.05])  # holds where the robot is
    assert not out.latched


def test_command_age_comes_from_its_source_state_stamp():
    gate = SafetyGate(make_config())  # watchdog one period
    gate.set_joint_state(JOINTS, (0.0, 0.0), (0.0, 0.0), 1.0)
    gate.set_command((1.0, -1.0), 1.0 - 2 * PERIOD_S)  # planned from a state 2 periods old
    out = gate.tick(1.0)
    assert out.fault == Fault.STALE_COMMAND and out.command_age_s == pytest.approx(2 * PERIOD_S)
    gate.set_command((1.0, -1.0), 1.0 + 0.2)  # from the future beyond the clock tolerance
    out = gate.tick(1.0)
    assert out.fault == Fault.STALE_COMMAND and "future" in out.reason
    gate.set_command((1.0, -1.0), 1.0 + 0.01)  # within the clock offset tolerance
    assert gate.tick(1.0).state == GateState.PASS


def test_joint_states_are_judged_by_their_header_stamps():
    gate = SafetyGate(make_config())
    gate.set_command((1.0, -1.0), 5.0)
    gate.set_joint_state(JOINTS, (0.0, 0.0), (0.0, 0.0), 5.0 - 0.3)  # replayed / delayed state
    out = gate.tick(5.0)
    assert out.fault == Fault.STATE_UNAVAILABLE and "old" in out.reason
    gate.set_joint_state(JOINTS, (0.0, 0.0), (0.0, 0.0), 5.0 + 1.0)  # from the future
    out = gate.tick(5.0)
    assert out.fault == Fault.STATE_UNAVAILABLE and "future" in out.reason


@pytest.mark.parametrize("sampling", ["hold", "linear"])
def test_a_plan_is_sampled_at_the_current_time_and_never_past_its_end(sampling):
    gate = SafetyGate(make_config(watchdog_timeout_s=1.0, disagreement_threshold=1.0,
                                  plan_sampling=sampling))
    gate.set_joint_state(JOINTS, (0.0, 0.0), (0.0, 0.0), 0.0)
    gate.set_command(plan([[0.0, 0.0], [1.0, -1.0], [2.0, -2.0]], [0.0, 0.1, 0.2],
                          [0.1, 0.2, 0.3], 0.0))
    linear = sampling == "linear"
    np.testing.assert_allclose(gate.tick(0.05).command, [0.5, -0.5] if linear else [0.0, 0.0])
    gate.set_joint_state(JOINTS, (0.0, 0.0), (0.0, 0.0), 0.15)
    out = gate.tick(0.15)
    np.testing.assert_allclose(out.command, [1.5, -1.5] if linear else [1.0, -1.0])
    # linear: the larger of the bracketing points; hold: the held point's
    assert out.disagreement == pytest.approx(0.3 if linear else 0.2)
    gate.set_joint_state(JOINTS, (0.0, 0.0), (0.0, 0.0), 0.5)
    np.testing.assert_allclose(gate.tick(0.5).command, [2.0, -2.0])  # held at the last point


def test_position_target_bound_comes_from_servo_gain_and_effort_limit():
    # effort limits (5, 3) / kp (50, 10) -> steps of 0.1 and 0.3 rad, tighter than 0.2 for one
    gate = SafetyGate(make_config(control_mode="position", servo_kp=(50.0, 10.0),
                                  velocity_limit=(100.0, 100.0)))
    out = feed(gate, 0.0, command=(0.5, 0.9), positions=(0.0, 0.0))
    assert out.state == GateState.CLAMPED
    np.testing.assert_allclose(out.command, [0.1, 0.2])  # explicit 0.2 is smaller for joint 2
    with pytest.raises(ValueError, match="bound on"):
        make_config(control_mode="position", max_position_step=math.inf)


def test_successive_position_targets_are_rate_limited_and_resume_is_bumpless():
    gate = SafetyGate(make_config(control_mode="position", velocity_limit=(1.0, 1.0),
                                  max_position_step=1.0))
    out = feed(gate, 0.0, command=(0.0, 0.0), positions=(0.0, 0.0))
    assert out.state == GateState.PASS
    out = feed(gate, PERIOD_S, command=(0.5, 0.0), positions=(0.0, 0.0))
    assert out.state == GateState.CLAMPED
    np.testing.assert_allclose(out.command, [1.0 * PERIOD_S, 0.0])  # 1 rad/s for one period
    # after a fallback (hold at 0.3) the target walks from the hold, it never jumps
    feed(gate, 2 * PERIOD_S, command=(0.5, 0.0), positions=(0.3, 0.0), disagreement=9.0)
    outputs = [feed(gate, (3 + k) * PERIOD_S, command=(0.9, 0.0), positions=(0.3, 0.0))
               for k in range(5)]
    assert all(o.state != GateState.FALLBACK for o in outputs[3:])
    steps = np.diff([0.3] + [o.command[0] for o in outputs])
    assert np.all(steps <= 1.0 * PERIOD_S + 1e-12)


def test_exploration_commands_get_tighter_limits():
    gate = SafetyGate(make_config(control_mode="position", exploration_limit_fraction=0.5,
                                  velocity_limit=(100.0, 100.0)))
    gate.set_joint_state(JOINTS, (0.0, 0.0), (0.0, 0.0), 0.0)
    gate.set_command((0.15, 0.0), 0.0, 0.0, CommandStatus.EXPLORING)
    out = gate.tick(0.0)
    assert out.state == GateState.CLAMPED
    np.testing.assert_allclose(out.command, [0.1, 0.0])  # half of the 0.2 step bound
    gate.set_joint_state(JOINTS, (0.0, 0.0), (0.0, 0.0), PERIOD_S)
    gate.set_command((0.15, 0.0), PERIOD_S, 0.0, CommandStatus.PLANNED)
    assert gate.tick(PERIOD_S).state == GateState.PASS


def test_effort_hold_adds_gravity_unless_the_driver_compensates():
    gravity = lambda q: np.array([1.0, 0.5])  # noqa: E731
    gate = SafetyGate(make_config(), gravity=gravity)
    feed(gate, 0.0, positions=(0.0, 0.0))
    gate.estop()
    out = feed(gate, PERIOD_S, positions=(0.0, 0.0))
    np.testing.assert_allclose(out.command, [1.0, 0.5])
    np.testing.assert_allclose(gate.final_command(PERIOD_S), [1.0, 0.5])
    gate = SafetyGate(make_config(driver_gravity_compensation=True), gravity=gravity)
    feed(gate, 0.0, positions=(0.0, 0.0))
    gate.estop()
    np.testing.assert_allclose(feed(gate, PERIOD_S, positions=(0.0, 0.0)).command, [0.0, 0.0])


def test_effort_resume_after_fallback_ramps():
    gate = SafetyGate(make_config(resume_ramp_s=4 * PERIOD_S, resume_ticks=1))
    feed(gate, 0.0, command=(4.0, 0.0), disagreement=9.0, positions=(0.0, 0.0))
    outs = [feed(gate, k * PERIOD_S, command=(4.0, 0.0)).command[0] for k in range(1, 7)]
    assert outs[0] < 1.5 and outs[-1] == pytest.approx(4.0)
    assert np.all(np.diff(outs) >= -1e-12)


def test_final_command_holds_the_measured_position():
    gate = SafetyGate(make_config(control_mode="position"))
    feed(gate, 0.0, command=(0.1, 0.1), positions=(0.02, 0.03))
    np.testing.assert_allclose(gate.final_command(0.0), [0.02, 0.03])


def test_position_hold_moves_once_to_where_the_robot_comes_to_rest():
    """A joint stopped short of the hold by friction gets its hold moved there once it rests;
    a robot still moving keeps the hold captured at the fault."""
    gate = SafetyGate(make_config(control_mode="position", velocity_limit=(100.0, 100.0),
                                  hold_settle_s=0.1))
    feed(gate, 0.0, command=(0.1, 0.0), positions=(0.0, 0.0))
    out = feed(gate, PERIOD_S, command=(0.1, 0.0), positions=(0.02, 0.0), velocities=(0.5, 0.0),
               disagreement=9.0)
    np.testing.assert_allclose(out.command, [0.02, 0.0])
    out = feed(gate, 0.05, command=None, positions=(0.05, 0.0), velocities=(0.2, 0.0))
    np.testing.assert_allclose(out.command, [0.02, 0.0])  # still moving: the first hold
    out = feed(gate, 0.2, command=None, positions=(0.035, 0.0), velocities=(0.0, 0.0))
    np.testing.assert_allclose(out.command, [0.035, 0.0])  # at rest: held where it rests
    out = feed(gate, 0.3, command=None, positions=(0.03, 0.0), velocities=(0.0, 0.0))
    np.testing.assert_allclose(out.command, [0.035, 0.0])  # once only: no creeping hold


# ------------------------------------------------------------------ mutation-testing edges
# (docs/safety_gate.md, "Mutation testing": each test pins a boundary a mutant moved)
def test_excess_exactly_at_the_clamp_margin_is_clamped_not_a_fallback():
    gate = SafetyGate(make_config(clamp_margin=0.125))
    out = feed(gate, 0.0, command=(5.0 * 1.125, 0.0))  # 12.5 % beyond the 5 N m limit
    assert out.state == GateState.CLAMPED
    np.testing.assert_allclose(out.command, [5.0, 0.0])
    out = feed(gate, PERIOD_S, command=(5.0 * 1.25, 0.0))
    assert out.state == GateState.FALLBACK and out.fault == Fault.OUT_OF_LIMITS


def test_joint_state_at_the_edges_of_its_freshness_window_is_fresh():
    cfg = dict(max_clock_offset_s=0.25, state_timeout_s=0.25, watchdog_timeout_s=1.0)
    gate = SafetyGate(make_config(**cfg))
    gate.set_joint_state(JOINTS, (0.0, 0.0), (0.0, 0.0), 1.25)  # exactly the tolerance ahead
    gate.set_command((1.0, -1.0), 1.0, 0.1)
    assert gate.tick(1.0).state == GateState.PASS
    gate = SafetyGate(make_config(**cfg))
    gate.set_joint_state(JOINTS, (0.0, 0.0), (0.0, 0.0), 1.0)  # exactly state_timeout_s old
    gate.set_command((1.0, -1.0), 1.25, 0.1)
    assert gate.tick(1.25).state == GateState.PASS
    gate.set_command((1.0, -1.0), 1.5, 0.1)
    assert gate.tick(1.5).state == GateState.FALLBACK  # 0.5 s old: stale


def test_a_gap_in_the_output_stream_releases_at_most_two_periods_of_rate():
    gate = SafetyGate(make_config(control_mode="position", velocity_limit=(1.0, 1.0),
                                  max_position_step=1.0, watchdog_timeout_s=1.0,
                                  state_timeout_s=1.0))
    feed(gate, 0.0, command=(0.0, 0.0), positions=(0.0, 0.0))
    out = feed(gate, 0.5, command=(0.5, 0.0), positions=(0.0, 0.0))  # 50 periods later
    assert out.state == GateState.CLAMPED
    np.testing.assert_allclose(out.command, [2 * 1.0 * PERIOD_S, 0.0])


def test_last_line_replaces_a_non_finite_output_by_the_hold():
    gate = SafetyGate(make_config(control_mode="position", max_position_step=1.0))
    feed(gate, 0.0, command=(0.3, 0.0), positions=(0.3, 0.0))
    out = gate._bounded(np.array([np.nan, 0.0]))
    assert out is not None and np.all(np.isfinite(out))
    np.testing.assert_allclose(out, [0.3, 0.0])
    np.testing.assert_allclose(gate._bounded(np.array([9.0, -9.0])), [2.0, -1.0])


def test_damping_fallback_does_not_pull_toward_the_hold():
    gate = SafetyGate(make_config(fallback="damping"))
    feed(gate, 0.0, positions=(0.0, 0.0))
    gate.estop()
    feed(gate, PERIOD_S, positions=(0.0, 0.0))  # the hold is taken here
    out = feed(gate, 2 * PERIOD_S, positions=(0.5, -0.5), velocities=(1.0, 0.0))
    np.testing.assert_allclose(out.command, [-2.0, 0.0])  # -kd * velocity only


def test_a_joint_the_gate_does_not_know_never_overwrites_the_others():
    gate = SafetyGate(make_config(control_mode="position"))
    gate.set_joint_state(("shoulder", "gripper", "elbow", "wrist"), (0.02, 9.0, 0.03, -9.0),
                         (0.0, 0.0, 0.0, 0.0), 0.0)
    np.testing.assert_allclose(gate.final_command(0.0), [0.02, 0.03])


def test_a_non_finite_command_names_the_joints_not_the_points():
    from mbrl_ros.core.safety_gate import _malformed

    command = plan([[1.0, 2.0], [np.nan, 2.0], [1.0, 2.0]], [0.0, 0.01, 0.02], [0.1] * 3, 0.0)
    assert _malformed(command, 2) == "non-finite command for joints [0]"


def test_position_step_bound_uses_only_a_positive_gain_and_a_finite_effort_limit():
    from mbrl_ros.core.command_limits import position_step_bound

    with np.errstate(divide="ignore", invalid="ignore"):
        bound = position_step_bound(effort_limit=(5.0, math.inf, 3.0, 2.0, 0.0),
                                    servo_kp=(50.0, 10.0, 0.0, 0.5, 0.0), explicit=0.2)
    np.testing.assert_array_equal(bound, [0.1, 0.2, 0.2, 0.2, 0.2])
    bound = position_step_bound(effort_limit=(5.0, math.inf, 3.0, 2.0),
                                servo_kp=(50.0, 10.0, 0.0, 0.5))
    np.testing.assert_array_equal(bound, [0.1, math.inf, math.inf, 4.0])


def test_rate_limit_is_symmetric_and_a_negative_period_moves_nothing():
    from mbrl_ros.core.command_limits import rate_limited

    previous = np.array([0.5, 0.5, 0.5])
    np.testing.assert_allclose(rate_limited(np.array([-1.0, 0.52, 2.0]), previous,
                                            np.array([1.0, 1.0, 1.0]), 0.1), [0.4, 0.52, 0.6])
    np.testing.assert_array_equal(rate_limited(np.array([-1.0, 0.52, 2.0]), previous,
                                               np.array([1.0, 1.0, 1.0]), -0.1), previous)


def test_exploration_lead_is_headroom_times_fraction_times_the_step_bound():
    from mbrl_ros.core.command_limits import exploration_lead

    np.testing.assert_allclose(exploration_lead(5.0, 50.0), 0.9 * 0.5 * 0.1)
    np.testing.assert_allclose(exploration_lead((5.0, 3.0), (50.0, 10.0), fraction=0.25),
                               [0.9 * 0.25 * 0.1, 0.9 * 0.25 * 0.3])
