"""Turn splits left in ``.partial/`` by a recorder that died into finished splits.

A recorder killed outright leaves its open split in ``.partial/``: storage written up to the last
flush (``BagRecorderConfig.flush_period_s``), no summary, no ``metadata.yaml``. The trainer only
reads finished splits, so ``recover_abandoned_splits`` (the logger runs it when it starts) reads
each abandoned split with the salvage readers, writes what they recovered as a new, complete
rosbag2 split (same storage, topics, types, QoS and receive times; what was recovered and lost in
``metadata.yaml``'s ``custom_data``), moves it into the data directory under the split's own name
(so it sorts where it was recorded) and only then removes the original. Splits of a live
recorder (session lock held, see ``split_lock``) are left alone. A split from which nothing can
be read is moved to ``.unrecoverable/`` with an error in the log, never deleted; one that holds
no data at all (killed before its first flush) is removed with a warning.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rosbags.rosbag2 import Writer
from rosbags.rosbag2.metadata import parse_qos
from rosbags.typesys.store import Typestore

from mbrl_ros.data.bag_storage import RawBag, TopicInfo, read_raw, storage_files
from mbrl_ros.data.bag_writer import PARTIAL_DIR, STORAGES
from mbrl_ros.data.message_types import build_typestore, register_from_definition
from mbrl_ros.data.split_lock import LOCK_SUFFIX, SessionLock, session_lock_path

logger = logging.getLogger(__name__)

RECOVERING_DIR = ".recovering"
"""Hidden folder of ``output_dir`` where a recovered split is written before its rename."""
UNRECOVERABLE_DIR = ".unrecoverable"
"""Hidden folder of ``output_dir`` that keeps splits nothing could be read from."""
RECOVERED_KEY = "mbrl_ros.recovered"
"""``custom_data`` key of a recovered split's metadata: JSON with what was kept and lost."""
STORAGE_BY_SUFFIX = {".mcap": "mcap", ".db3": "sqlite3"}
"""Recorder storage name of each storage file suffix."""
BAG_VERSION = 9
"""rosbag2 metadata version of recovered splits."""


@dataclass(frozen=True)
class RecoveryResult:
    """What happened to one abandoned split."""

    source: Path
    """The split folder under ``.partial/``."""
    outcome: str
    """"recovered", "already_finished" (an earlier recovery was cut short), "empty" (removed),
    "unrecoverable" (moved to ``.unrecoverable/``) or "failed" (an error; left in place)."""
    path: Optional[Path] = None
    """The finished split (recovered / already_finished) or where it was moved to."""
    messages: int = 0
    """Messages in the finished split."""
    damage: tuple[str, ...] = ()
    """What the salvage readers found."""
    lost: dict[str, int] = field(default_factory=dict)
    """Per topic: messages known to exist that could not be read."""
    lost_unknown: bool = False
    """True when a tail of unknown size was lost: always for a recovered split (what its
    recorder had not flushed when it died)."""


