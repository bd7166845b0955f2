"""Small helpers for integration tests that run real nodes on real topics."""

import time
from typing import Callable

from rclpy.executors import Executor


def spin_until(executor: Executor, predicate: Callable[[], bool], timeout_s: float,
               step_s: float = 0.01) -> bool:
    """Spin ``executor`` until ``predicate()`` is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=step_s)
    return predicate()
