"""Truncated and corrupt bags are read up to the damage, with a warning and loss counts."""

import logging
import struct

import numpy as np
import pytest
from bag_factory import (COMMAND_JOINTS, CONFIG_JOINTS, GAP_END, GAP_START, LAST,
                         OUT_OF_ORDER_AFTER, robot_bag_messages, state_values, storage_file,
                         write_robot_bag)

from mbrl_ros.data.alignment import align_streams
from mbrl_ros.data.bag_reader import read_robot_streams
from mbrl_ros.data.bag_storage import read_raw
from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig
from mbrl_ros.data.message_types import build_typestore

CONFIG = RobotStreamsConfig(joints=CONFIG_JOINTS, command_joints=COMMAND_JOINTS)
MCAP_HEADER_START = 8
"""The header record follows the 8 magic bytes."""
RECORD_HEADER = struct.Struct("<BQ")
CHUNK_OPCODE = 0x06
STALE_INDEX = 10.5
"""State index whose values the out-of-order message carries."""
# state indices in storage order: the stale message comes right after index OUT_OF_ORDER_AFTER
STATE_ORDER = [*range(OUT_OF_ORDER_AFTER + 1), STALE_INDEX,
               *range(OUT_OF_ORDER_AFTER + 1, GAP_START), *range(GAP_END, LAST)]
NUM_MESSAGES = len(robot_bag_messages(build_typestore()))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_file_reads_prefix_with_warning(tmp_path, storage, caplog):
    bag = write_robot_bag(tmp_path / "bag", storage)
    data = storage_file(bag).read_bytes()
    cut = tmp_path / f"cut{storage_file(bag).suffix}"
    cut.write_bytes(data[:int(len(data) * 0.75)])
    with caplog.at_level(logging.WARNING):
        recording = read_robot_streams([cut], CONFIG).recordings[0]
    report = recording.report
    assert any(cut.name in line for line in report.damage) and report.lost_unknown
    read = len(recording.state)
    assert 0 < read < len(STATE_ORDER)
    assert any(r.levelno == logging.WARNING and "damaged" in r.getMessage()
               and cut.name in r.getMessage() for r in caplog.records)
    # what was read is exactly the start of the recording, and still aligns
    np.testing.assert_array_equal(recording.state.values, state_values(STATE_ORDER[:read]))
    aligned = align_streams(read_robot_streams([cut], CONFIG),
                            AlignmentConfig(command_latency_s=0.005))
    assert 0 < len(aligned.batch) < 98


def test_corrupt_compressed_mcap_chunk_is_skipped_and_counted(tmp_path):
    bag = write_robot_bag(tmp_path / "bag", "mcap", compress=True, pad_at=30)
    file = storage_file(bag)
    data = bytearray(file.read_bytes())
    _, header_length = RECORD_HEADER.unpack_from(data, MCAP_HEADER_START)
    first_chunk = MCAP_HEADER_START + RECORD_HEADER.size + header_length
    opcode, length = RECORD_HEADER.unpack_from(data, first_chunk)
    assert opcode == CHUNK_OPCODE  # the corruption below hits chunk data, not framing
    middle = first_chunk + RECORD_HEADER.size + length // 2
    data[middle:middle + 64] = b"\x00" * 64
    file.write_bytes(bytes(data))
    recording = read_robot_streams([bag], CONFIG).recordings[0]
    report = recording.report
    assert any("chunk" in line for line in report.damage)
    # metadata.yaml gives exact per-topic losses
    assert report.lost["/joint_states"] == 101 - len(recording.state) > 0
    assert report.lost["/command"] == 100 - len(recording.command) > 0
    assert not report.lost_unknown
    # the first chunk held indices 0..30 and the stale message; the rest is intact
    assert len(recording.state) == 101 - 32 and len(recording.command) == 100 - 31
    np.testing.assert_array_equal(recording.state.values, state_values(STATE_ORDER[32:]))
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
    assert lost > 0 and not report.lost_unknown
    # every row is either read or counted as lost (rosbag2 ids are contiguous)
    assert sum(count for _, count in report.topics.values()) + lost == NUM_MESSAGES
    # rows past the damaged page are read: the recording's last state is there
    np.testing.assert_array_equal(recording.state.values[-1], state_values(LAST - 1))
    assert any("missing" in line or "unreadable" in line for line in report.damage)
    with_meta = read_robot_streams([bag], CONFIG).recordings[0].report
    assert with_meta.lost["/joint_states"] == 101 - len(recording.state)


def test_garbage_file_is_reported_not_crashing(tmp_path):
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"not a bag at all" * 10)
    raw = read_raw(bad, {"/joint_states"})
    assert raw.unrecognized == [bad.name] and any("bad magic" in d for d in raw.damage)
    with pytest.raises(ValueError, match="not in the bag"):
        read_robot_streams([bad], CONFIG)
    with pytest.raises(FileNotFoundError):
        read_robot_streams([tmp_path / "absent.mcap"], CONFIG)
