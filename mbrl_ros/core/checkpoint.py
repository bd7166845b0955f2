"""Checkpoint files: named tensors plus a JSON header, readable without unpickling code.

A checkpoint (``.mbrl``) is a `safetensors <https://huggingface.co/docs/safetensors>`_ file, so
any safetensors reader lists and loads its tensors (``safetensors.safe_open(path, "pt")``)::

    8 bytes   uint64 little-endian length N of the safetensors header
    N bytes   JSON: {name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}
    D bytes   raw tensor bytes (little-endian, C order)

Our header lives in the string map ``__metadata__``:

- ``mbrl_ros.format_version``: ``"2"``;
- ``mbrl_ros.header``: the JSON header: ``format_version``, ``model_class``, free fields written
  by the model (config, dims, normaliser statistics, training data size, metrics, ``metadata``)
  and ``tensors``: ``{name: {"dtype", "shape", "nbytes", "sha256"}}``;
- ``mbrl_ros.header_sha256``: sha256 of the ``mbrl_ros.header`` string.

Truncation, trailing bytes and any flipped byte in the header or the tensor data are therefore
always detected, even when the caller does not pass the whole-file hash. Files of the earlier
home-made format (magic ``b"MBRLCKPT"``, format version 1) are still read
(:attr:`Checkpoint.legacy`); new files are always written as safetensors.

This module is the file format only and imports no model: the models import it to save and
load themselves, and :func:`mbrl_ros.core.model_loading.load_model` rebuilds whichever model a
file holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""Version of the format :func:`save_checkpoint` writes (safetensors + ``mbrl_ros.*`` metadata)."""
LEGACY_FORMAT_VERSION = 1
"""Version of the earlier home-made format (:data:`MAGIC`), still read."""
MAGIC = b"MBRLCKPT"
"""First bytes of a legacy (format version 1) checkpoint; a safetensors file never starts so."""
MAX_HEADER_BYTES = 64 * 1024 * 1024
"""Refuse headers larger than this (a corrupt length field must not allocate gigabytes)."""
META_VERSION = "mbrl_ros.format_version"
META_HEADER = "mbrl_ros.header"
META_HEADER_SHA256 = "mbrl_ros.header_sha256"
"""Keys of the safetensors ``__metadata__`` map that hold this package's header."""

