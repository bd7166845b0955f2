"""The ROS nodes a launch runner started, by name (standard library only)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict


def node_pids(parent: int) -> Dict[str, int]:
    """``{node name: pid}`` of the ROS nodes started by the launch runner ``parent`` (read from
    /proc: each child's ``__node:=`` argument)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for argument in arguments:
            if argument.startswith(b"__node:="):
                found[argument.split(b"=", 1)[1].decode()] = int(entry.name)
    return found
