"""Salvage reader for MCAP storage files that are unfinished, truncated or corrupt.

Reads with the ``mcap`` library: ``StreamReader`` walks the records in file order (no summary
needed, so a split left behind by a killed recorder reads too); chunks are decoded here one at a
time, so a corrupt chunk costs only its own messages, which the message index records after it
count. Schemas and channels of an intact summary section (``SeekingReader.get_summary``) are
known up front, in case the chunk that defined them is the corrupt one. A file cut inside a
record keeps every complete record before the cut, including the complete records at the start
of an uncompressed chunk that the cut split.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, Optional

from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError
from mcap.opcode import Opcode
from mcap.reader import SeekingReader
from mcap.records import Channel, Chunk, DataEnd, McapRecord, Message, MessageIndex, Schema
from mcap.stream_reader import StreamReader, get_chunk_data_stream
from rosbags.interfaces import MessageDefinitionFormat

from mbrl_ros.data.bag_types import RawBag, TopicInfo, wants

logger = logging.getLogger(__name__)

MCAP_MAGIC = b"\x89MCAP0\r\n"
"""First (and, in a finished file, last) bytes of an MCAP file."""
RECORD_HEADER = struct.Struct("<BQ")
"""Opcode and content length in front of every MCAP record."""
MESSAGE_HEADER_BYTES = 22
"""Channel id, sequence, log time and publish time in front of a message's data."""
CHUNK_RECORD_TYPES = {Opcode.SCHEMA: Schema, Opcode.CHANNEL: Channel, Opcode.MESSAGE: Message}
"""Record types the MCAP specification allows inside a chunk."""
QOS_METADATA_KEY = "offered_qos_profiles"
"""Channel metadata key under which rosbag2 stores the offered QoS."""
IDL_ENCODING = "ros2idl"
"""Schema encoding of IDL message definitions (anything else with text is ros2msg)."""


def _read_record(opcode: int, content: bytes) -> McapRecord:
    """Parse one chunk record with the mcap library; raise ValueError if it is malformed."""
    stream = ReadDataStream(BytesIO(content))
    record_type = CHUNK_RECORD_TYPES[opcode]
    record = (Message.read(stream, len(content)) if record_type is Message
              else record_type.read(stream))
    if stream.count != len(content) or (record_type is Message
                                        and len(content) < MESSAGE_HEADER_BYTES):
        raise ValueError(f"{stream.count} of {len(content)} bytes parsed")
    return record


def chunk_records(data: bytes) -> tuple[list[McapRecord], Optional[str]]:
    """Records of uncompressed chunk data up to the first bad or incomplete one.

    Returns the records and a description of the problem that stopped the scan (None when the
    data ended cleanly).
    """
    records: list[McapRecord] = []
    pos = 0
    while pos < len(data):
        if pos + RECORD_HEADER.size > len(data):
            return records, f"record header cut at byte {pos}"
        opcode, length = RECORD_HEADER.unpack_from(data, pos)
        start = pos + RECORD_HEADER.size
        if opcode not in CHUNK_RECORD_TYPES:
            return records, f"invalid opcode {opcode:#x} at byte {pos}"
        if start + length > len(data):
            return records, f"record {opcode:#x} at byte {pos} cut ({length} bytes announced)"
        try:
            records.append(_read_record(opcode, data[start:start + length]))
        except (McapError, struct.error, UnicodeDecodeError, ValueError) as error:
            return records, f"bad record {opcode:#x} at byte {pos}: {error}"
        pos = start + length
    return records, None


def _chunk_data(chunk: Chunk) -> bytes:
    """Decompressed (and CRC-checked, where the writer stored a CRC) data of a chunk."""
    stream, size = get_chunk_data_stream(chunk, validate_crc=True)
    if size != chunk.uncompressed_size:
        raise ValueError(f"decompressed {size} bytes, expected {chunk.uncompressed_size}")
    return stream.read(size)


