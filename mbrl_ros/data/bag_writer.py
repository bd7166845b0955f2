"""Write rosbag2 bags (MCAP by default, sqlite3 optional) in closed, finished splits (ROS-free).

Layout of ``output_dir``::

    output_dir/
      .partial/<name>/          split being written (rosbag2 directory, no metadata.yaml yet)
      <name>/                   finished split: metadata.yaml + <name>.mcap, a complete bag
      <name>/ ...

A split is written under ``.partial/`` and renamed into ``output_dir`` only after its
metadata is written, so anything visible at the top level is complete (``ros2 bag info``,
``ros2 bag play`` and Foxglove read each split on its own). Names sort chronologically:
``<prefix>_<session UTC time>_<split index>``. A split closes when it exceeds
``max_split_bytes`` or ``max_split_duration_s``, or when ``start_new_split()`` is called
(e.g. at an episode reset).

Messages are written as serialized CDR bytes (the primary path: rclpy subscriptions with
``raw=True`` hand those over unchanged) or as rosbags message objects, serialized here.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from mbrl_ros.data.message_types import build_typestore

logger = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"
"""Sub-folder of ``output_dir`` holding splits still being written."""
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
RECORD_OVERHEAD_BYTES = 31
"""Approximate per-message storage overhead counted towards ``max_split_bytes``."""
RawOrMessage = Union[bytes, bytearray, memoryview, object]


@dataclass(frozen=True)
class QosSpec:
    """Offered QoS of a recorded topic, stored in the bag so playback can offer the same."""

    reliability: str = "reliable"
    """"reliable" or "best_effort"."""
    durability: str = "volatile"
    """"volatile" or "transient_local"."""
    history: str = "keep_last"
    """"keep_last" or "keep_all"."""
    depth: int = 10
    """History depth for keep_last."""

    def validate(self) -> None:
        """Raise ValueError on an unknown policy name or a bad depth."""
        for name, enum in (("reliability", QosReliability), ("durability", QosDurability),
                           ("history", QosHistory)):
            if getattr(self, name).upper() not in enum.__members__:
                raise ValueError(f"QosSpec.{name} {getattr(self, name)!r} not in "
                                 f"{[m.lower() for m in enum.__members__]}")
        if self.depth < 0:
            raise ValueError(f"QosSpec.depth must be >= 0, got {self.depth}")

    def to_rosbags(self) -> Qos:
        """The rosbags ``Qos`` tuple written into the bag metadata."""
        zero = QosTime(0, 0)
        return Qos(QosHistory[self.history.upper()], self.depth,
                   QosReliability[self.reliability.upper()],
                   QosDurability[self.durability.upper()], zero, zero,
                   QosLiveliness.AUTOMATIC, zero, False)


@dataclass(frozen=True)
class BagRecorderConfig:
    """Where and how the recorder writes bag splits."""

    output_dir: str
    """Folder receiving finished splits (and ``.partial/`` for the open one)."""
    storage: str = "mcap"
    """"mcap" (default; Foxglove, ros2 bag) or "sqlite3"."""
    split_prefix: str = "robot"
    """Prefix of split folder names."""
    max_split_bytes: int = 256 * 1024 * 1024
    """Close the split once its messages exceed this many bytes."""
    max_split_duration_s: float = 300.0
    """Close the split once it spans this many seconds of message time."""
    bag_version: int = 9
    """rosbag2 metadata version (8 or 9; 9 is read by Jazzy and newer)."""
    typestore: str = ""
    """rosbags typestore name for message definitions and type hashes; empty: newest."""

    def validate(self) -> None:
        """Raise ValueError if the configuration is inconsistent."""
        if not self.output_dir:
            raise ValueError("BagRecorderConfig.output_dir is required")
        if self.storage not in STORAGES:
            raise ValueError(f"storage {self.storage!r} not in {list(STORAGES)}")
        if not self.split_prefix or os.sep in self.split_prefix or \
                self.split_prefix.startswith("."):
            raise ValueError(f"split_prefix {self.split_prefix!r} must be a plain name")
        if self.max_split_bytes <= 0 or not self.max_split_duration_s > 0:
            raise ValueError("max_split_bytes and max_split_duration_s must be positive")
        if self.bag_version not in (8, 9):
            raise ValueError(f"bag_version must be 8 or 9, got {self.bag_version}")


@dataclass
class _Topic:
    msg_type: str
    qos: QosSpec
    msgdef: Optional[str]
    type_hash: Optional[str]


class BagRecorder:
    """Records messages into rosbag2 splits; see the module docstring for the layout.

    Thread-safe: ``write`` may be called from several callback threads.
    """

    def __init__(self, config: BagRecorderConfig, typestore: Optional[Typestore] = None,
                 on_split_closed: Optional[Callable[[Path], None]] = None):
        config.validate()
        self.config = config
        self.typestore = typestore or build_typestore(config.typestore or None)
        self.on_split_closed = on_split_closed
        """Called with the final path of every split that closes (e.g. to publish a topic)."""
        self.output_dir = Path(config.output_dir)
        (self.output_dir / PARTIAL_DIR).mkdir(parents=True, exist_ok=True)
        self.session = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"{os.getpid():07d}"
        self.finished_splits: list[Path] = []
        """Final paths of the splits closed so far, in order."""
        self.messages_written = 0
        """Messages written over all splits."""
        self._topics: dict[str, _Topic] = {}
        self._lock = threading.Lock()
        self._writer: Optional[Writer] = None
        self._connections: dict = {}
        self._split_index = 0
        self._split_bytes = 0
        self._split_first_ns: Optional[int] = None
        self._closed = False

    def add_topic(self, topic: str, msg_type: str, qos: Optional[QosSpec] = None,
                  msgdef: Optional[str] = None, type_hash: Optional[str] = None) -> None:
        """Declare a topic before its first write (optional; ``write`` declares on first use).

        Args:
            topic: topic name.
            msg_type: ROS type, e.g. ``sensor_msgs/msg/JointState``.
            qos: offered QoS to store; default reliable, volatile, keep_last 10.
            msgdef, type_hash: definition text and ``RIHS01_...`` hash, for types the
                typestore does not know; both or neither.
        """
        qos = qos or QosSpec()
        qos.validate()
        if (msgdef is None) != (type_hash is None):
            raise ValueError("pass both msgdef and type_hash, or neither")
        if msgdef is None and msg_type not in self.typestore.fielddefs:
            raise ValueError(f"message type {msg_type!r} is unknown to the typestore; register "
                             "it or pass msgdef and type_hash")
        with self._lock:
            known = self._topics.get(topic)
            if known is not None and known.msg_type != msg_type:
                raise ValueError(f"topic {topic} already recorded as {known.msg_type}, "
                                 f"not {msg_type}")
            if known is None:
                self._topics[topic] = _Topic(msg_type, qos, msgdef, type_hash)

    def write(self, topic: str, msg_type: str, message: RawOrMessage, timestamp_ns: int) -> None:
        """Write one message.

        Args:
            topic: topic name.
            msg_type: ROS type name of the message.
            message: serialized CDR (bytes / bytearray / memoryview, e.g. from an rclpy
                ``raw=True`` subscription) or a rosbags message object of ``msg_type``.
            timestamp_ns: receive time stored with the message (ns since the epoch).
        """
        if isinstance(message, (bytes, bytearray, memoryview)):
            data = bytes(message)
        else:
            actual = getattr(message, "__msgtype__", None)
            if actual != msg_type:
                raise ValueError(f"message on {topic} is {actual or type(message).__name__}, "
                                 f"not {msg_type}; pass CDR bytes or a rosbags message")
            data = bytes(self.typestore.serialize_cdr(message, msg_type))
        if topic not in self._topics:
            self.add_topic(topic, msg_type)
        timestamp_ns = int(timestamp_ns)
        with self._lock:
            if self._closed:
                raise RuntimeError("BagRecorder is closed")
            if self._topics[topic].msg_type != msg_type:
                raise ValueError(f"topic {topic} is recorded as {self._topics[topic].msg_type}, "
                                 f"not {msg_type}")
            if self._writer is not None and self._split_first_ns is not None and (
                    timestamp_ns - self._split_first_ns
                    >= self.config.max_split_duration_s * 1e9):
                self._close_split()
            if self._writer is None:
                self._open_split()
            connection = self._connection(topic)
            self._writer.write(connection, timestamp_ns, data)
            self.messages_written += 1
            self._split_bytes += len(data) + RECORD_OVERHEAD_BYTES
            if self._split_first_ns is None:
                self._split_first_ns = timestamp_ns
            if self._split_bytes >= self.config.max_split_bytes:
                self._close_split()

    def start_new_split(self) -> Optional[Path]:
        """Close the open split now (e.g. at an episode reset); returns its final path."""
        with self._lock:
            return self._close_split()

    def close(self) -> Optional[Path]:
        """Close the open split and stop; returns the last split's final path (or None)."""
        with self._lock:
            self._closed = True
            return self._close_split()

    @property
    def current_split(self) -> Optional[Path]:
        """Folder of the split being written (under ``.partial/``), or None."""
        return None if self._writer is None else Path(self._writer.path)

    def __enter__(self) -> "BagRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open_split(self) -> None:
        name = f"{self.config.split_prefix}_{self.session}_{self._split_index:05d}"
        self._split_index += 1
        path = self.output_dir / PARTIAL_DIR / name
        if path.exists():
            shutil.rmtree(path)
        self._writer = Writer(path, version=self.config.bag_version,
                              storage_plugin=STORAGES[self.config.storage])
        self._writer.open()
        self._connections = {}
        self._split_bytes = 0
        self._split_first_ns = None

    def _connection(self, topic: str):
        if topic not in self._connections:
            spec = self._topics[topic]
            self._connections[topic] = self._writer.add_connection(
                topic, spec.msg_type, typestore=self.typestore, msgdef=spec.msgdef,
                rihs01=spec.type_hash, offered_qos_profiles=[spec.qos.to_rosbags()])
        return self._connections[topic]

    def _close_split(self) -> Optional[Path]:
        writer, self._writer = self._writer, None
        if writer is None:
            return None
        partial = Path(writer.path)
        if not any(writer.counts.values()):
            writer.abort()
            shutil.rmtree(partial, ignore_errors=True)
            return None
        writer.close()
        final = self.output_dir / partial.name
        os.replace(partial, final)
        self.finished_splits.append(final)
        logger.info("bag split closed: %s (%d messages)", final, sum(writer.counts.values()))
        if self.on_split_closed is not None:
            self.on_split_closed(final)
        return final
