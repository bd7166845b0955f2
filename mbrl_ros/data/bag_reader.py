"""Read robot state, command, goal, base and reset streams from rosbag2 bags (ROS-free).

Joints are matched by name in every message; the configured order is the output order. Each
bag becomes one ``Recording``; nothing is merged across bags (their clocks may differ).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
from rosbags.typesys.store import Typestore

from mbrl_ros.data.bag_storage import RawBag, read_raw
from mbrl_ros.data.dataset_config import RobotStreamsConfig, resolve_topic_name
from mbrl_ros.data.message_types import build_typestore, deserialize, register_from_definition

logger = logging.getLogger(__name__)

JOINT_STATE = "sensor_msgs/msg/JointState"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
ODOMETRY = "nav_msgs/msg/Odometry"
IMU = "sensor_msgs/msg/Imu"
BOOL = "std_msgs/msg/Bool"
COMMAND_TYPES = (FLOAT64_ARRAY, JOINT_STATE, JOINT_TRAJECTORY)
TRAJECTORY_FIELDS = {"position": "positions", "velocity": "velocities", "effort": "effort"}
GOAL_NAMES = ("px", "py", "pz", "qx", "qy", "qz", "qw")
ODOM_NAMES = ("px", "py", "pz", "qx", "qy", "qz", "qw", "vx", "vy", "vz", "wx", "wy", "wz")
IMU_NAMES = ("qx", "qy", "qz", "qw", "wx", "wy", "wz", "ax", "ay", "az")


@dataclass
class TimeSeries:
    """Samples of one stream, in the order they were stored."""

    stamps_ns: np.ndarray
    """[num_samples] int64 stamps (header or receive time, see the config)."""
    values: np.ndarray
    """[num_samples, dim] float64 values."""

    def __len__(self) -> int:
        return len(self.stamps_ns)


@dataclass
class ReadReport:
    """What reading one bag found, kept and dropped."""

    path: Path
    topics: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Every topic of the bag: ``(type, message_count)``."""
    damage: list[str] = field(default_factory=list)
    """Problems found in the storage (empty for a healthy bag)."""
    lost: dict[str, int] = field(default_factory=dict)
    """Per topic: messages that exist in the bag but could not be read (damage)."""
    lost_unknown: bool = False
    """True when an uncountable tail of the bag was lost (a truncated file)."""
    dropped: Counter = field(default_factory=Counter)
    """``"<stream>/<reason>"`` -> messages read but not used (undecodable, missing_joint, ...)."""
    stamp_fallbacks: Counter = field(default_factory=Counter)
    """Per stream: messages whose zero header stamp was replaced by the receive time."""


@dataclass
class Recording:
    """All configured streams of one bag."""

    path: Path
    state: TimeSeries
    """[num_states, 2 * num_joints]: joint positions then velocities, in config joint order."""
    command: TimeSeries
    """[num_commands, num_action_joints]: commands in ``config.action_joints`` order."""
    goal: Optional[TimeSeries]
    """[num_goals, 7]: position xyz, orientation quaternion xyzw; None without a goal topic."""
    odom: Optional[TimeSeries]
    """[num_odom, 13]: position xyz, quaternion xyzw, linear and angular velocity (as stored)."""
    imu: Optional[TimeSeries]
    """[num_imu, 10]: quaternion xyzw, angular velocity xyz, linear acceleration xyz."""
    resets_ns: np.ndarray
    """[num_resets] int64 stamps of episode reset markers."""
    report: ReadReport


@dataclass
class RobotStreams:
    """Streams of every bag read, with the names of the state and action entries."""

    config: RobotStreamsConfig
    recordings: list[Recording]
    joint_state_names: tuple[str, ...]
    """Names of the ``Recording.state`` columns: ``q/<joint>`` then ``qd/<joint>``."""
    action_names: tuple[str, ...]
    """Names of the ``Recording.command`` columns: the action joints."""

    @property
    def reports(self) -> list[ReadReport]:
        return [r.report for r in self.recordings]


def _stamp(msg, receive_ns: int, use_header: bool, fallbacks: Counter, stream: str) -> int:
    if use_header:
        stamp = msg.header.stamp
        value = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
        if value != 0:
            return value
        fallbacks[stream] += 1
    return receive_ns


