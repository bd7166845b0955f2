"""Reading robot bags: name matching, exact values, single files, clear errors."""

import shutil

import numpy as np
import pytest
from bag_factory import (COMMAND_JOINTS, CONFIG_JOINTS, GAP_END, GAP_START, LAST, PERIOD_NS,
                         T0_NS, command_values, joint_state, state_values, storage_file,
                         write_bag, write_robot_bag)

from mbrl_ros.data.alignment import align_streams
from mbrl_ros.data.bag_reader import read_robot_streams
from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig
from mbrl_ros.data.message_types import build_typestore

CONFIG = RobotStreamsConfig(joints=CONFIG_JOINTS, command_joints=COMMAND_JOINTS)
ALIGN = AlignmentConfig(command_latency_s=0.005)


def _check_aligned(streams):
    data = align_streams(streams, ALIGN)
    report = data.report
    indices = np.concatenate([np.arange(GAP_START - 1), np.arange(GAP_END, LAST - 1)])
    assert len(data.batch) == len(indices) == 98
    np.testing.assert_allclose(data.batch.state, state_values(indices), atol=1e-6)
    np.testing.assert_allclose(data.batch.next_state, state_values(indices + 1), atol=1e-6)
    np.testing.assert_allclose(data.batch.action, command_values(indices), atol=1e-6)
    np.testing.assert_array_equal(data.batch.episode, (indices >= GAP_END).astype(int))
    np.testing.assert_array_equal(data.tick_ns, T0_NS + indices * PERIOD_NS)
    assert report.dropped_samples["state/out_of_order"] == 1
    assert report.breaks["gap"] == 1 and report.num_episodes == 2
    assert sum(report.dropped_ticks.values()) == 0
    assert data.state_names == ("q/j1", "q/j2", "qd/j1", "qd/j2")
    assert data.action_names == COMMAND_JOINTS


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_directory_aligns_exactly(tmp_path, storage):
    bag = write_robot_bag(tmp_path / "bag", storage)
    streams = read_robot_streams([bag], CONFIG)
    report = streams.recordings[0].report
    assert report.topics["/joint_states"] == ("sensor_msgs/msg/JointState", 101)
    assert report.topics["/rosout_text"][1] == 10
    assert not report.damage and not report.dropped
    _check_aligned(streams)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_single_storage_file_and_missing_metadata(tmp_path, storage):
    bag = write_robot_bag(tmp_path / "bag", storage)
    _check_aligned(read_robot_streams([storage_file(bag)], CONFIG))
    (bag / "metadata.yaml").unlink()
    _check_aligned(read_robot_streams([bag], CONFIG))


def test_two_bags_give_separate_episodes(tmp_path):
    bags = [write_robot_bag(tmp_path / "a", "mcap"), write_robot_bag(tmp_path / "b", "sqlite3")]
    data = align_streams(read_robot_streams(bags, CONFIG), ALIGN)
    assert len(data.batch) == 196
    assert sorted(set(data.batch.episode)) == [0, 1, 2, 3]
    np.testing.assert_array_equal(np.bincount(data.recording), [98, 98])


def test_receive_time_stamps(tmp_path):
    bag = write_robot_bag(tmp_path / "bag")
    config = RobotStreamsConfig(joints=CONFIG_JOINTS, command_joints=COMMAND_JOINTS,
                                stamp_source="receive")
    state = read_robot_streams([bag], config).recordings[0].state
    assert state.stamps_ns[0] == T0_NS + 1_000_000  # written 1 ms after the header stamp


def test_missing_topic_lists_bag_contents(tmp_path):
    bag = write_robot_bag(tmp_path / "bag")
    config = RobotStreamsConfig(joints=CONFIG_JOINTS, command_topic="/nope")
    with pytest.raises(ValueError) as error:
        read_robot_streams([bag], config)
    text = str(error.value)
    assert "/nope" in text and "/joint_states [sensor_msgs/msg/JointState] 101 messages" in text
    assert "/rosout_text [std_msgs/msg/String] 10 messages" in text


