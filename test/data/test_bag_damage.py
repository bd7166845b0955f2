"""Truncated and corrupt bags are read up to the damage, with a warning and loss counts."""

import logging
import struct

import pytest
from bag_factory import COMMAND_JOINTS, CONFIG_JOINTS, storage_file, write_robot_bag

from mbrl_ros.data.alignment import align_streams
from mbrl_ros.data.bag_reader import read_robot_streams
from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig

CONFIG = RobotStreamsConfig(joints=CONFIG_JOINTS, command_joints=COMMAND_JOINTS)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_file_reads_prefix_with_warning(tmp_path, storage, caplog):
    bag = write_robot_bag(tmp_path / "bag", storage)
    data = storage_file(bag).read_bytes()
    cut = tmp_path / f"cut{storage_file(bag).suffix}"
    cut.write_bytes(data[:int(len(data) * 0.75)])
    with caplog.at_level(logging.WARNING):
        recording = read_robot_streams([cut], CONFIG).recordings[0]
    report = recording.report
    assert report.damage and report.lost_unknown
    assert 0 < len(recording.state) < 101
    assert "damage" in caplog.text or "damaged" in caplog.text
    # what was read is a prefix of the recording, and still aligns
    aligned = align_streams(read_robot_streams([cut], CONFIG),
                            AlignmentConfig(command_latency_s=0.005))
    assert 0 < len(aligned.batch) < 98


def test_corrupt_compressed_mcap_chunk_is_skipped_and_counted(tmp_path):
    bag = write_robot_bag(tmp_path / "bag", "mcap", compress=True, pad_at=30)
    file = storage_file(bag)
    data = bytearray(file.read_bytes())
    first_chunk = data.index(b"\x06", 8 + 9 + 4)  # after magic and header record
    assert data[first_chunk] == 6
    (length,) = struct.unpack_from("<Q", data, first_chunk + 1)
    middle = first_chunk + 9 + length // 2
    data[middle:middle + 64] = b"\x00" * 64
    file.write_bytes(bytes(data))
    recording = read_robot_streams([bag], CONFIG).recordings[0]
    report = recording.report
    assert any("chunk" in line for line in report.damage)
    # metadata.yaml gives exact per-topic losses
    assert report.lost["/joint_states"] == 101 - len(recording.state) > 0
    assert report.lost["/command"] == 100 - len(recording.command) > 0
    assert not report.lost_unknown
    # the first chunk held indices 0..30 and the stale message
    assert len(recording.state) == 101 - 32 and len(recording.command) == 100 - 31
    # the single file (no metadata.yaml): losses counted from the MCAP message index
    single = read_robot_streams([file], CONFIG).recordings[0]
    assert single.report.lost["/joint_states"] == 101 - len(single.state)


def test_corrupt_db3_page_is_skipped_and_counted(tmp_path):
    bag = write_robot_bag(tmp_path / "bag", "sqlite3")
    file = storage_file(bag)
    data = bytearray(file.read_bytes())
    page = 4096 * 8
    data[page + 100:page + 3000] = b"\xff" * 2900
    file.write_bytes(bytes(data))
    recording = read_robot_streams([file], CONFIG).recordings[0]
    report = recording.report
    lost = report.lost["<unknown topic>"]
    read = len(recording.state) + len(recording.command) + 1  # + the out-of-order message
    assert lost > 0 and not report.lost_unknown
    assert len(recording.state) + len(recording.command) + lost >= 201 - 10  # strings unread
    assert read > 0
    with_meta = read_robot_streams([bag], CONFIG).recordings[0].report
    assert with_meta.lost["/joint_states"] == 101 - len(recording.state)


def test_garbage_file_is_reported_not_crashing(tmp_path):
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"not a bag at all" * 10)
    with pytest.raises(ValueError, match="not in the bag"):
        read_robot_streams([bad], CONFIG)
    with pytest.raises(FileNotFoundError):
        read_robot_streams([tmp_path / "absent.mcap"], CONFIG)