class _McapState:
    """Schemas, channels and per-channel counts seen so far while reading one MCAP file."""

    def __init__(self, file: Path, bag: RawBag, wanted_topics: Optional[set[str]]):
        self.name = file.name
        self.bag = bag
        self.wanted = wanted_topics
        self.schemas: dict[int, Schema] = {}
        self.channels: dict[int, str] = {}
        self.read_per_channel: Counter = Counter()
        self.read_before_chunk: Counter = Counter()
        self.chunk_failed = False

    def add(self, record: McapRecord) -> Optional[str]:
        """Take one schema, channel or message record; return a problem or None."""
        if isinstance(record, Schema):
            self.schemas[record.id] = record
        elif isinstance(record, Channel):
            self._add_channel(record)
        elif isinstance(record, Message):
            topic = self.channels.get(record.channel_id)
            if topic is None:
                return f"message on unknown channel {record.channel_id}"
            self.bag.topics[topic].count += 1
            self.read_per_channel[record.channel_id] += 1
            if wants(self.wanted, topic):
                self.bag.messages[topic].append((record.log_time, bytes(record.data)))
        return None

    def _add_channel(self, channel: Channel) -> None:
        self.channels[channel.id] = channel.topic
        if channel.topic not in self.bag.topics:
            schema = self.schemas.get(channel.schema_id)
            name = schema.name if schema else ""
            text = schema.data.decode("utf-8", "replace") if schema else ""
            fmt = (MessageDefinitionFormat.IDL if schema and schema.encoding == IDL_ENCODING
                   else MessageDefinitionFormat.MSG if text else MessageDefinitionFormat.NONE)
            self.bag.topics[channel.topic] = TopicInfo(
                name, fmt, text, 0, channel.metadata.get(QOS_METADATA_KEY, ""))
        if wants(self.wanted, channel.topic):
            self.bag.messages.setdefault(channel.topic, [])

    def load_summary(self, handle: BinaryIO, size: int) -> None:
        """Schemas and channels from an intact summary section (they may sit in a bad chunk)."""
        handle.seek(size - len(MCAP_MAGIC))
        if size < 2 * len(MCAP_MAGIC) or handle.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            return
        handle.seek(0)
        try:
            summary = SeekingReader(handle, record_size_limit=size).get_summary()
        except Exception as error:  # noqa: BLE001 - a damaged summary is only a missed hint
            logger.debug("%s: unusable MCAP summary: %s", self.name, error)
            return
        if summary is not None:
            self.schemas.update(summary.schemas)
            for channel in summary.channels.values():
                self._add_channel(channel)

    def take(self, record: McapRecord, position: int) -> None:
        """Handle one top-level record that starts at byte ``position``."""
        if isinstance(record, Chunk):
            self.read_before_chunk = Counter(self.read_per_channel)
            try:
                records, problem = chunk_records(_chunk_data(record))
            except Exception as error:  # noqa: BLE001 - any decode failure marks the chunk bad
                records, problem = [], f"{type(error).__name__}: {error}"
            for inner in records:
                bad_record = self.add(inner)
                if bad_record:
                    problem = bad_record
                    break
            self.chunk_failed = problem is not None
            if problem:
                self.bag.damage.append(f"{self.name}: chunk at byte {position}: {problem}")
        elif isinstance(record, MessageIndex):
            if self.chunk_failed:
                self._count_lost(record)
        else:
            self.chunk_failed = False
            problem = self.add(record)
            if problem:
                self.bag.damage.append(f"{self.name}: record at byte {position}: {problem}")

    def _count_lost(self, index: MessageIndex) -> None:
        """Message index after a bad chunk: count its messages that were not read."""
        read = (self.read_per_channel[index.channel_id]
                - self.read_before_chunk[index.channel_id])
        topic = self.channels.get(index.channel_id, f"<channel {index.channel_id}>")
        if len(index.records) > read:
            self.bag.lost[topic] = self.bag.lost.get(topic, 0) + len(index.records) - read

    def stopped(self, handle: BinaryIO, position: int, size: int, error: Exception) -> None:
        """Reading failed in the record starting at ``position``: a cut file (keep the
        complete records of a cut chunk) or a corrupt record (stop there)."""
        self.bag.lost_unknown = True
        handle.seek(position)
        header = handle.read(RECORD_HEADER.size)
        if not header:
            self.bag.damage.append(f"{self.name}: ends at byte {size} without a summary "
                                   "(recording not finished)")
            return
        opcode = header[0]
        if len(header) == RECORD_HEADER.size and \
                position + RECORD_HEADER.size + RECORD_HEADER.unpack(header)[1] <= size:
            self.bag.damage.append(f"{self.name}: unreadable record {opcode:#x} at byte "
                                   f"{position}: {type(error).__name__}: {error}")
            return
        self.bag.damage.append(f"{self.name}: cut at byte {size} inside record {opcode:#x} "
                               f"starting at byte {position}")
        if opcode == Opcode.CHUNK and len(header) == RECORD_HEADER.size:
            self._read_cut_chunk(handle.read())  # shorter than the chunk it announces

    def _read_cut_chunk(self, content: bytes) -> None:
        """Keep the complete records at the start of a chunk that the end of the file cut."""
        try:
            chunk = Chunk.read(ReadDataStream(BytesIO(content)))
        except (McapError, struct.error, UnicodeDecodeError):
            return
        if chunk.compression:  # a compressed chunk cannot be read in part
            return
        records, problem = chunk_records(chunk.data)
        for record in records:
            if self.add(record):
                break
        logger.debug("%s: last chunk read up to the cut (%s)", self.name, problem)


def salvage_mcap(file: Path, wanted_topics: Optional[set[str]], bag: RawBag) -> None:
    """Read an MCAP file record by record, skipping corrupt chunks and stopping at a cut.

    ``wanted_topics`` None keeps the messages of every topic.
    """
    size = file.stat().st_size
    with open(file, "rb") as handle:
        if handle.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            bag.damage.append(f"{file.name}: not an MCAP file (bad magic)")
            bag.lost_unknown = True
            bag.unrecognized.append(file.name)
            return
        state = _McapState(file, bag, wanted_topics)
        state.load_summary(handle, size)
        handle.seek(0)
        position = len(MCAP_MAGIC)  # end of the last complete record
        try:
            for record in StreamReader(handle, emit_chunks=True,
                                       record_size_limit=size).records:
                if isinstance(record, DataEnd):
                    return  # the data section is complete; the summary follows
                state.take(record, position)
                position = handle.tell()
        except (McapError, struct.error, ValueError, UnicodeDecodeError) as error:
            state.stopped(handle, position, size, error)
