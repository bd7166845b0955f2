"""Finished bag splits in a data directory, and the trainer's manifest of what it ingested.

The logger (``BagRecorder``) renames a split into the data directory only once it is complete,
so every non-hidden bag there is finished. The trainer lists them, ingests the ones its
manifest does not hold, and records each in the manifest (written atomically, with a backup),
so a restarted trainer, or one on another host sharing the folder, loses and repeats nothing.
A split that cannot be read is recorded as failed and not retried until its files change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mbrl_ros.data.bag_types import STORAGE_SUFFIXES
from mbrl_ros.data.bag_writer import PARTIAL_DIR
from mbrl_ros.data.split_lock import is_locked

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class SplitInfo:
    """A finished split: a rosbag2 folder with metadata.yaml, or a single storage file."""

    name: str
    """File or folder name, unique inside the data directory."""
    path: Path
    size_bytes: int
    """Total size of its files."""
    fingerprint: str
    """sha256 over names, sizes and modification times of its files (changes if rewritten)."""


def _fingerprint(files: list[Path]) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    for file in sorted(files):
        stat = file.stat()
        size += stat.st_size
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return size, digest.hexdigest()


class DataDirectory:
    """Lists finished splits of ``root`` and keeps the ingestion manifest at ``manifest_path``.

    Args:
        root: the recorder's ``output_dir``.
        manifest_path: where the manifest lives (JSON); default ``root/.ingested.json``.
            Put it in the trainer's own state folder when the data folder is read-only.
    """

    def __init__(self, root: os.PathLike, manifest_path: Optional[os.PathLike] = None):
        self.root = Path(root)
        self.manifest_path = Path(manifest_path) if manifest_path else \
            self.root / ".ingested.json"
        self.entries: dict[str, dict] = self._load()

    def finished_splits(self) -> list[SplitInfo]:
        """All finished splits, sorted by name (chronological for ``BagRecorder`` names)."""
        if not self.root.is_dir():
            return []
        splits = []
        for path in sorted(self.root.iterdir()):
            if path.name.startswith("."):
                continue
            try:
                if path.is_dir() and (path / "metadata.yaml").is_file():
                    files = [p for p in path.iterdir() if p.is_file()]
                elif path.is_file() and path.suffix in STORAGE_SUFFIXES:
                    files = [path]
                else:
                    continue
                size, fingerprint = _fingerprint(files)
            except OSError as error:  # removed or unreadable while listing
                logger.warning("skipping %s: %s", path, error)
                continue
            splits.append(SplitInfo(path.name, path, size, fingerprint))
        return splits

    def pending(self) -> list[SplitInfo]:
        """Finished splits not yet ingested or failed (or rewritten since)."""
        return [s for s in self.finished_splits()
                if self.entries.get(s.name, {}).get("fingerprint") != s.fingerprint]

    def mark_ingested(self, split: SplitInfo, num_transitions: int,
                      details: Optional[dict] = None) -> None:
        """Record that ``split`` was ingested (``details``: JSON-able counts, e.g. drops)."""
        self._record(split, "ingested", {"num_transitions": int(num_transitions),
                                         "details": details or {}})

    def mark_failed(self, split: SplitInfo, reason: str) -> None:
        """Record that ``split`` could not be read; it is retried only if its files change."""
        logger.warning("split %s failed: %s", split.name, reason)
        self._record(split, "failed", {"reason": reason})

    def abandoned_partials(self, older_than_s: float) -> list[Path]:
        """Splits left under ``.partial/`` by a recorder that died, untouched for a while.

        A split whose recorder is alive (its session lock is held) is never listed. They lack
        metadata.yaml; the logger turns them into finished splits when it starts
        (``split_recovery.recover_abandoned_splits``), and ``read_robot_streams`` can read them
        as they are.
        """
        folder = self.root / PARTIAL_DIR
        if not folder.is_dir():
            return []
        now = time.time()
        out = []
        for path in sorted(folder.iterdir()):
            if not path.is_dir() or is_locked(path):
                continue
            try:
                newest = max([p.stat().st_mtime for p in path.iterdir()]
                             + [path.stat().st_mtime])
            except (OSError, ValueError):
                continue
            if now - newest > older_than_s:
                out.append(path)
        return out

    def _record(self, split: SplitInfo, status: str, extra: dict) -> None:
        self.entries[split.name] = {"status": status, "fingerprint": split.fingerprint,
                                    "size_bytes": split.size_bytes, "time": time.time(),
                                    **extra}
        self._save()

    def _load(self) -> dict[str, dict]:
        for path in (self.manifest_path, self._backup_path()):
            if not path.is_file():
                continue
            try:
                content = json.loads(path.read_text())
                if content.get("version") != MANIFEST_VERSION:
                    raise ValueError(f"manifest version {content.get('version')}")
                return dict(content["splits"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
                logger.error("manifest %s unreadable (%s); trying the backup", path, error)
                aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
                try:
                    os.replace(path, aside)
                except OSError:
                    pass
        if self.manifest_path.exists() or self._backup_path().exists():
            logger.error("no readable manifest: every split will be ingested again")
        return {}

    def _backup_path(self) -> Path:
        return self.manifest_path.with_name(self.manifest_path.name + ".bak")

    def _save(self) -> None:
        self.manifest_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_path.with_name(self.manifest_path.name + f".tmp{os.getpid()}")
        with open(tmp, "w") as handle:
            json.dump({"version": MANIFEST_VERSION, "splits": self.entries}, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        if self.manifest_path.exists():
            shutil.copy2(self.manifest_path, self._backup_path())
        os.replace(tmp, self.manifest_path)
