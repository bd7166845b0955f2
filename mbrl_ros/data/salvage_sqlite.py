"""Salvage reader for rosbag2 sqlite3 storage files that are truncated or corrupt.

Works on a repaired temporary copy (header page count fixed, indexes removed), reads rows in id
order, steps over unreadable pages by probing for the next readable id, and counts skipped ids
(rosbag2 message ids are contiguous, so every gap is a lost message).
"""

from __future__ import annotations

import sqlite3
import struct
import tempfile
from pathlib import Path
from typing import Optional

from rosbags.interfaces import MessageDefinitionFormat

from mbrl_ros.data.bag_types import UNKNOWN_TOPIC, RawBag, TopicInfo, wants

SQLITE_PAGE_SIZE_OFFSET, SQLITE_PAGE_COUNT_OFFSET, SQLITE_MAX_PAGE_SIZE = 16, 28, 65536
SQLITE_MAX_ROWID = 2**62
IDL_ENCODING = "ros2idl"
"""``message_definitions.encoding`` of IDL definitions (anything else with text is ros2msg)."""


def _repaired_copy(file: Path, folder: str) -> Path:
    """Copy of a sqlite file whose header matches its length and whose schema has no indexes.

    A truncated file announces more pages than it has, and index root pages past the cut make
    the schema invalid; the copy lets sqlite read the table pages that remain.
    """
    data = bytearray(file.read_bytes())
    page_size = struct.unpack_from(">H", data, SQLITE_PAGE_SIZE_OFFSET)[0] or 1
    page_size = SQLITE_MAX_PAGE_SIZE if page_size == 1 else page_size
    num_pages = len(data) // page_size
    del data[num_pages * page_size:]
    struct.pack_into(">I", data, SQLITE_PAGE_COUNT_OFFSET, num_pages)
    copy = Path(folder) / file.name
    copy.write_bytes(bytes(data))
    conn = sqlite3.connect(str(copy))
    try:
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("DELETE FROM sqlite_master WHERE type='index'")
        conn.commit()
    finally:
        conn.close()
    return copy


def _first_readable_id(conn: sqlite3.Connection, last_id: int) -> Optional[int]:
    """Smallest readable message id after a damaged range starting past ``last_id``."""
    def probe(at: int) -> Optional[int]:
        row = conn.execute("SELECT id, topic_id, timestamp, data FROM messages WHERE id >= ? "
                           "ORDER BY id LIMIT 1",
                           (at,)).fetchone()
        return -1 if row is None else int(row[0])
    low, high, found = last_id, None, -1
    step = 1
    while last_id + step < SQLITE_MAX_ROWID:
        try:
            found, high = probe(last_id + step), last_id + step
            break
        except sqlite3.Error:
            low, step = last_id + step, step * 2
    if high is None:
        return None
    # probe(low) fails, probe(high) reads; find the smallest readable start in between
    while high - low > 1:
        middle = (low + high) // 2
        try:
            found, high = probe(middle), middle
        except sqlite3.Error:
            low = middle
    return found if found >= 0 else None


def salvage_db3(file: Path, wanted_topics: Optional[set[str]], bag: RawBag) -> None:
    """Read a sqlite3 storage file row by row, skipping unreadable pages where possible.

    ``wanted_topics`` None keeps the messages of every topic.
    """
    with tempfile.TemporaryDirectory() as folder:
        try:
            copy = _repaired_copy(file, folder)
            conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
            topic_rows = _topic_rows(conn)
        except (sqlite3.Error, OSError, struct.error) as error:
            bag.damage.append(f"{file.name}: topics table unreadable ({error})")
            bag.lost_unknown = True
            bag.unrecognized.append(file.name)
            return
        try:
            _read_db3_rows(conn, file, topic_rows, wanted_topics, bag)
        finally:
            conn.close()


def _topic_rows(conn: sqlite3.Connection) -> list[tuple[int, str, TopicInfo]]:
    """``(id, name, info)`` of every topic, with the stored QoS and definitions where present."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(topics)")}
    qos_column = "offered_qos_profiles" if "offered_qos_profiles" in columns else "''"
    rows = conn.execute(f"SELECT id, name, type, {qos_column} FROM topics").fetchall()
    definitions: dict[str, tuple[MessageDefinitionFormat, str]] = {}
    try:  # rosbag2 >= Iron stores definitions; older bags and damaged pages have none
        for msgtype, encoding, text in conn.execute(
                "SELECT topic_type, encoding, encoded_message_definition "
                "FROM message_definitions"):
            fmt = (MessageDefinitionFormat.IDL if encoding == IDL_ENCODING
                   else MessageDefinitionFormat.MSG if text else MessageDefinitionFormat.NONE)
            definitions[msgtype] = (fmt, text or "")
    except sqlite3.Error:
        pass
    return [(topic_id, name, TopicInfo(msgtype, *definitions.get(
        msgtype, (MessageDefinitionFormat.NONE, "")), 0, qos or ""))
        for topic_id, name, msgtype, qos in rows]


def _read_db3_rows(conn: sqlite3.Connection, file: Path, topic_rows: list,
                   wanted_topics: Optional[set[str]], bag: RawBag) -> None:
    names = {}
    for topic_id, name, info in topic_rows:
        names[topic_id] = name
        bag.topics.setdefault(name, info)
        if wants(wanted_topics, name):
            bag.messages.setdefault(name, [])
    skipped = {"ids": 0}

    def keep(row_id: int, topic_id: int, timestamp: int, data: bytes) -> None:
        if row_id > last_id + 1:  # ids are contiguous in rosbag2: a jump means lost rows
            skipped["ids"] += row_id - last_id - 1
            bag.damage.append(f"{file.name}: message ids {last_id + 1}..{row_id - 1} missing")
        name = names.get(topic_id)
        if name is None:
            key = f"<topic id {topic_id}>"
            bag.lost[key] = bag.lost.get(key, 0) + 1
            return
        bag.topics[name].count += 1
        if wants(wanted_topics, name):
            bag.messages[name].append((int(timestamp), bytes(data)))

    query = "SELECT id, topic_id, timestamp, data FROM messages WHERE id > ? ORDER BY id"
    last_id = 0
    while True:
        try:
            for row in conn.execute(query, (last_id,)):
                keep(*row)
                last_id = row[0]
            break
        except sqlite3.Error as error:
            problem = error
        try:  # the scan reads ahead: step one row at a time up to the damage
            row = conn.execute(query + " LIMIT 1", (last_id,)).fetchone()
            if row is None:
                break
            keep(*row)
            last_id = row[0]
            continue
        except sqlite3.Error:
            pass
        resume = _first_readable_id(conn, last_id)
        if resume is None:
            bag.damage.append(f"{file.name}: unreadable after message id {last_id} "
                              f"({problem})")
            bag.lost_unknown = True
            break
        bag.damage.append(f"{file.name}: message ids {last_id + 1}..{resume - 1} "
                          f"unreadable ({problem})")
        skipped["ids"] += resume - last_id - 1
        last_id = resume - 1
    if skipped["ids"]:
        bag.lost[UNKNOWN_TOPIC] = bag.lost.get(UNKNOWN_TOPIC, 0) + skipped["ids"]
