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

Crash safety: at least every ``flush_period_s`` the open MCAP chunk is closed and written and
the file flushed to the OS (sqlite3: the transaction committed), so a recorder killed outright
(SIGKILL, OOM) loses at most that last period; the split it leaves in ``.partial/`` is turned
into a finished split by ``split_recovery`` on the next start. While it lives, the recorder holds
a session lock (``split_lock``) that tells its open split apart from abandoned ones.

Messages are written as serialized CDR bytes (the primary path: rclpy subscriptions with
``raw=True`` hand those over unchanged) or as rosbags message objects, serialized here.
"""

from __future__ import annotations

import itertools
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
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer
from rosbags.typesys.store import Typestore

from mbrl_ros.data.message_types import build_typestore
from mbrl_ros.data.split_lock import INDEX_SEPARATOR, LOCK_SUFFIX, SessionLock

logger = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"
"""Sub-folder of ``output_dir`` holding splits still being written."""
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
RECORD_OVERHEAD_BYTES = 31
"""Approximate per-message storage overhead counted towards ``max_split_bytes``."""
DEFAULT_FLUSH_PERIOD_S = 0.5
"""Default longest time a written message stays in memory only (what a SIGKILL can lose)."""
RawOrMessage = Union[bytes, bytearray, memoryview, object]
_SESSION_NUMBERS = itertools.count()
"""Tells apart recorders that one process starts within the same second."""


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
    flush_period_s: float = DEFAULT_FLUSH_PERIOD_S
    """At least this often the open MCAP chunk is closed and written and the file flushed to the
    OS (sqlite3: committed), however small the chunk: a killed recorder loses at most this."""
    fsync: bool = False
    """Also fsync on every flush (survives a power cut, not only a killed process; slower)."""

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
        if not self.flush_period_s > 0:
            raise ValueError(f"flush_period_s must be > 0, got {self.flush_period_s}")


@dataclass
class _Topic:
    msg_type: str
    qos: QosSpec
    msgdef: str
    type_hash: str


def flush_storage(storage: object, fsync: bool = False) -> None:
    """Put what a rosbags storage writer holds in memory into its file (see the module doc).

    MCAP: close the pending chunk (if it has records) and flush the file to the OS; sqlite3:
    commit the open transaction.
    """
    if isinstance(storage, McapWriter):
        if storage.chunk.bio.tell():
            storage.close_chunk()
        storage.bio.flush()
        if fsync:
            os.fsync(storage.bio.fileno())
    elif isinstance(storage, Sqlite3Writer):
        storage.conn.commit()
    else:
        raise TypeError(f"cannot flush storage writer {type(storage).__name__}")


class BagRecorder:
    """Records messages into rosbag2 splits; see the module docstring for the layout.

    Thread-safe: ``write`` may be called from several threads. Closing a split happens inside
    the ``write`` (or ``start_new_split``) that triggers it, under the same lock, so every
    message lands in exactly one split.

    Args:
        config: where and how to write.
        typestore: message definitions; None builds the standard one plus ``mbrl_ros`` msgs.
        on_split_closed: called with the final path of every split that closes.
        clock: monotonic seconds, for the flush period (tests pass a fake one).
    """

    def __init__(self, config: BagRecorderConfig, typestore: Optional[Typestore] = None,
                 on_split_closed: Optional[Callable[[Path], None]] = None,
                 clock: Callable[[], float] = time.monotonic):
        config.validate()
        self.config = config
        self.typestore = typestore or build_typestore(config.typestore or None)
        self.on_split_closed = on_split_closed
        """Called with the final path of every split that closes (e.g. to publish a topic)."""
        self.output_dir = Path(config.output_dir)
        (self.output_dir / PARTIAL_DIR).mkdir(parents=True, exist_ok=True)
        self.session = (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                        + f"{os.getpid():07d}{next(_SESSION_NUMBERS):03d}")
        self._session_name = f"{config.split_prefix}{INDEX_SEPARATOR}{self.session}"
        lock_path = self.output_dir / PARTIAL_DIR / f"{self._session_name}{LOCK_SUFFIX}"
        self._session_lock = SessionLock.try_acquire(lock_path)
        if self._session_lock is None:
            raise RuntimeError(f"session lock {lock_path} is held by another recorder")
        self.finished_splits: list[Path] = []
        """Final paths of the splits closed so far, in order."""
        self.messages_written = 0
        """Messages written over all splits."""
        self.flushes = 0
        """Flushes that put buffered messages into the file (see ``flush_period_s``)."""
        self._clock = clock
        self._topics: dict[str, _Topic] = {}
        self._lock = threading.Lock()
        self._writer: Optional[Writer] = None
        self._connections: dict = {}
        self._split_index = 0
        self._split_bytes = 0
        self._split_first_ns: Optional[int] = None
        self._unflushed = 0
        self._last_flush = clock()
        self._closed = False

    def add_topic(self, topic: str, msg_type: str, qos: Optional[QosSpec] = None,
                  msgdef: Optional[str] = None, type_hash: Optional[str] = None) -> None:
        """Declare a topic before its first write (optional; ``write`` declares on first use).

        Every split opened afterwards lists the declared topics, with or without messages.

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
                if msgdef is None:  # once per topic, not once per split
                    msgdef, _ = self.typestore.generate_msgdef(msg_type, ros_version=2)
                    type_hash = self.typestore.hash_rihs01(msg_type)
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
            self._unflushed += 1
            self._split_bytes += len(data) + RECORD_OVERHEAD_BYTES
            if self._split_first_ns is None:
                self._split_first_ns = timestamp_ns
            if self._split_bytes >= self.config.max_split_bytes:
                self._close_split()
            elif self._flush_due():
                self._flush()

    def flush(self) -> None:
        """Put every message written so far into the file now (see ``flush_period_s``)."""
        with self._lock:
            self._flush()

    def flush_if_due(self) -> bool:
        """Flush if ``flush_period_s`` has passed since the last flush; True if it did.

        ``write`` does this itself; call it when no message may come for a while (the
        ``BackgroundRecorder`` thread does).
        """
        with self._lock:
            if not self._flush_due():
                return False
            self._flush()
            return True

    def seconds_until_flush(self) -> float:
        """Time until the next flush is due (0 when it is due now)."""
        return max(0.0, self._last_flush + self.config.flush_period_s - self._clock())

    def start_new_split(self) -> Optional[Path]:
        """Close the open split now (e.g. at an episode reset); returns its final path."""
        with self._lock:
            return self._close_split()

    def close(self) -> Optional[Path]:
        """Close the open split and stop; returns the last split's final path (or None).

        Idempotent: later calls do nothing and return None.
        """
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            try:
                return self._close_split()
            finally:
                self._session_lock.release()

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed

    @property
    def current_split(self) -> Optional[Path]:
        """Folder of the split being written (under ``.partial/``), or None."""
        return None if self._writer is None else Path(self._writer.path)

    def __enter__(self) -> "BagRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _flush_due(self) -> bool:
        return self._clock() - self._last_flush >= self.config.flush_period_s

    def _flush(self) -> None:
        self._last_flush = self._clock()
        if self._writer is None or not self._unflushed:
            return
        flush_storage(self._writer.storage, self.config.fsync)
        self._unflushed = 0
        self.flushes += 1

    def _open_split(self) -> None:
        name = f"{self._session_name}{INDEX_SEPARATOR}{self._split_index:05d}"
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
        self._unflushed = 0
        for topic in self._topics:
            self._connection(topic)

    def _connection(self, topic: str):
        if topic not in self._connections:
            spec = self._topics[topic]
            self._connections[topic] = self._writer.add_connection(
                topic, spec.msg_type, msgdef=spec.msgdef, rihs01=spec.type_hash,
                offered_qos_profiles=[spec.qos.to_rosbags()])
        return self._connections[topic]

    def _close_split(self) -> Optional[Path]:
        writer, self._writer = self._writer, None
        self._unflushed = 0
        if writer is None:
            return None
        partial = Path(writer.path)
        if not any(writer.counts.values()):
            writer.abort()
            shutil.rmtree(partial, ignore_errors=True)
            return None
        try:
            writer.close()
            final = self.output_dir / partial.name
            os.replace(partial, final)
        except OSError as error:  # e.g. disk full: the next start recovers what is on disk
            logger.error("could not finish split %s (%s); left in %s for recovery",
                         partial.name, error, PARTIAL_DIR)
            writer.abort()
            return None
        self.finished_splits.append(final)
        logger.info("bag split closed: %s (%d messages)", final, sum(writer.counts.values()))
        if self.on_split_closed is not None:
            self.on_split_closed(final)
        return final
