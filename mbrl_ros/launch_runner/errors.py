"""Errors raised while reading or running a launch file."""

from typing import Optional


class LaunchError(RuntimeError):
    """A launch cannot go on: bad arguments, missing package or executable, bad value."""


class LaunchFileError(LaunchError):
    """A launch file is invalid or uses something this runner does not support.

    The message names the file and, where known, the entity (``'node' (name: planner)``).
    """

    def __init__(self, message: str, file_path: Optional[str] = None,
                 entity: Optional[str] = None) -> None:
        where = []
        if file_path:
            where.append(str(file_path))
        if entity:
            where.append(f'entity {entity}')
        prefix = ': '.join(where)
        super().__init__(f'{prefix}: {message}' if prefix else message)
        self.file_path = file_path
        self.entity = entity
