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


# ------------------------------------------------------------------ mutation-testing edges
# (bench/mutation.py; docs/safety_gate.md, "Mutation testing")

def test_joint_name_map_refuses_an_empty_or_duplicated_joint_list():
    import pytest

    from mbrl_ros.nodes.conversions import JointNameMap

    with pytest.raises(ValueError, match="empty"):
        JointNameMap(())
    with pytest.raises(ValueError, match="duplicate joint names"):
        JointNameMap(("a", "b", "a"))


def test_planned_commands_are_mapped_by_name_and_malformed_ones_refused():
    """The gate's input: values land on the configured joints by name; a missing, unknown or
    repeated joint, or a point of the wrong length, refuses the whole command with a reason."""
    from mbrl_ros.msg import PlannedCommand, PlannedCommandPoint
    from mbrl_ros.nodes.conversions import JointNameMap, seconds_to_duration

    def command(names, *rows):
        return PlannedCommand(joint_names=list(names), points=[
            PlannedCommandPoint(time_from_start=seconds_to_duration(0.01 * k),
                                command=list(row), disagreement=0.5 * k)
            for k, row in enumerate(rows)])

    joints = JointNameMap(("a", "b"))
    points, times, disagreement, reason = joints.from_planned_command(
        command(("b", "a"), (2.0, 1.0), (4.0, 3.0)))
    assert reason == ""
    np.testing.assert_array_equal(points, [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(times, [0.0, 0.01])
    np.testing.assert_array_equal(disagreement, [0.0, 0.5])

    def refused(names, *rows):
        points, times, disagreement, reason = joints.from_planned_command(command(names, *rows))
        assert points is None and times is None and disagreement is None
        return reason

    assert refused(("a", "b", "x"), (1.0, 2.0, 3.0)) == (
        "command joints ['a', 'b', 'x']: missing [], unknown ['x']")
    assert refused(("a", "x"), (1.0, 2.0)) == (
        "command joints ['a', 'x']: missing ['b'], unknown ['x']")
    assert refused(("a",), (1.0,)) == "command joints ['a']: missing ['b'], unknown []"
    assert refused(("a", "b", "a"), (1.0, 2.0, 3.0)).startswith("duplicate joint names")
    assert refused(("a", "b"), (1.0, 2.0), (1.0,)) == "point 1 has 1 values for 2 joints"
    assert refused(("a", "b"), (1.0, 2.0, 3.0)) == "point 0 has 3 values for 2 joints"


def test_joint_states_with_fields_of_the_wrong_length_are_refused():
    from sensor_msgs.msg import JointState

    from mbrl_ros.nodes.conversions import JointNameMap

    joints = JointNameMap(("a", "b"))

    def state(position, velocity=(), effort=()):
        return joints.from_joint_state(JointState(name=["a", "b"], position=list(position),
                                                  velocity=list(velocity), effort=list(effort)))

    good = state((1.0, 2.0), (3.0, 4.0), (5.0, 6.0))
    np.testing.assert_array_equal(good.effort, [5.0, 6.0])
    assert state((1.0,)) is None
    assert state((1.0, 2.0, 3.0)) is None
    assert state((1.0, 2.0), (3.0,)) is None
    assert state((1.0, 2.0), (3.0, 4.0), (5.0,)) is None
    assert state((1.0, 2.0), (), (5.0, 6.0, 7.0)) is None
    assert joints.from_joint_state(JointState(name=["a"], position=[1.0])) is None
