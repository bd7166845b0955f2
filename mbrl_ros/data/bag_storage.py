"""Raw message access to rosbag2 bags that survives truncated and corrupt files.

A bag is a rosbag2 directory (``metadata.yaml`` + storage files), a directory of storage files
without ``metadata.yaml`` (a recorder that crashed), or one ``.mcap`` / ``.db3`` file. Healthy
bags are read with ``rosbags``; when that fails anywhere, every storage file is re-read by the
salvage readers below, which keep everything up to the damage and count what was lost.
"""

from __future__ import annotations

import logging
import mmap
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Reader

logger = logging.getLogger(__name__)

STORAGE_SUFFIXES = (".mcap", ".db3")
MCAP_MAGIC = b"\x89MCAP0\r\n"
OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_MESSAGE_INDEX, OP_DATA_END = 3, 4, 5, 6, 7, 15
MAX_OPCODE = 0x0F
OP_FOOTER, FOOTER_BYTES = 2, 37
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

    @property
    def salvaged(self) -> bool:
        """True when the bag was damaged and read by the salvage readers."""
        return bool(self.damage)


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


def read_raw(path: Path, wanted_topics: set[str]) -> RawBag:
    """Read the serialized messages of ``wanted_topics`` from a bag path.

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


def _read_with_rosbags(path: Path, wanted_topics: set[str]) -> RawBag:
    bag = RawBag(path)
    with Reader(path) as reader:
        for topic, info in reader.topics.items():
            bag.topics[topic] = TopicInfo(info.msgtype or "", info.msgdef.format,
                                          info.msgdef.data, info.msgcount)
        connections = [c for c in reader.connections if c.topic in wanted_topics]
        bag.messages = {t: [] for t in wanted_topics if t in bag.topics}
        if connections:
            for connection, timestamp, data in reader.messages(connections=connections):
                bag.messages[connection.topic].append((timestamp, bytes(data)))
    return bag


def _salvage(path: Path, files: list[Path], wanted_topics: set[str],
             expected: Optional[dict[str, int]]) -> RawBag:
    from mbrl_ros.data.salvage_sqlite import salvage_db3

    bag = RawBag(path)
    for file in files:
        if not file.is_file():
            bag.damage.append(f"{file.name}: missing")
            bag.lost_unknown = True
            continue
        reader = _salvage_mcap if file.suffix == ".mcap" else salvage_db3
        reader(file, wanted_topics, bag)
    read_counts = {t: 0 for t in bag.topics}
    for topic, msgs in bag.messages.items():
        read_counts[topic] = len(msgs)
    if expected is not None:
        bag.lost = {t: n - read_counts.get(t, 0) for t, n in expected.items()
                    if t in wanted_topics and n > read_counts.get(t, 0)}
        bag.lost_unknown = False
        for topic, count in expected.items():
            if topic in bag.topics:
                bag.topics[topic].count = count
    if bag.damage:
        logger.warning("%s damaged: %s; lost per topic %s%s", path, "; ".join(bag.damage),
                       bag.lost, " (+ an unknown number past the damage)"
                       if bag.lost_unknown else "")
    return bag


def _read_str(buf, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", buf, pos)
    end = pos + 4 + length
    if end > len(buf):
        raise ValueError("string runs past its record")
    return bytes(buf[pos + 4:end]).decode("utf-8"), end


class _McapState:
    """Schemas and channels seen so far while scanning an MCAP file."""

    def __init__(self, bag: RawBag, wanted_topics: set[str]):
        self.bag = bag
        self.wanted = wanted_topics
        self.schemas: dict[int, tuple[str, str, str]] = {}
        self.channels: dict[int, str] = {}
        self.read_per_channel: dict[int, int] = {}

    def record(self, opcode: int, buf, start: int, end: int) -> None:
        """Handle one schema/channel/message record whose content is ``buf[start:end]``."""
        if opcode == OP_SCHEMA:
            (schema_id,) = struct.unpack_from("<H", buf, start)
            name, pos = _read_str(buf, start + 2)
            encoding, pos = _read_str(buf, pos)
            (length,) = struct.unpack_from("<I", buf, pos)
            text = bytes(buf[pos + 4:pos + 4 + length]).decode("utf-8", "replace")
            self.schemas[schema_id] = (name, encoding, text)
        elif opcode == OP_CHANNEL:
            channel_id, schema_id = struct.unpack_from("<HH", buf, start)
            topic, _ = _read_str(buf, start + 4)
            name, encoding, text = self.schemas.get(schema_id, ("", "", ""))
            fmt = (MessageDefinitionFormat.IDL if encoding == "ros2idl"
                   else MessageDefinitionFormat.MSG if text else MessageDefinitionFormat.NONE)
            self.channels[channel_id] = topic
            if topic not in self.bag.topics:
                self.bag.topics[topic] = TopicInfo(name, fmt, text, 0)
            if topic in self.wanted:
                self.bag.messages.setdefault(topic, [])
        elif opcode == OP_MESSAGE:
            channel_id, _, log_time = struct.unpack_from("<HIQ", buf, start)
            topic = self.channels.get(channel_id)
            if topic is None:
                raise ValueError(f"message on unknown channel {channel_id}")
            self.bag.topics[topic].count += 1
            self.read_per_channel[channel_id] = self.read_per_channel.get(channel_id, 0) + 1
            if topic in self.wanted:
                self.bag.messages[topic].append((log_time, bytes(buf[start + 22:end])))

    def scan_definitions(self, buf, start: int, end: int) -> Optional[str]:
        """Scan only schema and channel records (a summary section)."""
        return self.scan(buf, start, end, (OP_SCHEMA, OP_CHANNEL))

    def scan(self, buf, start: int, end: int,
             opcodes: tuple = (OP_SCHEMA, OP_CHANNEL, OP_MESSAGE)) -> Optional[str]:
        """Scan records in ``buf[start:end]``; return a damage description or None."""
        pos = start
        while pos < end:
            if pos + 9 > end:
                return f"record header cut at byte {pos}"
            opcode = buf[pos]
            (length,) = struct.unpack_from("<Q", buf, pos + 1)
            if opcode == 0 or opcode > MAX_OPCODE:
                return f"invalid opcode {opcode:#x} at byte {pos}"
            if pos + 9 + length > end:
                return f"record {opcode:#x} at byte {pos} cut ({length} bytes announced)"
            if opcode in opcodes:
                try:
                    self.record(opcode, buf, pos + 9, pos + 9 + length)
                except (struct.error, ValueError, UnicodeDecodeError) as error:
                    return f"bad record {opcode:#x} at byte {pos}: {error}"
            pos += 9 + length
        return None


def _decompress(compression: str, data: bytes, size: int) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    if compression == "lz4":
        import lz4.frame
        return lz4.frame.decompress(data)
    raise ValueError(f"unsupported chunk compression {compression!r}")


def _salvage_mcap(file: Path, wanted_topics: set[str], bag: RawBag) -> None:
    """Scan an MCAP file record by record, skipping corrupt chunks and stopping at a cut."""
    state = _McapState(bag, wanted_topics)
    with open(file, "rb") as handle:
        size = file.stat().st_size
        if size < len(MCAP_MAGIC) or handle.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            bag.damage.append(f"{file.name}: not an MCAP file (bad magic)")
            bag.lost_unknown = True
            return
        buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        _scan_summary(buf, size, state)
        pos = len(MCAP_MAGIC)
        failed_chunk_end = -1
        read_before_chunk: dict[int, int] = {}
        while pos < size:
            if pos + 9 > size:
                bag.damage.append(f"{file.name}: cut at byte {pos} (record header)")
                bag.lost_unknown = True
                break
            opcode = buf[pos]
            (length,) = struct.unpack_from("<Q", buf, pos + 1)
            content, end = pos + 9, pos + 9 + length
            if opcode == 0 or opcode > MAX_OPCODE:
                bag.damage.append(f"{file.name}: invalid opcode {opcode:#x} at byte {pos}")
                bag.lost_unknown = True
                break
            if end > size:
                if opcode == OP_CHUNK:
                    _partial_chunk(buf, content, size, state, file, bag)
                bag.damage.append(f"{file.name}: cut at byte {size} inside record "
                                  f"{opcode:#x} starting at byte {pos}")
                bag.lost_unknown = True
                break
            if opcode == OP_DATA_END:
                break
            if opcode == OP_CHUNK:
                read_before_chunk = dict(state.read_per_channel)
                problem = _read_chunk(buf, content, end, state)
                failed_chunk_end = end if problem else -1
                if problem:
                    bag.damage.append(f"{file.name}: chunk at byte {pos}: {problem}")
            elif opcode == OP_MESSAGE_INDEX and failed_chunk_end >= 0:
                _count_lost(buf, content, state, read_before_chunk, bag)
            else:
                if opcode != OP_MESSAGE_INDEX:
                    failed_chunk_end = -1
                problem = state.scan(buf, pos, end)
                if problem:
                    bag.damage.append(f"{file.name}: {problem}")
            pos = end
    finally:
        buf.close()


def _scan_summary(buf, size: int, state: _McapState) -> None:
    """Schemas and channels from an intact summary section (they may sit in a bad chunk)."""
    footer = size - FOOTER_BYTES
    if footer < len(MCAP_MAGIC) or buf[size - len(MCAP_MAGIC):size] != MCAP_MAGIC \
            or buf[footer] != OP_FOOTER:
        return
    (summary_start,) = struct.unpack_from("<Q", buf, footer + 9)
    if not len(MCAP_MAGIC) < summary_start < footer:
        return
    saved = dict(state.bag.topics), dict(state.bag.messages)
    problem = state.scan_definitions(buf, summary_start, footer)
    if problem:
        state.bag.topics, state.bag.messages = saved
        logger.debug("unusable MCAP summary: %s", problem)


def _read_chunk(buf, start: int, end: int, state: _McapState) -> Optional[str]:
    try:
        _, _, uncompressed_size, crc = struct.unpack_from("<QQQI", buf, start)
        compression, pos = _read_str(buf, start + 28)
        (length,) = struct.unpack_from("<Q", buf, pos)
        if pos + 8 + length > end:
            return "compressed data runs past the chunk"
        records = _decompress(compression, bytes(buf[pos + 8:pos + 8 + length]),
                              uncompressed_size)
    except Exception as error:  # noqa: BLE001 - any decode failure marks the chunk corrupt
        return f"{type(error).__name__}: {error}"
    if len(records) != uncompressed_size:
        return f"decompressed {len(records)} bytes, expected {uncompressed_size}"
    if crc and zlib.crc32(records) != crc:
        return "CRC mismatch"
    return state.scan(records, 0, len(records))


def _partial_chunk(buf, start: int, size: int, state: _McapState, file: Path,
                   bag: RawBag) -> None:
    """Read the complete records of an uncompressed chunk that the file cut."""
    try:
        compression, pos = _read_str(buf, start + 28)
    except (struct.error, ValueError):
        return
    if compression == "" and pos + 8 <= size:
        problem = state.scan(buf, pos + 8, size)
        if problem:
            logger.debug("%s: last chunk %s", file, problem)


def _count_lost(buf, start: int, state: _McapState, read_before: dict[int, int],
                bag: RawBag) -> None:
    """Message index after a corrupt chunk: count its messages that were not read."""
    channel_id, array_bytes = struct.unpack_from("<HI", buf, start)
    listed = array_bytes // 16
    read = state.read_per_channel.get(channel_id, 0) - read_before.get(channel_id, 0)
    topic = state.channels.get(channel_id, f"<channel {channel_id}>")
    if listed > read:
        bag.lost[topic] = bag.lost.get(topic, 0) + listed - read
