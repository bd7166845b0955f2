"""Alignment on synthetic streams: interpolation, hold, staleness, resets, clock jumps."""

import numpy as np

from mbrl_ros.data.alignment import align_streams, clean_series, hold, resample
from mbrl_ros.data.bag_reader import ReadReport, Recording, RobotStreams, TimeSeries
from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig

MS = 1_000_000


def _streams(state_t, q, command_t, command, resets=(), odom=None):
    config = RobotStreamsConfig(joints=("j",), odom_topic="/odom" if odom else "")
    state = TimeSeries(np.asarray(state_t, np.int64),
                       np.stack([q, np.zeros_like(q)], axis=1).astype(float))
    cmd = TimeSeries(np.asarray(command_t, np.int64), np.asarray(command, float)[:, None])
    recording = Recording("synthetic", state, cmd, None, odom, None,
                          np.asarray(resets, np.int64), ReadReport("synthetic"))
    return RobotStreams(config, [recording], ("q/j", "qd/j"), ("j",))


def test_linear_interpolation_of_slower_state():
    t = np.arange(0, 200 * MS, 20 * MS)  # 50 Hz state, 100 Hz control
    data = align_streams(_streams(t, t / 1e9, t, np.arange(len(t))),
                         AlignmentConfig(state_tolerance_s=0.015, command_max_age_s=0.025))
    np.testing.assert_allclose(data.batch.state[:, 0], data.tick_ns / 1e9, atol=1e-7)
    np.testing.assert_allclose(data.batch.next_state[:, 0], data.tick_ns / 1e9 + 0.01,
                               atol=1e-7)
    np.testing.assert_array_equal(data.batch.action[:, 0], data.tick_ns // (20 * MS))
    assert len(data.batch) == 18 and data.report.num_episodes == 1


def test_previous_sample_mode_and_tolerance():
    series = TimeSeries(np.array([0, 10 * MS, 50 * MS]), np.array([[0.0], [1.0], [5.0]]))
    ticks = np.array([0, 5 * MS, 10 * MS, 30 * MS, 50 * MS])
    previous = AlignmentConfig(interpolation="previous", state_tolerance_s=0.015)
    values, valid = resample(series, ticks, previous)
    np.testing.assert_array_equal(valid, [True, True, True, False, True])
    np.testing.assert_array_equal(values[valid, 0], [0.0, 0.0, 1.0, 5.0])
    values, valid = resample(series, ticks, AlignmentConfig(state_tolerance_s=0.015))
    np.testing.assert_array_equal(valid, [True, True, True, False, True])
    assert values[1, 0] == 0.5


def test_zero_order_hold_and_staleness():
    series = TimeSeries(np.array([10 * MS, 20 * MS]), np.array([[1.0], [2.0]]))
    values, has, fresh = hold(series, np.array([0, 10 * MS, 19 * MS, 100 * MS]), 0, 50 * MS)
    np.testing.assert_array_equal(has, [False, True, True, True])
    np.testing.assert_array_equal(fresh, [False, True, True, False])
    np.testing.assert_array_equal(values[1:, 0], [1.0, 1.0, 2.0])


def test_stale_commands_resets_and_jumps_split_episodes():
    t = np.arange(0, 100 * MS, 10 * MS)
    q = np.arange(10, dtype=float)
    q[7:] += 100.0  # jump between ticks 6 and 7
    command_t = np.delete(t, [3, 4])  # tick 4's command is 20 ms old: stale
    data = align_streams(
        _streams(t, q, command_t, np.ones(len(command_t)), resets=[25 * MS]),
        AlignmentConfig(command_max_age_s=0.015, reset_jump_threshold=10.0))
    report = data.report
    assert report.breaks["reset_marker"] == 1 and report.breaks["reset_jump"] == 1
    assert report.dropped_ticks["stale_command"] == 1
    np.testing.assert_array_equal(data.tick_ns // (10 * MS), [0, 1, 3, 5, 7, 8])
    np.testing.assert_array_equal(data.batch.episode, [0, 0, 1, 2, 3, 3])
    short = align_streams(
        _streams(t, q, command_t, np.ones(len(command_t)), resets=[25 * MS]),
        AlignmentConfig(command_max_age_s=0.015, reset_jump_threshold=10.0,
                        min_episode_transitions=2))
    assert short.report.dropped_transitions["short_episode"] == 2
    np.testing.assert_array_equal(short.batch.episode, [0, 0, 1, 1])


def test_cleaning_counts_each_reason():
    report = align_streams.__globals__["AlignmentReport"]()
    stamps = np.array([10, 20, 20, 15, 30, 5_000, 40, 50], dtype=np.int64) * MS
    values = np.ones((8, 1))
    values[4] = np.nan
    out = clean_series(TimeSeries(stamps, values), "s", 1_000 * MS, report)
    # 5000 ms is followed by a backward jump > gap: a clock reset, earlier samples dropped
    np.testing.assert_array_equal(out.stamps_ns, [40 * MS, 50 * MS])
    assert report.dropped_samples["s/nonfinite"] == 1
    assert report.dropped_samples["s/before_clock_reset"] == 5


def test_odom_quaternion_takes_short_arc():
    t = np.array([0, 20 * MS])
    half = np.sqrt(0.5)
    odom_values = np.zeros((2, 13))
    odom_values[0, 6] = 1.0                        # identity (w = 1)
    odom_values[1, 5:7] = [-half, -half]           # 90 deg about z, stored with w < 0
    odom = TimeSeries(t, odom_values)
    data = align_streams(_streams(t, np.zeros(2), t, np.zeros(2), odom=odom),
                         AlignmentConfig(command_max_age_s=0.02))
    quaternion = data.batch.next_state[0, 2 + 3:2 + 7]  # tick at 10 ms, halfway
    np.testing.assert_allclose(np.linalg.norm(quaternion), 1.0, atol=1e-6)
    assert abs(quaternion[3]) > 0.9  # stays near identity's neighbourhood: 45 deg, w ~ 0.92
    assert data.state_names[2:4] == ("odom/px", "odom/py")


# ------------------------------------------------------------------ mutation-testing edges
# (bench/mutation.py; docs/safety_gate.md, "Mutation testing")

def _recording(name, state_t, q, command_t, resets=()):
    state = TimeSeries(np.asarray(state_t, np.int64),
                       np.stack([q, np.zeros_like(q)], axis=1).astype(float))
    cmd = TimeSeries(np.asarray(command_t, np.int64), np.ones((len(command_t), 1)))
    return Recording(name, state, cmd, None, None, None, np.asarray(resets, np.int64),
                     ReadReport(name))


def _robot(*recordings):
    return RobotStreams(RobotStreamsConfig(joints=("j",)), list(recordings), ("q/j", "qd/j"),
                        ("j",))


def test_ticks_restart_at_each_segment_after_a_state_gap():
    """Segment 1: 0..190 ms (20 ticks); a 310 ms gap; segment 2: 500..590 ms (10 ticks)."""
    t = np.concatenate([np.arange(0, 200 * MS, 10 * MS), np.arange(500 * MS, 600 * MS, 10 * MS)])
    data = align_streams(_robot(_recording("r", t, t / 1e9, t)), AlignmentConfig())
    report = data.report
    assert report.breaks["gap"] == 1 and report.num_ticks == 30
    assert sum(report.dropped_ticks.values()) == 0
    np.testing.assert_array_equal(data.tick_ns, np.concatenate([t[:19], t[20:29]]))
    np.testing.assert_array_equal(data.batch.episode, [0] * 19 + [1] * 9)


def test_a_tick_without_state_is_not_also_counted_as_a_stale_command():
    t = np.arange(0, 100 * MS, 10 * MS)
    state_t = np.delete(t, 3)            # no state sample at 30 ms: tick 3 has no state
    command_t = np.delete(t, 3)          # and its command (from 20 ms) is stale
    data = align_streams(_robot(_recording("r", state_t, state_t / 1e9, command_t)),
                         AlignmentConfig(state_tolerance_s=0.005, command_max_age_s=0.005))
    report = data.report
    assert report.dropped_ticks["no_state"] == 1
    assert report.dropped_ticks["stale_command"] == 0


def test_episode_ids_run_on_across_recordings_and_skip_empty_ones():
    t = np.arange(0, 100 * MS, 10 * MS)
    one = _recording("one", t, t / 1e9, t)                      # one episode (9 transitions)
    two = _recording("two", t, t / 1e9, t, resets=[45 * MS])    # two episodes (4 + 4)
    short = _recording("short", t[:2], t[:2] / 1e9, t[:2])      # one transition: too short
    nothing = _recording("nothing", t, np.full(len(t), np.nan), t)  # no usable state at all
    config = AlignmentConfig(min_episode_transitions=2)
    data = align_streams(_robot(one, short, nothing, two), config)
    np.testing.assert_array_equal(data.batch.episode, [0] * 9 + [1] * 4 + [2] * 4)
    np.testing.assert_array_equal(data.recording, [0] * 9 + [3] * 8)
    assert data.report.num_episodes == 3
    assert data.report.dropped_transitions["short_episode"] == 1
    assert data.report.dropped_samples["state/nonfinite"] == len(t)


def test_odom_quaternion_flip_uses_the_dot_product_of_all_four_components():
    """Identity to (0.8, 0, 0, -0.6) (x, y, z, w): the dot product is -0.6, so the short arc
    goes to the negated (-0.8, 0, 0, 0.6); halfway is (-0.4, 0, 0, 0.8) normalised."""
    t = np.array([0, 20 * MS])
    odom_values = np.zeros((2, 13))
    odom_values[0, 6] = 1.0
    odom_values[1, 3:7] = [0.8, 0.0, 0.0, -0.6]
    data = align_streams(
        _streams(t, np.zeros(2), t, np.zeros(2), odom=TimeSeries(t, odom_values)),
        AlignmentConfig(command_max_age_s=0.02))
    quaternion = data.batch.next_state[0, 2 + 3:2 + 7]
    np.testing.assert_allclose(quaternion, np.array([-0.4, 0.0, 0.0, 0.8]) / np.sqrt(0.8),
                               atol=1e-6)


def test_ticks_before_the_first_command_are_counted_as_without_command():
    t = np.arange(0, 100 * MS, 10 * MS)
    data = align_streams(_robot(_recording("r", t, t / 1e9, t[3:])), AlignmentConfig())
    assert data.report.dropped_ticks["no_command"] == 3
    assert data.report.dropped_ticks["stale_command"] == 0
    np.testing.assert_array_equal(data.tick_ns, t[3:-1])


def test_a_continuous_joint_reported_within_pi_aligns_as_if_it_accumulated():
    """A driver that wraps a continuous joint's angle to [-pi, pi) must give the same
    transitions as one that lets it accumulate: no reset jump at the wrap, no interpolation
    across it (50 Hz state, 100 Hz ticks: every other tick is interpolated)."""
    t = np.arange(0, 2000 * MS, 20 * MS)
    accumulated = 1.2 * np.arange(len(t))  # 1.2 rad per sample: ~19 turns
    wrapped = np.remainder(accumulated + np.pi, 2 * np.pi) - np.pi
    config = AlignmentConfig(state_tolerance_s=0.015, command_max_age_s=0.025,
                             reset_jump_threshold=1.5, angle_wrap=(0,))
    reference = align_streams(_streams(t, accumulated, t, np.zeros(len(t))), config)
    data = align_streams(_streams(t, wrapped, t, np.zeros(len(t))), config)
    assert data.report.breaks["reset_jump"] == 0 and data.report.num_episodes == 1
    assert len(data.batch) == len(reference.batch) == 2 * len(t) - 2
    turns = (data.batch.state[:, 0] - reference.batch.state[:, 0]) / (2 * np.pi)
    np.testing.assert_allclose(turns, np.round(turns), atol=1e-5)  # the same angles
    np.testing.assert_allclose(data.batch.next_state[:, 0] - data.batch.state[:, 0], 0.6,
                               atol=1e-5)
    # without the setting, every wrap looks like a reset of the robot
    plain = align_streams(_streams(t, wrapped, t, np.zeros(len(t))),
                          AlignmentConfig(state_tolerance_s=0.015, command_max_age_s=0.025,
                                          reset_jump_threshold=1.5))
    assert plain.report.breaks["reset_jump"] > 10