_DTYPES: Dict[str, torch.dtype] = {
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
    "float64": torch.float64, "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16,
    "int32": torch.int32, "int64": torch.int64, "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


TEMP_PREFIX = ".tmp_ckpt_"
"""Name prefix of a checkpoint being written (never a valid checkpoint name)."""
FILE_MODE = 0o666
"""Mode of a written checkpoint before the umask: readable by the other nodes and hosts that
share the model folder."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_partial_writes(directory: str) -> list:
    """Delete checkpoint temp files left by a writer that was killed; returns their names.
    Call only where no other writer is active (the trainer, at start)."""
    removed = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if name.startswith(TEMP_PREFIX):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


class CheckpointError(Exception):
    """A checkpoint file is missing, truncated, corrupt, of an unknown format or the wrong hash."""


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    header: Dict[str, Any]
    """The JSON header (``model_class``, ``config``, ``metadata``, ...)."""
    tensors: Dict[str, torch.Tensor]
    """Named CPU tensors."""
    sha256: str
    """Hex sha256 of the whole file."""
    legacy: bool = False
    """True when the file is in the earlier home-made format (format version 1)."""

    def require_class(self, model_class: str) -> Dict[str, Any]:
        """The header, if the checkpoint holds ``model_class``; else CheckpointError."""
        found = self.header.get("model_class")
        if found != model_class:
            raise CheckpointError(f"checkpoint holds {found!r}, not {model_class}")
        return self.header


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """Raw little-endian C-order bytes of a contiguous CPU tensor (as safetensors stores them)."""
    return tensor.reshape(-1).view(torch.uint8).numpy().tobytes()


def save_checkpoint(path: str, model_class: str, tensors: Mapping[str, torch.Tensor],
                    header: Mapping[str, Any]) -> str:
    """Write tensors + header atomically as a safetensors file (temp file, fsync, ``os.replace``).

    Args:
        path: destination file.
        model_class: name :func:`~mbrl_ros.core.model_loading.load_model` dispatches on
            (e.g. ``"ProbabilisticEnsemble"``).
        tensors: named tensors of any supported dtype (copied to CPU).
        header: JSON-serialisable fields stored next to the tensors.

    Returns:
        Hex sha256 of the written file.
    """
    entries: Dict[str, Dict[str, Any]] = {}
    stored: Dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"tensor name {name!r} is not allowed")
        # clone: safetensors refuses tensors that share memory (e.g. views of one parameter)
        tensor = tensor.detach().to("cpu").contiguous().clone()
        if tensor.dtype not in _DTYPE_NAMES:
            raise ValueError(f"tensor {name!r} has unsupported dtype {tensor.dtype}")
        blob = _tensor_bytes(tensor)
        entries[name] = {"dtype": _DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                         "nbytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        stored[name] = tensor
    full_header = dict(header)
    full_header.update({"format_version": FORMAT_VERSION, "model_class": model_class,
                        "tensors": entries})
    header_json = json.dumps(full_header, sort_keys=True)
    metadata = {META_VERSION: str(FORMAT_VERSION), META_HEADER: header_json,
                META_HEADER_SHA256: hashlib.sha256(header_json.encode("utf-8")).hexdigest()}
    payload = _safetensors_save(stored, metadata=metadata)

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        os.chmod(tmp_path, FILE_MODE & ~_umask())  # as open() would create it, not 0600
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise
    try:  # make the rename durable; not supported on every platform / filesystem
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return hashlib.sha256(payload).hexdigest()


def load_checkpoint(path: str, expected_sha256: Optional[str] = None) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint` (or a legacy one).

    The file is read once; its hash, header and tensors all come from the same bytes, so a file
    replaced while being read cannot mix two versions. Nothing is unpickled.

    Raises:
        CheckpointError: file missing, hash mismatch, not a checkpoint, unknown format version,
            truncated or corrupt.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    sha = hashlib.sha256(raw).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256.lower():
        raise CheckpointError(f"checkpoint {path} has sha256 {sha}, expected {expected_sha256}")
    if raw[:len(MAGIC)] == MAGIC:
        logger.warning("checkpoint %s is in the legacy (format version %d) layout; re-save it "
                       "to get a safetensors file", path, LEGACY_FORMAT_VERSION)
        return _load_legacy(path, raw, sha)
    return _load_safetensors(path, raw, sha)


def _load_safetensors(path: str, raw: bytes, sha: str) -> Checkpoint:
    if len(raw) < 8:
        raise CheckpointError(f"{path} is not an mbrl_ros checkpoint (too short: {len(raw)} "
                              "bytes; may be truncated)")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if header_len > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path} is not an mbrl_ros checkpoint or is corrupt (header "
                              f"length {header_len})")
    if 8 + header_len > len(raw):
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (header length "
                              f"{header_len}, file size {len(raw)})")
    try:
        table = json.loads(raw[8:8 + header_len].decode("utf-8"))
        if not isinstance(table, dict):
            raise ValueError("the safetensors header is not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not an mbrl_ros checkpoint or its header is corrupt: "
                              f"{exc}") from exc
    metadata = table.get("__metadata__")
    if not isinstance(metadata, dict) or META_VERSION not in metadata:
        raise CheckpointError(f"{path} is not an mbrl_ros checkpoint (no '{META_VERSION}' in "
                              "the safetensors metadata)")
    version = metadata[META_VERSION]
    if version != str(FORMAT_VERSION):
        raise CheckpointError(f"checkpoint {path} has format version {version}, "
                              f"this code reads {FORMAT_VERSION} (and legacy "
                              f"{LEGACY_FORMAT_VERSION})")
    header_json = metadata.get(META_HEADER)
    if (not isinstance(header_json, str) or metadata.get(META_HEADER_SHA256)
            != hashlib.sha256(header_json.encode("utf-8")).hexdigest()):
        raise CheckpointError(f"checkpoint {path} has a corrupt header: header hash mismatch")
    try:
        header = json.loads(header_json)
        entries = header["tensors"]
        if int(header["format_version"]) != FORMAT_VERSION or not isinstance(entries, dict):
            raise ValueError("inconsistent header")
        data_end = max([int(spec["data_offsets"][1]) for name, spec in table.items()
                        if name != "__metadata__"], default=0)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {path} has a corrupt header: {exc}") from exc
    data_nbytes = len(raw) - 8 - header_len
    if data_nbytes != data_end:
        raise CheckpointError(f"checkpoint {path} is truncated or has trailing bytes: data "
                              f"section {data_nbytes} bytes, header says {data_end}")
    try:
        tensors = _safetensors_load(raw)
    except (SafetensorError, ValueError, TypeError, KeyError, RuntimeError,
            AssertionError) as exc:
        raise CheckpointError(f"checkpoint {path} has a corrupt tensor table: {exc}") from exc
    if set(tensors) != set(entries):
        raise CheckpointError(f"checkpoint {path} has a corrupt tensor table: tensors "
                              f"{sorted(tensors)}, header lists {sorted(entries)}")
    for name, entry in entries.items():
        tensor = tensors[name]
        try:
            expected_dtype, expected_shape = entry["dtype"], [int(s) for s in entry["shape"]]
            expected_hash = entry["sha256"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} has a corrupt tensor table: "
                                  f"{name!r}: {exc}") from exc
        dtype_name = _DTYPE_NAMES.get(tensor.dtype)
        if dtype_name != expected_dtype or list(tensor.shape) != expected_shape:
            raise CheckpointError(f"checkpoint {path} has a corrupt tensor table: {name!r} is "
                                  f"{tensor.dtype} {list(tensor.shape)}, header says "
                                  f"{expected_dtype} {expected_shape}")
        if hashlib.sha256(_tensor_bytes(tensor)).hexdigest() != expected_hash:
            raise CheckpointError(f"checkpoint {path} is corrupt: tensor data hash mismatch "
                                  f"({name!r})")
    return Checkpoint(header=header, tensors=tensors, sha256=sha)


def _load_legacy(path: str, raw: bytes, sha: str) -> Checkpoint:
    """Read a format version 1 file (``MAGIC``, uint64 header length, JSON header, raw data)."""
    if len(raw) < 16:
        raise CheckpointError(f"{path} is not an mbrl_ros checkpoint (legacy magic but too "
                              "short; truncated)")
    (header_len,) = struct.unpack("<Q", raw[8:16])
    if header_len > MAX_HEADER_BYTES or 16 + header_len > len(raw):
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (header length "
                              f"{header_len}, file size {len(raw)})")
    try:
        header = json.loads(raw[16:16 + header_len].decode("utf-8"))
        entries = header["tensors"]
        data_nbytes = int(header["data_nbytes"])
        version = int(header["format_version"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} has a corrupt header: {exc}") from exc
    if version != LEGACY_FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}, "
                              f"this code reads {FORMAT_VERSION} (and legacy "
                              f"{LEGACY_FORMAT_VERSION})")
    data = raw[16 + header_len:]
    if len(data) != data_nbytes:
        raise CheckpointError(f"checkpoint {path} is truncated or has trailing bytes: data "
                              f"section {len(data)} bytes, header says {data_nbytes}")
    if hashlib.sha256(data).hexdigest() != header.get("data_sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt: tensor data hash mismatch")
    tensors: Dict[str, torch.Tensor] = {}
    try:
        for name, entry in entries.items():
            dtype = _DTYPES[entry["dtype"]]
            shape = [int(s) for s in entry["shape"]]
            start, nbytes = int(entry["offset"]), int(entry["nbytes"])
            if start < 0 or start + nbytes > len(data):
                raise ValueError(f"tensor {name!r} lies outside the data section")
            buffer = bytearray(data[start:start + nbytes])
            flat = (torch.frombuffer(buffer, dtype=torch.uint8) if nbytes
                    else torch.empty(0, dtype=torch.uint8))
            tensors[name] = flat.view(dtype).reshape(shape)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} has a corrupt tensor table: {exc}") from exc
    return Checkpoint(header=header, tensors=tensors, sha256=sha, legacy=True)


class PayloadCheckpoints:
    """``save`` / ``from_checkpoint`` / ``load`` for a model class with ``checkpoint_payload()
    -> (tensors, header)`` and ``from_payload(tensors, header, device)``; the checkpoint's
    model class is the class's name."""

    def save(self, path: str, metadata: Optional[Mapping[str, Any]] = None) -> str:
        """Write a checkpoint atomically; returns its sha256 hex digest."""
        tensors, header = self.checkpoint_payload()
        header["metadata"] = dict(metadata or {})
        return save_checkpoint(path, type(self).__name__, tensors, header)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint,
                        device: Optional[Union[torch.device, str]] = None):
        """Rebuild from a loaded :class:`Checkpoint` of this class (CheckpointError for any
        other class, or when the tensors do not fit the header)."""
        checkpoint.require_class(cls.__name__)
        return cls.from_payload(checkpoint.tensors, checkpoint.header, device)

    @classmethod
    def load(cls, path: str, expected_sha256: Optional[str] = None,
             device: Optional[Union[torch.device, str]] = None, **kwargs: Any):
        """Read a checkpoint written by :meth:`save` (hash checked when given)."""
        return cls.from_checkpoint(load_checkpoint(path, expected_sha256), device)
