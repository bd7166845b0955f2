"""How benchmark results name paths: nothing of the machine that ran them (standard library
only, so the mbrl-lib worker of ``bench.planner_peers`` can import it from its own venv)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

REPO = Path(__file__).resolve().parents[1]


def recorded_args(args: Mapping[str, Any]) -> Dict[str, Any]:
    """A benchmark's arguments as its results record them, naming no machine's folders:
    paths inside the repository relative to it, other absolute paths (e.g. a scratch output
    folder) by their file name only."""
    def relative(value: Any) -> Any:
        if isinstance(value, str) and Path(value).is_absolute():
            path = Path(value).resolve()
            return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
        return value
    return {key: relative(value) for key, value in args.items()}
