"""Message conversions: time stamps never go backwards at whole seconds."""

import numpy as np

from mbrl_ros.nodes.conversions import seconds_to_stamp


def test_stamps_round_to_the_nearest_nanosecond_across_whole_seconds():
    # simulated time summed from 2 ms steps lands just below whole seconds
    t = 0.0
    for _ in range(2500):
        t += 0.002
    assert t < 5.0
    stamp = seconds_to_stamp(t)
    assert (stamp.sec, stamp.nanosec) == (5, 0)
    stamp = seconds_to_stamp(4.999999999)
    assert (stamp.sec, stamp.nanosec) == (4, 999999999)
    stamps = [seconds_to_stamp(x) for x in np.cumsum(np.full(20000, 0.002))]
    values = [s.sec * 1_000_000_000 + s.nanosec for s in stamps]
    assert all(0 <= s.nanosec < 1_000_000_000 for s in stamps)
    assert np.all(np.diff(values) > 0)  # strictly increasing: no jump back by one second