def test_missing_joint_lists_joints_seen(tmp_path):
    bag = write_robot_bag(tmp_path / "bag")
    with pytest.raises(ValueError, match=r"\['j3'\].*\['extra', 'j1', 'j2'\]"):
        read_robot_streams([bag], RobotStreamsConfig(joints=("j1", "j3"),
                                                     command_joints=COMMAND_JOINTS))


def test_wrong_command_size_is_counted(tmp_path):
    bag = write_robot_bag(tmp_path / "bag")
    config = RobotStreamsConfig(joints=CONFIG_JOINTS, command_joints=("j1", "j2", "extra"))
    recording = read_robot_streams([bag], config).recordings[0]
    assert recording.report.dropped["command/wrong_size"] == 100 and len(recording.command) == 0


def test_wrong_type_is_an_error(tmp_path):
    bag = write_robot_bag(tmp_path / "bag")
    with pytest.raises(ValueError, match="has type std_msgs/msg/String"):
        read_robot_streams([bag], RobotStreamsConfig(joints=CONFIG_JOINTS,
                                                     command_topic="/rosout_text"))


def test_joint_trajectory_and_effort_commands_by_name(tmp_path):
    ts = build_typestore()
    Trajectory = ts.types["trajectory_msgs/msg/JointTrajectory"]
    Point = ts.types["trajectory_msgs/msg/JointTrajectoryPoint"]
    Duration = ts.types["builtin_interfaces/msg/Duration"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    messages = []
    for i in range(20):
        t = T0_NS + i * PERIOD_NS
        q = state_values(i)
        messages.append(("/joint_states", "sensor_msgs/msg/JointState",
                         joint_state(ts, t, ["j1", "j2"], q[:2], q[2:]), t))
        point = Point(positions=np.array([3.0 * i, 4.0 * i]), velocities=np.zeros(0),
                      accelerations=np.zeros(0), effort=np.zeros(0),
                      time_from_start=Duration(sec=0, nanosec=0))
        # zero header stamp: the receive time is used and the fallback counted
        messages.append(("/traj", "trajectory_msgs/msg/JointTrajectory",
                         Trajectory(header=Header(stamp=Time(sec=0, nanosec=0), frame_id=""),
                                    joint_names=["j2", "j1"], points=[point]), t))
        messages.append(("/effort", "sensor_msgs/msg/JointState",
                         joint_state(ts, t, ["j2", "j1"], [0, 0], [0, 0], [5.0 * i, 6.0 * i]),
                         t))
    bag = write_bag(tmp_path / "bag", messages)
    traj = read_robot_streams([bag], RobotStreamsConfig(
        joints=("j1", "j2"), command_topic="/traj", command_field="position")).recordings[0]
    np.testing.assert_allclose(traj.command.values[5], [4.0 * 5, 3.0 * 5])
    assert traj.report.stamp_fallbacks["command"] == 20
    effort = read_robot_streams([bag], RobotStreamsConfig(
        joints=("j1", "j2"), command_topic="/effort")).recordings[0]
    np.testing.assert_allclose(effort.command.values[5], [6.0 * 5, 5.0 * 5])


def test_directory_of_storage_files_is_read(tmp_path):
    bag = write_robot_bag(tmp_path / "bag")
    folder = tmp_path / "loose"
    folder.mkdir()
    shutil.copy(storage_file(bag), folder / "part_0.mcap")
    assert len(read_robot_streams([folder], CONFIG).recordings[0].state) == 101


def test_config_validation():
    with pytest.raises(ValueError, match="duplicates"):
        RobotStreamsConfig(joints=("a", "a")).validate()
    with pytest.raises(ValueError, match="command_field"):
        RobotStreamsConfig(joints=("a",), command_field="torque").validate()
    with pytest.raises(ValueError, match="gap_threshold_s"):
        AlignmentConfig(state_tolerance_s=0.5, gap_threshold_s=0.1).validate()
    with pytest.raises(ValueError, match="at least one bag"):
        read_robot_streams([], RobotStreamsConfig(joints=("a",)))
