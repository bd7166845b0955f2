"""BagRecorder: finished splits readable by rosbags with the right types, raw CDR path,
flushes on its period, rotations that lose nothing."""

import queue
import threading
import time

import numpy as np
import pytest
from bag_factory import joint_state
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.rosbag2 import Reader

from mbrl_ros.data.background_recorder import BackgroundRecorder
from mbrl_ros.data.bag_storage import read_raw
from mbrl_ros.data.bag_writer import PARTIAL_DIR, BagRecorder, BagRecorderConfig, QosSpec
from mbrl_ros.data.message_types import build_typestore, deserialize
from mbrl_ros.data.split_lock import is_locked

TS = build_typestore()
JS = "sensor_msgs/msg/JointState"


def _read_all(path):
    with Reader(path) as reader:
        types = {c.topic: (c.msgtype, c.digest, c.ext.offered_qos_profiles)
                 for c in reader.connections}
        msgs = [(c.topic, t, deserialize(TS, d, c.msgtype)) for c, t, d in reader.messages()]
    return types, msgs


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_recorder_writes_finished_bag(tmp_path, storage):
    config = BagRecorderConfig(output_dir=str(tmp_path), storage=storage)
    closed = []
    with BagRecorder(config, on_split_closed=closed.append) as recorder:
        recorder.add_topic("/joint_states", JS, QosSpec(reliability="best_effort"))
        for i in range(5):
            recorder.write("/joint_states", JS, joint_state(TS, i * 10, ["a"], [i], [0.0]),
                           1_000 + i)
        assert recorder.current_split.parent.name == PARTIAL_DIR
        assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert closed == recorder.finished_splits and len(closed) == 1
    assert (closed[0] / "metadata.yaml").is_file()
    assert not list((tmp_path / PARTIAL_DIR).iterdir())
    types, msgs = _read_all(closed[0])
    msgtype, digest, qos = types["/joint_states"]
    assert msgtype == JS and digest == TS.hash_rihs01(JS)
    assert qos[0].reliability == QosReliability.BEST_EFFORT
    assert qos[0].durability == QosDurability.VOLATILE
    assert [m.position[0] for _, _, m in msgs] == [0, 1, 2, 3, 4]
    assert [t for _, t, _ in msgs] == [1_000 + i for i in range(5)]


def test_split_by_size_duration_and_request(tmp_path):
    config = BagRecorderConfig(output_dir=str(tmp_path), max_split_bytes=600,
                               max_split_duration_s=1.0)
    recorder = BagRecorder(config)
    data = bytes(TS.serialize_cdr(joint_state(TS, 0, ["a"], [1.0], [2.0]), JS))
    for i in range(10):  # ~100 bytes each: size splits every ~5 messages
        recorder.write("/js", JS, data, i)
    assert len(recorder.finished_splits) == 1
    recorder.start_new_split()
    recorder.write("/js", JS, data, 100)
    recorder.write("/js", JS, data, 100 + 2_000_000_000)  # 2 s later: duration split first
    recorder.close()
    counts = []
    for split in recorder.finished_splits:
        _, msgs = _read_all(split)
        counts.append(len(msgs))
    assert sum(counts) == 12 and len(counts) >= 4
    assert counts[-1] == 1 and counts[-2] == 1
    assert recorder.finished_splits == sorted(recorder.finished_splits)
    assert recorder.start_new_split() is None  # nothing open: no empty bag
    with pytest.raises(RuntimeError, match="closed"):
        recorder.write("/js", JS, data, 0)


def test_raw_cdr_from_rclpy_round_trips(tmp_path):
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    ros_msg = JointState(name=["j1", "j2"], position=[0.5, -1.5], velocity=[2.0, 3.0])
    ros_msg.header.stamp.sec, ros_msg.header.stamp.nanosec = 12, 345
    command = Float64MultiArray(data=[1.0, 2.0, 3.0])
    with BagRecorder(BagRecorderConfig(output_dir=str(tmp_path))) as recorder:
        recorder.write("/joint_states", JS, serialize_message(ros_msg), 7)
        recorder.write("/cmd", "std_msgs/msg/Float64MultiArray", serialize_message(command), 8)
    types, msgs = _read_all(recorder.finished_splits[0])
    assert types["/cmd"][0] == "std_msgs/msg/Float64MultiArray"
    (_, _, js), (_, _, cmd) = msgs
    assert js.name == ["j1", "j2"] and js.header.stamp.nanosec == 345
    np.testing.assert_array_equal(js.position, [0.5, -1.5])
    np.testing.assert_array_equal(cmd.data, [1.0, 2.0, 3.0])


