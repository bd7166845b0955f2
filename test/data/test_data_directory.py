"""DataDirectory: finished splits only, manifest survives restarts and corruption."""

import os

from bag_factory import joint_state

from mbrl_ros.data.bag_writer import BagRecorder, BagRecorderConfig
from mbrl_ros.data.data_directory import DataDirectory
from mbrl_ros.data.message_types import build_typestore

TS = build_typestore()
JS = "sensor_msgs/msg/JointState"


def _record(root, num_splits):
    recorder = BagRecorder(BagRecorderConfig(output_dir=str(root)))
    for i in range(num_splits):
        recorder.write("/js", JS, joint_state(TS, i, ["a"], [1.0], [0.0]), i)
        recorder.start_new_split()
    return recorder


def test_pending_ingested_and_restart(tmp_path):
    recorder = _record(tmp_path, 2)
    recorder.write("/js", JS, joint_state(TS, 9, ["a"], [1.0], [0.0]), 9)  # open, unfinished
    (tmp_path / "notes.txt").write_text("ignored")
    directory = DataDirectory(tmp_path)
    pending = directory.pending()
    assert [s.path for s in pending] == recorder.finished_splits
    directory.mark_ingested(pending[0], 10, {"dropped": 1})
    directory.mark_failed(pending[1], "unreadable")
    assert directory.pending() == []
    restarted = DataDirectory(tmp_path)  # a new trainer process
    assert restarted.pending() == []
    assert restarted.entries[pending[0].name]["num_transitions"] == 10
    recorder.close()
    assert [s.path for s in restarted.pending()] == recorder.finished_splits[2:]


def test_changed_split_is_pending_again(tmp_path):
    recorder = _record(tmp_path, 1)
    directory = DataDirectory(tmp_path, tmp_path / "state" / "manifest.json")
    split = directory.pending()[0]
    directory.mark_failed(split, "truncated")
    meta = recorder.finished_splits[0] / "metadata.yaml"
    os.utime(meta, ns=(1, 1))
    assert [s.name for s in directory.pending()] == [split.name]


def test_corrupt_manifest_falls_back_to_backup(tmp_path):
    _record(tmp_path, 2)
    directory = DataDirectory(tmp_path)
    first, second = directory.pending()
    directory.mark_ingested(first, 1)
    directory.mark_ingested(second, 2)  # backup now holds `first`
    directory.manifest_path.write_text('{"version": 1, "spl')  # torn write
    recovered = DataDirectory(tmp_path)
    assert [s.name for s in recovered.pending()] == [second.name]
    assert list(tmp_path.glob(".ingested.json.corrupt-*"))


def test_abandoned_partials_are_listed(tmp_path):
    recorder = BagRecorder(BagRecorderConfig(output_dir=str(tmp_path)))
    recorder.write("/js", JS, joint_state(TS, 0, ["a"], [1.0], [0.0]), 0)
    directory = DataDirectory(tmp_path)
    assert directory.finished_splits() == []
    assert directory.abandoned_partials(older_than_s=-1) == []  # its recorder is alive
    recorder._session_lock.release(remove=False)  # what the kernel does when the process dies
    assert directory.abandoned_partials(older_than_s=3600) == []
    assert directory.abandoned_partials(older_than_s=-1) == [recorder.current_split]
