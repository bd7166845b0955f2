"""Splits left in .partial/ by a recorder that died become finished splits; nothing is lost
silently, and a live recorder's split is never touched."""

import json

import pytest
import yaml
from bag_factory import float_array, joint_state
from rosbags.interfaces import QosReliability
from rosbags.rosbag2 import Reader

from mbrl_ros.data.bag_writer import PARTIAL_DIR, BagRecorder, BagRecorderConfig, QosSpec
from mbrl_ros.data.data_directory import DataDirectory
from mbrl_ros.data.message_types import build_typestore, deserialize
from mbrl_ros.data import split_recovery
from mbrl_ros.data.salvage_mcap import MCAP_MAGIC, RECORD_HEADER
from mbrl_ros.data.split_recovery import (RECOVERED_KEY, UNRECOVERABLE_DIR,
                                          recover_abandoned_splits)

TS = build_typestore()
JS = "sensor_msgs/msg/JointState"
CMD = "std_msgs/msg/Float64MultiArray"
PERIOD_S = 0.5
CHUNK_OPCODE = 0x06


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _killed_recorder(root, storage, flushed, unflushed, chunks=1):
    """A recorder that wrote ``flushed`` + ``unflushed`` joint states (and commands) and died
    before flushing the last ``unflushed``; returns the split it left in ``.partial/``."""
    clock = FakeClock()
    recorder = BagRecorder(BagRecorderConfig(output_dir=str(root), storage=storage,
                                             flush_period_s=PERIOD_S), TS, clock=clock)
    recorder.add_topic("/js", JS, QosSpec(reliability="best_effort"))
    recorder.add_topic("/cmd", CMD)
    command = float_array(TS, [0.5])
    per_chunk = flushed // chunks
    for i in range(flushed + unflushed):
        recorder.write("/js", JS, joint_state(TS, i, ["a"], [float(i)], [0.0]), 1000 + i)
        recorder.write("/cmd", CMD, command, 1000 + i)
        if i < flushed and i % per_chunk == per_chunk - 1:
            clock.now += PERIOD_S
            recorder.flush_if_due()
    split = recorder.current_split
    recorder._session_lock.release(remove=False)  # what the kernel does when the process dies
    return split


def _record_offsets(data, opcode):
    """``(start, length)`` of the top-level MCAP records with ``opcode``."""
    out, pos = [], len(MCAP_MAGIC)
    while pos + RECORD_HEADER.size <= len(data):
        code, length = RECORD_HEADER.unpack_from(data, pos)
        if code == opcode:
            out.append((pos, length))
        pos += RECORD_HEADER.size + length
    return out


def _positions(split):
    with Reader(split) as reader:
        connections = [c for c in reader.connections if c.topic == "/js"]
        return [deserialize(TS, d, JS).position[0]
                for _, _, d in reader.messages(connections=connections)]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_killed_recorders_split_is_recovered_into_a_finished_split(tmp_path, storage):
    partial = _killed_recorder(tmp_path, storage, flushed=40, unflushed=7)
    assert DataDirectory(tmp_path).finished_splits() == []  # the trainer cannot see it yet
    results = recover_abandoned_splits(tmp_path, TS)
    assert [r.outcome for r in results] == ["recovered"]
    final = tmp_path / partial.name
    assert results[0].path == final and results[0].messages == 80 and results[0].lost_unknown
    assert [s.path for s in DataDirectory(tmp_path).finished_splits()] == [final]
    assert _positions(final) == [float(i) for i in range(40)]  # everything flushed, in order
    with Reader(final) as reader:  # a complete bag: metadata, types, QoS, counts
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
        assert {t: i.msgcount for t, i in reader.topics.items()} == {"/js": 40, "/cmd": 40}
        assert qos["/js"][0].reliability == QosReliability.BEST_EFFORT
    meta = yaml.safe_load((final / "metadata.yaml").read_text())
    custom = json.loads(meta["rosbag2_bagfile_information"]["custom_data"][RECOVERED_KEY])
    assert custom["messages"] == 80 and custom["lost_unknown"]
    assert not list((tmp_path / PARTIAL_DIR).iterdir())  # original and stale lock removed
    assert recover_abandoned_splits(tmp_path, TS) == []