class _Decoder:
    """Deserializes one stream and turns each message into a row, counting every drop."""

    def __init__(self, typestore: Typestore, bag: RawBag, report: ReadReport, stream: str,
                 topic: str, use_header: bool):
        self.typestore, self.bag, self.report = typestore, bag, report
        self.stream, self.topic, self.use_header = stream, topic, use_header
        self.msgtype = bag.topics[topic].msgtype

    def rows(self, extract: Callable, dim: int, has_header: bool = True) -> TimeSeries:
        """Apply ``extract(msg) -> row or reason string`` to every message of the topic."""
        info = self.bag.topics[self.topic]
        if not register_from_definition(self.typestore, self.msgtype, info.msgdef_format,
                                        info.msgdef):
            raise ValueError(f"{self.bag.path}: type {self.msgtype} of {self.topic} is unknown "
                             "to the typestore and the bag has no usable definition")
        stamps, values = [], []
        use_header = self.use_header and has_header
        for receive_ns, data in self.bag.messages.get(self.topic, []):
            try:
                msg = deserialize(self.typestore, data, self.msgtype)
            except Exception:  # noqa: BLE001 - corrupt bytes: count, do not crash
                self.report.dropped[f"{self.stream}/undecodable"] += 1
                continue
            row = extract(msg)
            if isinstance(row, str):
                self.report.dropped[f"{self.stream}/{row}"] += 1
                continue
            stamps.append(_stamp(msg, receive_ns, use_header, self.report.stamp_fallbacks,
                                 self.stream) if use_header else receive_ns)
            values.append(row)
        return TimeSeries(np.asarray(stamps, dtype=np.int64),
                          np.asarray(values, dtype=np.float64).reshape(len(values), dim))


class _NameIndex:
    """Maps a message's joint-name list to the configured order (cached per name list)."""

    def __init__(self, joints: Sequence[str]):
        self.joints = tuple(joints)
        self.cache: dict[tuple, Optional[np.ndarray]] = {}
        self.seen: set[str] = set()

    def __call__(self, names) -> Optional[np.ndarray]:
        key = tuple(names)
        if key not in self.cache:
            self.seen.update(key)
            lookup = {name: i for i, name in enumerate(key)}
            found = [lookup.get(j) for j in self.joints]
            self.cache[key] = None if None in found else np.asarray(found, dtype=np.int64)
        return self.cache[key]

    def check(self, path: Path, topic: str) -> None:
        """Raise if a configured joint never appeared on the topic."""
        missing = [j for j in self.joints if j not in self.seen]
        if self.seen and missing:
            raise ValueError(f"{path}: joints {missing} never appear on {topic}; "
                             f"joint names seen there: {sorted(self.seen)}")


def _joint_state_rows(index: _NameIndex, fields: Sequence[str]) -> Callable:
    def extract(msg):
        order = index(msg.name)
        if order is None:
            return "missing_joint"
        parts = []
        for name in fields:
            values = getattr(msg, name)
            if len(values) != len(msg.name):
                return f"no_{name}"
            parts.append(values[order])
        return np.concatenate(parts)
    return extract


def _command_extractor(msgtype: str, config: RobotStreamsConfig,
                       index: _NameIndex) -> Callable:
    if msgtype == FLOAT64_ARRAY:
        size = len(config.action_joints)
        return lambda msg: msg.data if len(msg.data) == size else "wrong_size"
    if msgtype == JOINT_STATE:
        return _joint_state_rows(index, [config.command_field])
    attribute = TRAJECTORY_FIELDS[config.command_field]

    def extract(msg):
        order = index(msg.joint_names)
        if order is None:
            return "missing_joint"
        if not msg.points:
            return "no_points"
        values = getattr(msg.points[0], attribute)
        if len(values) != len(msg.joint_names):
            return f"no_{attribute}"
        return values[order]
    return extract


def _pose(pose) -> list[float]:
    return [pose.position.x, pose.position.y, pose.position.z, pose.orientation.x,
            pose.orientation.y, pose.orientation.z, pose.orientation.w]


def _vec(v) -> list[float]:
    return [v.x, v.y, v.z]


def _describe(bag: RawBag) -> str:
    lines = [f"  {t} [{i.msgtype}] {i.count} messages" for t, i in sorted(bag.topics.items())]
    return "\n".join(lines) if lines else "  (no topics)"


def _require(bag: RawBag, topic: str, types: Sequence[str], role: str) -> None:
    if topic not in bag.topics:
        raise ValueError(f"{bag.path}: {role} topic {topic!r} not in the bag; it contains:\n"
                         f"{_describe(bag)}")
    msgtype = bag.topics[topic].msgtype
    if msgtype not in types:
        raise ValueError(f"{bag.path}: {role} topic {topic!r} has type {msgtype}, "
                         f"expected one of {list(types)}")