def test_custom_message_and_bad_input(tmp_path):
    gate_type = "mbrl_ros/msg/GateStatus"
    Gate = TS.types[gate_type]
    Header = TS.types["std_msgs/msg/Header"]
    Time = TS.types["builtin_interfaces/msg/Time"]
    gate = Gate(header=Header(stamp=Time(sec=1, nanosec=2), frame_id="base"), state=2,
                reason="stale", disagreement=0.5, disagreement_threshold=1.0,
                disagreement_resume=0.5, command_age_s=0.1, watchdog_timeout_s=0.2,
                interventions=3, commands_passed=4, commands_clamped=1)
    recorder = BagRecorder(BagRecorderConfig(output_dir=str(tmp_path), storage="sqlite3"))
    recorder.write("/gate", gate_type, gate, 5)
    with pytest.raises(ValueError, match="not sensor_msgs/msg/JointState"):
        recorder.write("/gate", JS, gate, 6)
    with pytest.raises(ValueError, match="unknown to the typestore"):
        recorder.write("/x", "nobody/msg/Nothing", b"\x00\x01\x00\x00", 6)
    with pytest.raises(ValueError, match="recorded as"):
        recorder.write("/gate", JS, b"\x00\x01\x00\x00", 6)
    path = recorder.close()
    types, msgs = _read_all(path)
    assert types["/gate"][0] == gate_type and msgs[0][2].reason == "stale"
    with pytest.raises(ValueError, match="storage"):
        BagRecorderConfig(output_dir="x", storage="bagfile").validate()
    with pytest.raises(ValueError, match="reliability"):
        QosSpec(reliability="sometimes").validate()


class FakeClock:
    """Monotonic seconds that only move when the test says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _on_disk(split):
    """Messages per topic that a reader finds in the split's files right now."""
    raw = read_raw(split, None)
    return {topic: len(msgs) for topic, msgs in raw.messages.items()}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_writer_flushes_on_its_period(tmp_path, storage):
    clock = FakeClock()
    config = BagRecorderConfig(output_dir=str(tmp_path), storage=storage, flush_period_s=0.5)
    recorder = BagRecorder(config, typestore=TS, clock=clock)
    recorder.add_topic("/cmd", "std_msgs/msg/Float64MultiArray")
    data = bytes(TS.serialize_cdr(joint_state(TS, 0, ["a"], [1.0], [2.0]), JS))
    for i in range(20):  # 0.4 s: still within the period, still in memory
        clock.now = 0.02 * i
        recorder.write("/js", JS, data, i)
    split = recorder.current_split
    assert _on_disk(split).get("/js", 0) == 0 and recorder.flushes == 0
    clock.now = 0.5
    recorder.write("/js", JS, data, 20)  # the period is over: this write flushes
    assert recorder.flushes == 1
    assert _on_disk(split) == {"/js": 21, "/cmd": 0}  # a readable chunk, before any close
    clock.now = 0.7
    recorder.write("/js", JS, data, 21)
    clock.now = 1.0
    assert recorder.seconds_until_flush() == 0.0
    assert recorder.flush_if_due()  # no message needed: a timer (or thread) flushes
    assert _on_disk(split) == {"/js": 22, "/cmd": 0}
    assert not (split / "metadata.yaml").exists()
    recorder.close()


def test_background_recorder_flushes_while_idle_and_closes_everything(tmp_path):
    config = BagRecorderConfig(output_dir=str(tmp_path), flush_period_s=0.05)
    background = BackgroundRecorder(BagRecorder(config, typestore=TS))
    data = bytes(TS.serialize_cdr(joint_state(TS, 0, ["a"], [1.0], [2.0]), JS))
    for i in range(5):
        assert background.submit("/js", JS, data, i)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and background.recorder.current_split is None:
        time.sleep(0.01)
    split = background.recorder.current_split
    while time.monotonic() < deadline and _on_disk(split).get("/js", 0) < 5:
        time.sleep(0.01)
    assert _on_disk(split) == {"/js": 5}  # flushed with no further write
    assert background.submit("/js", JS, data, 5)
    assert background.close() and background.close()  # idempotent
    assert not background.submit("/js", JS, data, 6) and background.dropped == 1
    _, msgs = _read_all(background.last_split)
    assert len(msgs) == 6 and background.errors == 0
    assert not list((tmp_path / PARTIAL_DIR).iterdir())  # no split, no session lock left


def _sequence(msg):
    return int(msg.position[0])


