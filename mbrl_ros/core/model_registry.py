"""A folder of versioned model checkpoints: ``model_<version>.mbrl``, written atomically.

The trainer writes new versions here and announces them; on restart it warm-starts from the
newest checkpoint that still loads (corrupt or truncated files are skipped with a warning).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

from mbrl_ros.core.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^model_(\d{6})\.mbrl$")


@dataclass(frozen=True)
class RegisteredModel:
    """One checkpoint of the registry."""

    version: int
    path: Path


class ModelRegistry:
    """Versioned checkpoints in one folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)

    def path_for(self, version: int) -> Path:
        """Where version ``version`` is (or will be) stored."""
        return self.folder / f"model_{version:06d}.mbrl"

    def versions(self) -> List[RegisteredModel]:
        """All checkpoints present, oldest first (not yet checked for corruption)."""
        found = []
        for path in self.folder.iterdir():
            match = CHECKPOINT_PATTERN.match(path.name)
            if match and path.is_file():
                found.append(RegisteredModel(int(match.group(1)), path))
        return sorted(found, key=lambda m: m.version)

    def next_version(self) -> int:
        """One more than the highest version present, corrupt files included."""
        versions = self.versions()
        return versions[-1].version + 1 if versions else 1

    def newest_valid(self, load: Callable[[Path], Any]) -> Optional[tuple]:
        """``(version, path, loaded)`` of the newest checkpoint ``load`` accepts, or None."""
        for entry in reversed(self.versions()):
            try:
                return entry.version, entry.path, load(entry.path)
            except (CheckpointError, OSError, ValueError) as error:
                logger.warning("skipping unreadable checkpoint %s: %s", entry.path, error)
        return None