def test_live_recorders_split_is_left_alone(tmp_path):
    recorder = BagRecorder(BagRecorderConfig(output_dir=str(tmp_path)), TS)
    recorder.write("/js", JS, joint_state(TS, 0, ["a"], [1.0], [0.0]), 1)
    recorder.flush()
    assert recover_abandoned_splits(tmp_path, TS) == []
    assert recorder.current_split.is_dir()
    recorder.close()


def test_split_cut_inside_a_chunk_keeps_every_complete_record(tmp_path):
    partial = _killed_recorder(tmp_path, "mcap", flushed=60, unflushed=0, chunks=3)
    storage = next(partial.glob("*.mcap"))
    data = storage.read_bytes()
    chunks = _record_offsets(data, opcode=CHUNK_OPCODE)
    assert len(chunks) == 3
    start, length = chunks[-1]
    storage.write_bytes(data[:start + length // 2])  # the last chunk's write was cut short
    (result,) = recover_abandoned_splits(tmp_path, TS)
    assert result.outcome == "recovered" and any("cut at byte" in d for d in result.damage)
    positions = _positions(result.path)
    assert positions == [float(i) for i in range(len(positions))]
    assert 40 < len(positions) < 60  # two whole chunks, and the start of the cut one


def test_empty_and_unreadable_splits(tmp_path):
    empty = tmp_path / PARTIAL_DIR / "robot_dead_00000"
    empty.mkdir(parents=True)
    (empty / "robot_dead_00000.mcap").write_bytes(b"")  # killed before its first flush
    garbage = tmp_path / PARTIAL_DIR / "robot_dead_00001"
    garbage.mkdir()
    (garbage / "robot_dead_00001.mcap").write_bytes(b"not a bag at all" * 10)
    results = {r.source.name: r for r in recover_abandoned_splits(tmp_path, TS)}
    assert results["robot_dead_00000"].outcome == "empty" and not empty.exists()
    kept = tmp_path / UNRECOVERABLE_DIR / "robot_dead_00001"
    assert results["robot_dead_00001"].outcome == "unrecoverable"
    assert (kept / "robot_dead_00001.mcap").read_bytes() == b"not a bag at all" * 10
    assert DataDirectory(tmp_path).finished_splits() == []


def test_recovery_cut_short_is_completed(tmp_path):
    partial = _killed_recorder(tmp_path, "mcap", flushed=10, unflushed=0)
    (result,) = recover_abandoned_splits(tmp_path, TS)
    # the recovering process died after the rename, before removing the original
    partial.mkdir()
    (partial / "leftover.mcap").write_bytes(b"x")
    (again,) = recover_abandoned_splits(tmp_path, TS)
    assert again.outcome == "already_finished" and not partial.exists()
    assert _positions(result.path) == [float(i) for i in range(10)]


def test_a_failing_recovery_leaves_the_split_and_goes_on(tmp_path, monkeypatch):
    first = _killed_recorder(tmp_path, "mcap", flushed=5, unflushed=0)
    second = _killed_recorder(tmp_path, "mcap", flushed=5, unflushed=0)
    original = split_recovery._write_split

    def fail_first(staging, *args):
        if staging.name == first.name:
            raise OSError("disk full")
        return original(staging, *args)

    monkeypatch.setattr(split_recovery, "_write_split", fail_first)
    results = {r.source.name: r.outcome for r in recover_abandoned_splits(tmp_path, TS)}
    assert results == {first.name: "failed", second.name: "recovered"}
    assert first.is_dir() and (tmp_path / second.name / "metadata.yaml").is_file()
