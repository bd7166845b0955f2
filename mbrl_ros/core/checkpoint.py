"""Checkpoint files: named tensors plus a JSON header, readable without unpickling code.

File layout (all integers little-endian)::

    8 bytes   magic b"MBRLCKPT"
    8 bytes   uint64 length H of the JSON header
    H bytes   UTF-8 JSON header
    D bytes   raw tensor bytes, concatenated (C order)

The header holds ``format_version``, ``model_class``, free fields written by the model (config,
dims, normaliser statistics, training data size, metrics, ``metadata``) and ``tensors``:
``{name: {"dtype", "shape", "offset", "nbytes"}}`` with offsets into the data section, plus
``data_nbytes`` and ``data_sha256`` so truncation and corruption are always detected, even when the
caller does not pass the whole-file hash.

This module is the file format only and imports no model: the models import it to save and
load themselves, and :func:`mbrl_ros.core.model_loading.load_model` rebuilds whichever model a
file holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import torch

MAGIC = b"MBRLCKPT"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024 * 1024
"""Refuse headers larger than this (a corrupt length field must not allocate gigabytes)."""

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


def save_checkpoint(path: str, model_class: str, tensors: Mapping[str, torch.Tensor],
                    header: Mapping[str, Any]) -> str:
    """Write tensors + header atomically (temp file, fsync, ``os.replace``).

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
    blobs = []
    offset = 0
    data_digest = hashlib.sha256()
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.dtype not in _DTYPE_NAMES:
            raise ValueError(f"tensor {name!r} has unsupported dtype {tensor.dtype}")
        blob = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        entries[name] = {"dtype": _DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                         "offset": offset, "nbytes": len(blob)}
        data_digest.update(blob)
        blobs.append(blob)
        offset += len(blob)
    full_header = dict(header)
    full_header.update({"format_version": FORMAT_VERSION, "model_class": model_class,
                        "tensors": entries, "data_nbytes": offset,
                        "data_sha256": data_digest.hexdigest()})
    header_bytes = json.dumps(full_header, sort_keys=True).encode("utf-8")

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    file_digest = hashlib.sha256()
    fd, tmp_path = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        os.chmod(tmp_path, FILE_MODE & ~_umask())  # as open() would create it, not 0600
        with os.fdopen(fd, "wb") as f:
            for part in (MAGIC, struct.pack("<Q", len(header_bytes)), header_bytes, *blobs):
                f.write(part)
                file_digest.update(part)
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
    return file_digest.hexdigest()


def load_checkpoint(path: str, expected_sha256: Optional[str] = None) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: file missing, hash mismatch, bad magic/version, truncated or corrupt.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    sha = hashlib.sha256(raw).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256.lower():
        raise CheckpointError(f"checkpoint {path} has sha256 {sha}, expected {expected_sha256}")
    if len(raw) < 16 or raw[:8] != MAGIC:
        raise CheckpointError(f"{path} is not an mbrl_ros checkpoint (bad magic or too short)")
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
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}, "
                              f"this code reads {FORMAT_VERSION}")
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
    return Checkpoint(header=header, tensors=tensors, sha256=sha)