def read_recording(path: Union[str, Path], config: RobotStreamsConfig,
                   typestore: Optional[Typestore] = None) -> Recording:
    """Read one bag (directory, ``.mcap`` or ``.db3``); see ``read_robot_streams``."""
    config = config.resolved(resolve_topic_name)
    config.validate()
    typestore = typestore or build_typestore(config.typestore or None)
    optional = {"goal": config.goal_topic, "odom": config.odom_topic, "imu": config.imu_topic,
                "reset": config.reset_topic}
    wanted = {config.state_topic, config.command_topic} | {t for t in optional.values() if t}
    bag = read_raw(Path(path), wanted)
    report = ReadReport(Path(path), {t: (i.msgtype, i.count) for t, i in bag.topics.items()},
                        list(bag.damage), dict(bag.lost), bag.lost_unknown)
    _require(bag, config.state_topic, [JOINT_STATE], "state")
    _require(bag, config.command_topic, COMMAND_TYPES, "command")
    for role, topic, types in (("goal", config.goal_topic, [POSE_STAMPED]),
                               ("odom", config.odom_topic, [ODOMETRY]),
                               ("imu", config.imu_topic, [IMU])):
        if topic:
            _require(bag, topic, types, role)
    if config.reset_topic and config.reset_topic not in bag.topics:
        _require(bag, config.reset_topic, [], "reset")
    use_header = config.stamp_source == "header"

    def decoder(stream: str, topic: str) -> _Decoder:
        return _Decoder(typestore, bag, report, stream, topic, use_header)

    state_index = _NameIndex(config.joints)
    state = decoder("state", config.state_topic).rows(
        _joint_state_rows(state_index, ["position", "velocity"]), 2 * len(config.joints))
    state_index.check(bag.path, config.state_topic)
    command_decoder = decoder("command", config.command_topic)
    command_index = _NameIndex(config.action_joints)
    command = command_decoder.rows(
        _command_extractor(command_decoder.msgtype, config, command_index),
        len(config.action_joints), has_header=command_decoder.msgtype != FLOAT64_ARRAY)
    command_index.check(bag.path, config.command_topic)
    goal = odom = imu = None
    if config.goal_topic:
        goal = decoder("goal", config.goal_topic).rows(lambda m: _pose(m.pose), 7)
    if config.odom_topic:
        odom = decoder("odom", config.odom_topic).rows(
            lambda m: _pose(m.pose.pose) + _vec(m.twist.twist.linear)
            + _vec(m.twist.twist.angular), 13)
    if config.imu_topic:
        imu = decoder("imu", config.imu_topic).rows(
            lambda m: [m.orientation.x, m.orientation.y, m.orientation.z, m.orientation.w]
            + _vec(m.angular_velocity) + _vec(m.linear_acceleration), 10)
    resets = np.zeros(0, dtype=np.int64)
    if config.reset_topic:
        reset_decoder = decoder("reset", config.reset_topic)
        is_bool = reset_decoder.msgtype == BOOL
        has_header = "header" in [name for name, _ in
                                  typestore.fielddefs.get(reset_decoder.msgtype, ((), []))[1]]
        resets = reset_decoder.rows(lambda m: "false" if is_bool and not m.data else [],
                                    0, has_header=has_header).stamps_ns
        report.dropped.pop("reset/false", None)
    if report.damage or report.dropped:
        logger.warning("%s: damage %s, lost %s%s, dropped %s", path, report.damage, report.lost,
                       " + unknown tail" if report.lost_unknown else "", dict(report.dropped))
    return Recording(Path(path), state, command, goal, odom, imu, resets, report)


def read_robot_streams(paths: Sequence[Union[str, Path]], config: RobotStreamsConfig,
                       typestore: Optional[Typestore] = None) -> RobotStreams:
    """Read the configured streams from every bag in ``paths``.

    Args:
        paths: bag directories (with or without ``metadata.yaml``) or single ``.mcap`` /
            ``.db3`` files; each becomes one ``Recording``.
        config: topics, joints and stamp source. A relative topic name matches the bag's topic
            in the root namespace (``joint_states``: ``/joint_states``); resolve it first for
            another namespace (:meth:`RobotStreamsConfig.resolved`).
        typestore: a rosbags typestore; None builds the standard one plus ``mbrl_ros`` msgs.

    Raises:
        ValueError: a configured topic or joint is missing (the message lists what the bag has),
            a topic has the wrong type, or ``paths`` is empty.
        FileNotFoundError: a path does not exist.

    Damaged storage never raises: it is read up to the damage; see ``ReadReport``.
    """
    if not paths:
        raise ValueError("read_robot_streams needs at least one bag path")
    config = config.resolved(resolve_topic_name)
    config.validate()
    typestore = typestore or build_typestore(config.typestore or None)
    recordings = [read_recording(p, config, typestore) for p in paths]
    names = tuple(f"q/{j}" for j in config.joints) + tuple(f"qd/{j}" for j in config.joints)
    return RobotStreams(config, recordings, names, tuple(config.action_joints))
