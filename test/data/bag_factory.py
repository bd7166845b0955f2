"""Writes small synthetic robot bags with rosbags' own Writer for the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from mbrl_ros.data.message_types import build_typestore

T0_NS = 1_000_000_000
PERIOD_NS = 10_000_000
GAP_START, GAP_END = 50, 80  # state indices [50, 80) are missing: a 0.31 s gap
LAST = 130
OUT_OF_ORDER_AFTER = 20  # a stale message (stamp of index 10 + 5 ms) arrives after index 20
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
CONFIG_JOINTS = ("j1", "j2")
COMMAND_JOINTS = ("j2", "j1")


def state_values(i):
    """[q_j1, q_j2, qd_j1, qd_j2] at state index i (config joint order)."""
    i = np.asarray(i, dtype=float)
    return np.stack([0.1 * i, -i, 1.0 + i, 2.0 * i], axis=-1)


def command_values(i):
    """Command at index i in COMMAND_JOINTS order."""
    i = np.asarray(i, dtype=float)
    return np.stack([i, 10.0 * i], axis=-1)


def _stamp(ts, t_ns):
    Time = ts.types["builtin_interfaces/msg/Time"]
    return Time(sec=int(t_ns // 1_000_000_000), nanosec=int(t_ns % 1_000_000_000))


def joint_state(ts, t_ns, names, position, velocity, effort=()):
    Header = ts.types["std_msgs/msg/Header"]
    JointState = ts.types["sensor_msgs/msg/JointState"]
    return JointState(header=Header(stamp=_stamp(ts, t_ns), frame_id=""), name=list(names),
                      position=np.asarray(position, float), velocity=np.asarray(velocity, float),
                      effort=np.asarray(effort, float))


def float_array(ts, data):
    Layout = ts.types["std_msgs/msg/MultiArrayLayout"]
    Array = ts.types["std_msgs/msg/Float64MultiArray"]
    return Array(layout=Layout(dim=[], data_offset=0), data=np.asarray(data, float))


def robot_bag_messages(ts, pad_at=None):
    """[(topic, msgtype, message, receive_ns)] of the standard test recording, in write order.

    ``pad_at``: after this state index add a 1.1 MB string message, which closes the MCAP chunk.
    """
    out = []
    String = ts.types["std_msgs/msg/String"]
    for i in [*range(GAP_START), *range(GAP_END, LAST)]:
        t = T0_NS + i * PERIOD_NS
        q = state_values(i)
        # bag order of joints differs from the config and has an extra joint
        msg = joint_state(ts, t, ["j2", "extra", "j1"], [q[1], 99.0, q[0]], [q[3], 98.0, q[2]])
        out.append(("/joint_states", "sensor_msgs/msg/JointState", msg, t + 1_000_000))
        out.append(("/command", "std_msgs/msg/Float64MultiArray",
                    float_array(ts, command_values(i)), t + 2_000_000))
        if i % 10 == 0:
            out.append(("/rosout_text", "std_msgs/msg/String", String(data=f"tick {i}"),
                        t + 3_000_000))
        if i == pad_at:
            out.append(("/padding", "std_msgs/msg/String", String(data="x" * 1_100_000),
                        t + 3_000_000))
        if i == OUT_OF_ORDER_AFTER:
            stale = T0_NS + 10 * PERIOD_NS + 5_000_000
            q = state_values(10.5)
            msg = joint_state(ts, stale, ["j2", "extra", "j1"], [q[1], 0.0, q[0]],
                              [q[3], 0.0, q[2]])
            out.append(("/joint_states", "sensor_msgs/msg/JointState", msg, t + 4_000_000))
    return out


def write_bag(path: Path, messages, storage: str = "mcap", compress: bool = False) -> Path:
    """Write [(topic, msgtype, message, receive_ns)] as a rosbag2 directory bag."""
    ts = build_typestore()
    writer = Writer(path, version=9, storage_plugin=STORAGES[storage])
    if compress:
        from rosbags.rosbag2 import CompressionFormat, CompressionMode
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    connections = {}
    with writer:
        for topic, msgtype, msg, receive_ns in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(connections[topic], receive_ns, ts.serialize_cdr(msg, msgtype))
    return path


def write_robot_bag(path: Path, storage: str = "mcap", compress: bool = False,
                    pad_at=None) -> Path:
    return write_bag(path, robot_bag_messages(build_typestore(), pad_at), storage, compress)


def storage_file(bag_dir: Path) -> Path:
    return next(p for p in bag_dir.iterdir() if p.suffix in (".mcap", ".db3"))
