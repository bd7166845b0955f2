"""What the raw bag readers return: topics, serialized messages, and what was damaged.

Shared by the regular reader (``bag_storage``) and the salvage readers (``salvage_mcap``,
``salvage_sqlite``), which import this module and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rosbags.interfaces import MessageDefinitionFormat

STORAGE_SUFFIXES = (".mcap", ".db3")
"""File suffixes of rosbag2 storage files (MCAP and sqlite3)."""
UNKNOWN_TOPIC = "<unknown topic>"
"""Key of ``RawBag.lost`` for rows of a damaged range whose topic cannot be known."""


@dataclass
class TopicInfo:
    """What one topic of a bag holds."""

    msgtype: str
    """ROS type name, e.g. ``sensor_msgs/msg/JointState``."""
    msgdef_format: MessageDefinitionFormat = MessageDefinitionFormat.NONE
    """Format of ``msgdef`` (MSG, IDL or NONE when the bag stores none)."""
    msgdef: str = ""
    """Message definition text stored in the bag (may be empty)."""
    count: int = 0
    """Messages of this topic according to the bag's index (or counted while reading)."""
    offered_qos: str = ""
    """Offered QoS profiles as stored (rosbag2 YAML text); empty when unknown."""


@dataclass
class RawBag:
    """Serialized messages of the requested topics plus what went wrong reading them."""

    path: Path
    topics: dict[str, TopicInfo] = field(default_factory=dict)
    """All topics of the bag."""
    messages: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    """Per requested topic: ``(receive_time_ns, cdr_bytes)`` in storage order."""
    damage: list[str] = field(default_factory=list)
    """One line per problem found (truncation, corrupt chunk, unreadable page)."""
    lost: dict[str, int] = field(default_factory=dict)
    """Per topic: messages known to exist that could not be read."""
    lost_unknown: bool = False
    """True when data past the damage could not be counted (e.g. a truncated file)."""
    unrecognized: list[str] = field(default_factory=list)
    """Storage files that are not a bag at all (bad magic, no topics table, missing)."""

    @property
    def salvaged(self) -> bool:
        """True when the bag was damaged and read by the salvage readers."""
        return bool(self.damage)


def wants(wanted_topics: Optional[set[str]], topic: str) -> bool:
    """True when ``topic`` is requested; ``wanted_topics`` None requests every topic."""
    return wanted_topics is None or topic in wanted_topics
