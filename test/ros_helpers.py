"""Small helpers for integration tests that run real nodes on real topics."""

import signal
import subprocess
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


def stop_launch(runner: subprocess.Popen, executor: Executor, wait_s: float = 10.0) -> str:
    """Ctrl-C a launch started with ``stdout=PIPE, text=True``, spinning ``executor`` (so the
    final messages are received) while it stops; killed after 60 s more. Returns its output."""
    runner.send_signal(signal.SIGINT)
    deadline = time.monotonic() + wait_s
    while runner.poll() is None and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)
    try:
        output, _ = runner.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        runner.kill()
        output, _ = runner.communicate()
    return output