@pytest.mark.parametrize("mode", ["direct", "queued", "duration"])
def test_ten_rotations_drop_nothing(tmp_path, mode):
    """Ten rotations while another thread writes: every message is in exactly one split.

    direct: ``BagRecorder.write`` from a thread, ``start_new_split`` from another; queued: the
    same through ``BackgroundRecorder``; duration: ``max_split_duration_s`` closes the splits.
    """
    num_messages, rotations = 1100, 10
    every = num_messages // (rotations + 1)
    config = BagRecorderConfig(output_dir=str(tmp_path),
                               max_split_duration_s=every * 1e-3 if mode == "duration" else 1e6)
    recorder = BagRecorder(config, typestore=TS)
    background = BackgroundRecorder(recorder) if mode != "direct" else None
    write = recorder.write if background is None else background.submit
    rotate = recorder.start_new_split if background is None else background.start_new_split
    requests, done = queue.Queue(), queue.Queue()

    def produce():
        for i in range(num_messages):
            message = TS.serialize_cdr(joint_state(TS, 0, ["a"], [float(i)], [0.0]), JS)
            write("/js", JS, message, i * 1_000_000)  # 1 kHz of message time
            if mode != "duration" and i % every == every - 1 and i < num_messages - 1:
                requests.put(i)  # the other thread rotates while this one keeps writing
                done.get(timeout=5.0)

    producer = threading.Thread(target=produce)
    producer.start()
    if mode != "duration":
        for _ in range(rotations):
            requests.get(timeout=5.0)
            done.put(True)
            rotate()
    producer.join()
    if background is not None:
        assert background.close() and background.errors == 0 and background.dropped == 0
    else:
        recorder.close()
    splits = recorder.finished_splits
    assert len(splits) == rotations + 1
    seen = [_sequence(m) for split in splits for _, _, m in _read_all(split)[1]]
    assert sorted(seen) == list(range(num_messages))  # none lost, none twice
    assert seen == sorted(seen)  # and in order across the splits


def test_every_split_lists_every_declared_topic(tmp_path):
    recorder = BagRecorder(BagRecorderConfig(output_dir=str(tmp_path)), typestore=TS)
    recorder.add_topic("/cmd", "std_msgs/msg/Float64MultiArray")
    recorder.add_topic("/planned", "mbrl_ros/msg/PlannedCommand")
    recorder.write("/js", JS, joint_state(TS, 0, ["a"], [1.0], [2.0]), 1)
    recorder.start_new_split()
    recorder.write("/js", JS, joint_state(TS, 0, ["a"], [1.0], [2.0]), 2)
    recorder.close()
    for split in recorder.finished_splits:
        types, _ = _read_all(split)
        assert set(types) == {"/js", "/cmd", "/planned"}
        assert types["/planned"][1] == TS.hash_rihs01("mbrl_ros/msg/PlannedCommand")


def test_close_is_idempotent_and_releases_the_session_lock(tmp_path):
    recorder = BagRecorder(BagRecorderConfig(output_dir=str(tmp_path)), typestore=TS)
    recorder.write("/js", JS, joint_state(TS, 0, ["a"], [1.0], [2.0]), 1)
    assert is_locked(recorder.current_split)
    partial = recorder.current_split
    first = recorder.close()
    assert first == tmp_path / partial.name and recorder.close() is None
    assert recorder.closed and not list((tmp_path / PARTIAL_DIR).iterdir())


def test_rclpy_recording_reads_back_as_transitions(tmp_path):
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from mbrl_ros.data.alignment import align_streams
    from mbrl_ros.data.bag_reader import read_robot_streams
    from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig

    recorder = BagRecorder(BagRecorderConfig(output_dir=str(tmp_path)))
    for i in range(11):
        stamp_ns = 5_000_000_000 + i * 10_000_000
        state = JointState(name=["b", "a"], position=[-float(i), float(i)],
                           velocity=[0.0, 1.0])
        state.header.stamp.sec, state.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        recorder.write("/joint_states", JS, serialize_message(state), stamp_ns)
        recorder.write("/command", "std_msgs/msg/Float64MultiArray",
                       serialize_message(Float64MultiArray(data=[0.5 * i])), stamp_ns)
    streams = read_robot_streams([recorder.close()], RobotStreamsConfig(joints=("a",)))
    assert not streams.recordings[0].report.dropped
    data = align_streams(streams, AlignmentConfig())
    assert len(data.batch) == 10
    np.testing.assert_allclose(data.batch.state[:, 0], np.arange(10))
    np.testing.assert_allclose(data.batch.action[:, 0], 0.5 * np.arange(10))


def test_type_hashes_match_installed_ros_interfaces():
    import json
    import sys
    from pathlib import Path

    description = Path(sys.prefix) / "share" / "sensor_msgs" / "msg" / "JointState.json"
    if not description.is_file():
        pytest.skip("ROS interface descriptions not installed in this environment")
    hashes = json.loads(description.read_text())["type_hashes"]
    expected = next(h["hash_string"] for h in hashes if h["type_name"] == JS)
    assert TS.hash_rihs01(JS) == expected