def recover_abandoned_splits(output_dir: Path,
                             typestore: Optional[Typestore] = None) -> list[RecoveryResult]:
    """Recover every abandoned split of ``output_dir`` (see the module docstring).

    Each session's lock is held while its splits are recovered, so two loggers starting at
    once do not recover the same split; stale lock files of dead sessions are removed.
    """
    output_dir = Path(output_dir)
    folder = output_dir / PARTIAL_DIR
    if not folder.is_dir():
        return []
    typestore = typestore or build_typestore()
    sessions: dict[Path, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            sessions.setdefault(session_lock_path(path), []).append(path)
    for lock_path in folder.glob(f"*{LOCK_SUFFIX}"):
        sessions.setdefault(lock_path, [])
    results = []
    for lock_path, splits in sorted(sessions.items()):
        lock = SessionLock.try_acquire(lock_path, create=False)
        if lock is None and lock_path.exists():
            continue  # its recorder is alive
        try:
            for split in splits:
                results.append(_recover_or_report(split, output_dir, typestore))
        finally:
            if lock is not None:
                lock.release(remove=True)
    return results


def _recover_or_report(partial: Path, output_dir: Path, typestore: Typestore) -> RecoveryResult:
    """``recover_split``, but a failure leaves the split where it is and is reported."""
    try:
        return recover_split(partial, output_dir, typestore)
    except Exception as error:  # noqa: BLE001 - one bad split must not stop the logger's start
        logger.error("could not recover abandoned split %s (%s: %s); left in %s", partial.name,
                     type(error).__name__, error, PARTIAL_DIR)
        return RecoveryResult(partial, "failed", partial, damage=(f"{error}",))


def recover_split(partial: Path, output_dir: Path,
                  typestore: Optional[Typestore] = None) -> RecoveryResult:
    """Turn one abandoned split folder into a finished split of ``output_dir``."""
    partial, output_dir = Path(partial), Path(output_dir)
    final = output_dir / partial.name
    if (final / "metadata.yaml").is_file():
        logger.warning("split %s was recovered before; removing its leftover", partial.name)
        shutil.rmtree(partial)
        return RecoveryResult(partial, "already_finished", final)
    files = storage_files(partial)
    if not files or all(f.stat().st_size == 0 for f in files):
        return _remove_empty(partial, RawBag(partial))
    raw = read_raw(partial, None)
    count = sum(len(m) for m in raw.messages.values())
    if count == 0 and not raw.unrecognized and not raw.lost:
        return _remove_empty(partial, raw)
    if count == 0:
        return _set_aside(partial, output_dir, raw)
    typestore = typestore or build_typestore()
    staging = output_dir / RECOVERING_DIR / partial.name
    if staging.exists():
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    lost = dict(raw.lost)
    damage = list(raw.damage)
    written = _write_split(staging, STORAGE_BY_SUFFIX.get(files[0].suffix, "mcap"), raw,
                           typestore, lost, damage)
    os.replace(staging, final)
    shutil.rmtree(partial)
    result = RecoveryResult(partial, "recovered", final, written, tuple(damage), lost, True)
    logger.warning("recovered abandoned split %s: %d messages kept, lost %s + what its recorder "
                   "had not flushed; damage: %s", partial.name, written, lost,
                   "; ".join(damage) or "none")
    return result


def _write_split(staging: Path, storage: str, raw: RawBag, typestore: Typestore,
                 lost: dict[str, int], damage: list[str]) -> int:
    """Write the messages of ``raw`` as a complete bag at ``staging``; returns how many."""
    writer = Writer(staging, version=BAG_VERSION, storage_plugin=STORAGES[storage])
    per_topic = []
    with writer:
        for topic, info in raw.topics.items():
            messages = raw.messages.get(topic, [])
            connection = _connection(writer, topic, info, typestore)
            if connection is None:
                if messages:
                    lost[topic] = lost.get(topic, 0) + len(messages)
                    damage.append(f"{topic}: type {info.msgtype} unknown, no definition stored")
                continue
            per_topic.append([(stamp, connection, data) for stamp, data in messages])
        count = 0
        # interleave the topics by time, each in its own storage order (time may jump back)
        for stamp, connection, data in heapq.merge(*per_topic, key=lambda row: row[0]):
            writer.write(connection, stamp, data)
            count += 1
        writer.set_custom_data(RECOVERED_KEY, json.dumps(
            {"messages": count, "lost": lost, "lost_unknown": True, "damage": damage}))
    return count


def _connection(writer: Writer, topic: str, info: TopicInfo, typestore: Typestore):
    if not register_from_definition(typestore, info.msgtype, info.msgdef_format, info.msgdef):
        return None
    try:
        qos = parse_qos(info.offered_qos)
    except Exception:  # noqa: BLE001 - unreadable QoS text: store none rather than fail
        qos = []
    return writer.add_connection(topic, info.msgtype, typestore=typestore,
                                 offered_qos_profiles=qos)


def _remove_empty(partial: Path, raw: RawBag) -> RecoveryResult:
    logger.warning("abandoned split %s holds no data (its recorder died before the first "
                   "flush); removing it", partial.name)
    shutil.rmtree(partial)
    return RecoveryResult(partial, "empty", None, 0, tuple(raw.damage), dict(raw.lost),
                          raw.lost_unknown)


def _set_aside(partial: Path, output_dir: Path, raw: RawBag) -> RecoveryResult:
    target = output_dir / UNRECOVERABLE_DIR / partial.name
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = 0
    while target.exists():  # keep what is there too
        suffix += 1
        target = target.with_name(f"{partial.name}.{suffix}")
    os.replace(partial, target)
    logger.error("nothing readable in abandoned split %s (%s); moved to %s", partial.name,
                 "; ".join(raw.damage), target)
    return RecoveryResult(partial, "unrecoverable", target, 0, tuple(raw.damage),
                          dict(raw.lost), raw.lost_unknown)
