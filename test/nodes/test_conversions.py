"""Message conversions: time stamps never go backwards at whole seconds; joints by name."""

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


def test_joint_states_are_mapped_by_name_whatever_order_the_driver_sends():
    """Drivers (joint_state_broadcaster among them) send joints in their own order: the values
    must land on the configured joints by name, never by position in the message."""
    from sensor_msgs.msg import JointState

    from mbrl_ros.nodes.conversions import JointNameMap

    joints = ("lf_hip", "rf_hip", "lf_knee", "rf_knee")
    values = {"lf_hip": 0.1, "rf_hip": 0.2, "lf_knee": 0.3, "rf_knee": 0.4}
    sent = ("rf_knee", "gripper", "lf_hip", "rf_hip", "lf_knee")  # other order, an extra joint
    msg = JointState(name=list(sent), position=[values.get(n, 9.0) for n in sent],
                     velocity=[10 * values.get(n, 9.0) for n in sent], effort=[])
    arrays = JointNameMap(joints).from_joint_state(msg)
    np.testing.assert_allclose(arrays.position, [values[j] for j in joints])
    np.testing.assert_allclose(arrays.velocity, [10 * values[j] for j in joints])
    np.testing.assert_allclose(arrays.effort, 0.0)
