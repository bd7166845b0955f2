"""The safety gate's output schedule: one output per control period, in step with the robot."""

import numpy as np
import pytest

from mbrl_ros.core.tick_schedule import TickSchedule

PERIOD = 0.002


def outputs(arrivals, period=PERIOD):
    """Times at which joint states arriving at ``arrivals`` are answered."""
    schedule, sent = TickSchedule(period), []
    for now in arrivals:
        if schedule.due(now):
            schedule.sent(now)
            sent.append(now)
    return np.array(sent)


def test_every_jittered_joint_state_at_the_control_rate_is_answered():
    rng = np.random.default_rng(0)
    arrivals = np.arange(2000) * PERIOD + rng.uniform(-0.24, 0.24, 2000) * PERIOD
    assert len(outputs(arrivals)) == 2000


def test_faster_joint_states_are_answered_at_the_control_rate():
    arrivals = np.arange(10000) * PERIOD / 10  # 10x the control rate
    intervals = np.diff(outputs(arrivals))
    assert len(intervals) == pytest.approx(1000, abs=2)
    # after the first (half a period early is allowed), one per period, to the arrival grid
    assert np.allclose(intervals[1:], PERIOD, atol=0.1 * PERIOD + 1e-12)


def test_a_late_output_restarts_the_schedule_without_a_burst():
    schedule = TickSchedule(PERIOD)
    schedule.sent(0.0)
    late = 3.2 * PERIOD  # ticks missed
    assert schedule.due(late)
    schedule.sent(late)
    assert not schedule.due(late + 0.4 * PERIOD)
    assert schedule.due(late + 0.51 * PERIOD)
    assert schedule.next_due == pytest.approx(late + PERIOD)


def test_a_jump_back_in_time_restarts_the_schedule():
    schedule = TickSchedule(PERIOD)
    schedule.sent(10.0)
    assert schedule.due(1.0)  # e.g. a restarted simulation's clock
    schedule.sent(1.0)
    assert schedule.next_due == pytest.approx(1.0 + PERIOD)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        TickSchedule(0.0)
    with pytest.raises(ValueError):
        TickSchedule(PERIOD, early_fraction=1.0)
