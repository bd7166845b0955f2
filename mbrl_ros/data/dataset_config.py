"""Configuration of what is read from robot bags and how it is aligned into transitions."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

COMMAND_FIELDS = ("position", "velocity", "effort")
STAMP_SOURCES = ("header", "receive")
INTERPOLATIONS = ("linear", "previous")
TOPIC_FIELDS = ("state_topic", "command_topic", "goal_topic", "odom_topic", "imu_topic",
                "reset_topic")
"""Fields of :class:`RobotStreamsConfig` that name a topic."""


def resolve_topic_name(name: str, namespace: str = "/") -> str:
    """``name`` as the fully qualified topic a node in ``namespace`` would use (no remapping).

    An absolute name (``/joint_states``) stays as it is; a relative one (``joint_states``) is
    put in ``namespace`` (``/robot_a/joint_states``; in the root namespace ``/joint_states``).
    An empty name stays empty (an unset optional topic). A private name (``~/x``) needs a
    node's name: ValueError.
    """
    if not name or name.startswith("/"):
        return name
    if name.startswith("~"):
        raise ValueError(f"topic {name!r}: a private (~) name cannot name a recorded topic")
    prefix = namespace.strip("/")
    return f"/{prefix}/{name}" if prefix else f"/{name}"


@dataclass(frozen=True)
class RobotStreamsConfig:
    """Which topics and joints make up the robot's state and command streams in a bag."""

    joints: tuple[str, ...]
    """Joint names of the state, in state order; matched by name in each JointState message."""
    state_topic: str = "joint_states"
    """sensor_msgs/msg/JointState topic giving joint positions and velocities. Topic names may
    be relative (resolved in the reading node's namespace; offline, in the root namespace or
    the one given) or absolute (matched as written)."""
    command_topic: str = "command"
    """Command topic: std_msgs/msg/Float64MultiArray (entries in ``command_joints`` order),
    sensor_msgs/msg/JointState or trajectory_msgs/msg/JointTrajectory (matched by name)."""
    command_joints: tuple[str, ...] = ()
    """Joint names of the command, in action order; empty means the same as ``joints``."""
    command_field: str = "effort"
    """JointState field / first JointTrajectory point field: position, velocity or effort."""
    goal_topic: str = ""
    """Optional geometry_msgs/msg/PoseStamped goal topic; empty to ignore."""
    odom_topic: str = ""
    """Optional nav_msgs/msg/Odometry base state (legged robots); empty to ignore."""
    imu_topic: str = ""
    """Optional sensor_msgs/msg/Imu base state (legged robots); empty to ignore."""
    reset_topic: str = ""
    """Optional episode reset marker topic (any type; std_msgs/msg/Bool counts only true)."""
    stamp_source: str = "header"
    """"header": use header stamps (a zero stamp falls back to receive time, counted);
    "receive": use the bag's receive time for every message."""
    typestore: str = ""
    """rosbags typestore name (e.g. "ROS2_KILTED"); empty picks the newest available."""

    @property
    def action_joints(self) -> tuple[str, ...]:
        """Joint names of the action vector, in order."""
        return self.command_joints or self.joints

    def resolved(self, resolve: Callable[[str], str]) -> "RobotStreamsConfig":
        """A copy with every topic name set replaced by ``resolve(name)``, e.g. a node's
        ``resolve_topic_name`` or ``lambda t: resolve_topic_name(t, "/robot_a")``."""
        return dataclasses.replace(self, **{name: resolve(getattr(self, name))
                                            for name in TOPIC_FIELDS if getattr(self, name)})

    def validate(self) -> None:
        """Raise ValueError if the configuration is inconsistent."""
        if not self.joints:
            raise ValueError("RobotStreamsConfig.joints must name at least one joint")
        for name, joints in (("joints", self.joints), ("command_joints", self.command_joints)):
            if len(set(joints)) != len(joints):
                raise ValueError(f"RobotStreamsConfig.{name} has duplicates: {list(joints)}")
        if not self.state_topic or not self.command_topic:
            raise ValueError("RobotStreamsConfig.state_topic and command_topic are required")
        if self.command_field not in COMMAND_FIELDS:
            raise ValueError(f"command_field {self.command_field!r} not in {COMMAND_FIELDS}")
        if self.stamp_source not in STAMP_SOURCES:
            raise ValueError(f"stamp_source {self.stamp_source!r} not in {STAMP_SOURCES}")
        topics = [t for t in (self.state_topic, self.command_topic, self.goal_topic,
                              self.odom_topic, self.imu_topic, self.reset_topic) if t]
        if len(set(topics)) != len(topics):
            raise ValueError(f"RobotStreamsConfig topics must differ: {topics}")


@dataclass(frozen=True)
class AlignmentConfig:
    """How state and command streams become transitions at the control rate."""

    control_rate_hz: float = 100.0
    """Control rate; one transition per control period."""
    interpolation: str = "linear"
    """State resampling at control ticks: "linear" between neighbours, or "previous" sample."""
    state_tolerance_s: float = 0.02
    """Largest distance from a tick to the state sample(s) used for it; farther: tick dropped."""
    gap_threshold_s: float = 0.1
    """A time jump between consecutive state samples above this splits the episode."""
    command_max_age_s: float = 0.05
    """A command older than this at a tick is stale; the transition is dropped."""
    command_latency_s: float = 0.0
    """The action of tick t is the last command stamped at or before t + this latency."""
    reset_jump_threshold: float = math.inf
    """Largest per-joint position change between ticks; a larger jump is taken as a reset."""
    min_episode_transitions: int = 1
    """Episodes with fewer transitions are dropped (counted)."""
    angle_wrap: tuple[int, ...] = ()
    """Joints (state indices of their positions) whose position is a wrapping angle (the
    URDF's continuous joints; the trainer adds them by the same rule as the models'): their
    samples are unwrapped along each recording before resampling, so a driver that reports
    them within [-pi, pi) gives the same transitions as one that lets them accumulate (no
    reset jump, no interpolation across the wrap)."""

    @property
    def period_ns(self) -> int:
        """Control period in integer nanoseconds."""
        return int(round(1e9 / self.control_rate_hz))

    def validate(self) -> None:
        """Raise ValueError if the configuration is inconsistent."""
        if not (self.control_rate_hz > 0 and math.isfinite(self.control_rate_hz)):
            raise ValueError(f"control_rate_hz must be positive, got {self.control_rate_hz}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} not in {INTERPOLATIONS}")
        for name in ("state_tolerance_s", "gap_threshold_s", "command_max_age_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.command_latency_s < 0:
            raise ValueError(f"command_latency_s must be >= 0, got {self.command_latency_s}")
        if self.gap_threshold_s < self.state_tolerance_s:
            raise ValueError(f"gap_threshold_s ({self.gap_threshold_s}) must be >= "
                             f"state_tolerance_s ({self.state_tolerance_s})")
        if not self.reset_jump_threshold > 0:
            raise ValueError("reset_jump_threshold must be positive (inf disables it)")
        if self.min_episode_transitions < 1:
            raise ValueError("min_episode_transitions must be >= 1")
        if min(self.angle_wrap, default=0) < 0 or len(set(self.angle_wrap)) != len(
                self.angle_wrap):
            raise ValueError(f"angle_wrap must be distinct joint indices >= 0, "
                             f"got {self.angle_wrap}")
