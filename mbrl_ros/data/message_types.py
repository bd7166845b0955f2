"""Message types for reading and writing bags without ROS: a rosbags typestore.

The typestore holds the standard ROS 2 message definitions shipped with ``rosbags`` plus this
package's own messages (``msg/*.msg``), so bags with ``mbrl_ros/msg/GateStatus`` and friends can
be written with correct definitions and type hashes, and read back.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Optional

from rosbags.interfaces import MessageDefinitionFormat
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

logger = logging.getLogger(__name__)

PACKAGE_NAME = "mbrl_ros"
"""ROS package name of the custom messages in ``msg/``."""

CDR_HEADER_BYTES = 4
"""Encapsulation header before CDR message data."""

STORE_PREFERENCE = ("ROS2_KILTED", "ROS2_JAZZY", "ROS2_HUMBLE")
"""Typestores tried in order; the first that this rosbags version has is used."""


def _default_msg_dirs() -> list[Path]:
    """``msg/`` next to the source package, then ``share/mbrl_ros/msg`` under ament prefixes."""
    dirs = [Path(__file__).resolve().parents[2] / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share" / PACKAGE_NAME / "msg")
    return dirs


def build_typestore(store_name: Optional[str] = None,
                    msg_dirs: Optional[Iterable[Path]] = None) -> Typestore:
    """A typestore with the standard ROS 2 types and this package's messages.

    Args:
        store_name: a ``rosbags.typesys.Stores`` member name (e.g. ``"ROS2_KILTED"``); None picks
            the first of ``STORE_PREFERENCE`` that exists.
        msg_dirs: folders with ``*.msg`` files of package ``mbrl_ros``; None searches the source
            tree and the ament prefixes. The first folder that has ``.msg`` files is used.
    """
    names = [store_name] if store_name else list(STORE_PREFERENCE)
    store = next((getattr(Stores, n) for n in names if hasattr(Stores, n)), None)
    if store is None:
        raise ValueError(f"rosbags has no typestore among {names}; "
                         f"available: {[s.name for s in Stores]}")
    typestore = get_typestore(store)
    for folder in (list(msg_dirs) if msg_dirs is not None else _default_msg_dirs()):
        files = sorted(Path(folder).glob("*.msg")) if Path(folder).is_dir() else []
        if not files:
            continue
        types: dict = {}
        for path in files:
            types.update(get_types_from_msg(path.read_text(),
                                            f"{PACKAGE_NAME}/msg/{path.stem}"))
        typestore.register(types)
        break
    else:
        logger.debug("no %s msg folder found; custom messages not registered", PACKAGE_NAME)
    return typestore


def register_from_definition(typestore: Typestore, msgtype: str, msgdef_format,
                             msgdef_text: str) -> bool:
    """Register ``msgtype`` from a definition stored in a bag, if the typestore lacks it.

    Returns True when the type is (now) known. A definition that does not parse is logged and
    reported as False; messages of that type are then counted as undecodable by the reader.
    """
    if msgtype in typestore.fielddefs:
        return True
    if not msgdef_text:
        return False
    try:
        if msgdef_format == MessageDefinitionFormat.IDL:
            typestore.register(get_types_from_idl(msgdef_text))
        else:
            typestore.register(get_types_from_msg(msgdef_text, msgtype))
    except Exception as error:  # noqa: BLE001 - any parse failure means "unknown type"
        logger.warning("cannot register %s from the bag's definition: %s", msgtype, error)
        return False
    return msgtype in typestore.fielddefs


def deserialize(typestore: Typestore, data: bytes, msgtype: str) -> object:
    """Deserialize CDR bytes, accepting trailing padding after the message.

    Middleware serializers (e.g. ``rclpy.serialization.serialize_message`` and raw
    subscriptions) may hand over a few bytes past the end of the message, which rosbags'
    strict size check rejects; the message itself is decoded the same way.
    """
    try:
        return typestore.deserialize_cdr(data, msgtype)
    except Exception as error:  # noqa: BLE001 - retried below, re-raised if still bad
        if "size mismatch" not in str(error) or len(data) < CDR_HEADER_BYTES:
            raise
    msgdef = typestore.get_msgdef(msgtype)
    little_endian = bool(data[1])
    decode = msgdef.deserialize_cdr_le if little_endian else msgdef.deserialize_cdr_be
    message, position = decode(memoryview(data)[CDR_HEADER_BYTES:], 0, msgdef.cls, typestore)
    if position + CDR_HEADER_BYTES > len(data):
        raise ValueError(f"CDR data of {msgtype} ends inside the message")
    return message
