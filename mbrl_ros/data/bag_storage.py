"""Raw message access to rosbag2 bags that survives unfinished, truncated and corrupt files.

A bag is a rosbag2 directory (``metadata.yaml`` + storage files), a directory of storage files
without ``metadata.yaml`` (a recorder that crashed), or one ``.mcap`` / ``.db3`` file. Healthy
bags are read with ``rosbags``; when that fails anywhere, every storage file is re-read by the
salvage readers (``salvage_mcap``: the ``mcap`` library; ``salvage_sqlite``), which keep
everything up to the damage and count what was lost.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import yaml
from rosbags.rosbag2 import Reader

from mbrl_ros.data.bag_types import (STORAGE_SUFFIXES, UNKNOWN_TOPIC, RawBag, TopicInfo,
                                     wants)
from mbrl_ros.data.salvage_mcap import salvage_mcap
from mbrl_ros.data.salvage_sqlite import salvage_db3

logger = logging.getLogger(__name__)

__all__ = ["STORAGE_SUFFIXES", "UNKNOWN_TOPIC", "RawBag", "TopicInfo", "read_raw",
           "storage_files"]


def storage_files(path: Path) -> list[Path]:
    """Storage files of a bag path: the file itself, or the ones in a bag directory."""
    if path.is_file():
        return [path]
    meta = path / "metadata.yaml"
    if meta.is_file():
        try:
            info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
            return [path / Path(p).name for p in info["relative_file_paths"]]
        except Exception as error:  # noqa: BLE001 - unreadable metadata: fall back to a glob
            logger.warning("%s: unreadable metadata.yaml (%s); reading storage files", path, error)
    return sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)


def _metadata_counts(path: Path) -> Optional[dict[str, int]]:
    """Per-topic message counts from ``metadata.yaml``, or None when there is none."""
    meta = path / "metadata.yaml"
    if not path.is_dir() or not meta.is_file():
        return None
    try:
        info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
        return {t["topic_metadata"]["name"]: int(t["message_count"])
                for t in info["topics_with_message_count"]}
    except Exception:  # noqa: BLE001 - treated as "no metadata"
        return None


def read_raw(path: Path, wanted_topics: Optional[set[str]]) -> RawBag:
    """Read the serialized messages of ``wanted_topics`` (None: every topic) from a bag path.

    Never raises for damaged storage: problems are listed in ``RawBag.damage`` and lost
    messages counted in ``RawBag.lost``. Raises FileNotFoundError / ValueError only when the
    path holds no bag at all.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bag path {path} does not exist")
    if path.is_file() and path.suffix not in STORAGE_SUFFIXES:
        raise ValueError(f"{path}: not a bag (expected a directory, {STORAGE_SUFFIXES} file)")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        files = storage_files(path)
        if not files:
            raise ValueError(f"{path}: no metadata.yaml and no {STORAGE_SUFFIXES} files")
        logger.warning("%s has no metadata.yaml; reading its storage files directly", path)
        return _salvage(path, files, wanted_topics, expected=None)
    try:
        return _read_with_rosbags(path, wanted_topics)
    except Exception as error:  # noqa: BLE001 - any failure: go to the salvage readers
        logger.warning("%s: regular read failed (%s: %s); salvaging", path,
                       type(error).__name__, error)
        bag = _salvage(path, storage_files(path), wanted_topics, _metadata_counts(path))
        bag.damage.insert(0, f"regular read failed: {type(error).__name__}: {error}")
        return bag


def _read_with_rosbags(path: Path, wanted_topics: Optional[set[str]]) -> RawBag:
    bag = RawBag(path)
    with Reader(path) as reader:
        for topic, info in reader.topics.items():
            bag.topics[topic] = TopicInfo(info.msgtype or "", info.msgdef.format,
                                          info.msgdef.data, info.msgcount)
        connections = [c for c in reader.connections if wants(wanted_topics, c.topic)]
        bag.messages = {t: [] for t in bag.topics if wants(wanted_topics, t)}
        if connections:
            for connection, timestamp, data in reader.messages(connections=connections):
                bag.messages[connection.topic].append((timestamp, bytes(data)))
    return bag


def _salvage(path: Path, files: list[Path], wanted_topics: Optional[set[str]],
             expected: Optional[dict[str, int]]) -> RawBag:
    bag = RawBag(path)
    for file in files:
        if not file.is_file():
            bag.damage.append(f"{file.name}: missing")
            bag.lost_unknown = True
            bag.unrecognized.append(file.name)
            continue
        reader = salvage_mcap if file.suffix == ".mcap" else salvage_db3
        reader(file, wanted_topics, bag)
    read_counts = {t: 0 for t in bag.topics}
    for topic, msgs in bag.messages.items():
        read_counts[topic] = len(msgs)
    if expected is not None:
        bag.lost = {t: n - read_counts.get(t, 0) for t, n in expected.items()
                    if wants(wanted_topics, t) and n > read_counts.get(t, 0)}
        bag.lost_unknown = False
        for topic, count in expected.items():
            if topic in bag.topics:
                bag.topics[topic].count = count
    if bag.damage:
        logger.warning("%s damaged: %s; lost per topic %s%s", path, "; ".join(bag.damage),
                       bag.lost, " (+ an unknown number past the damage)"
                       if bag.lost_unknown else "")
    return bag
