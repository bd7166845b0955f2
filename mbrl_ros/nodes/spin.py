"""The one ``main`` every node shares: init, build the node, spin, stop promptly and cleanly.

Shutdown is what a robot needs, not what rclpy does by default:

- SIGINT and SIGTERM (``ros2 launch`` sends SIGINT, twice when it has no terminal, then
  SIGTERM) only *request* a stop; the executor is polled so the request is seen within
  ``POLL_PERIOD_S``. Further signals while the node cleans up are logged and ignored, so a
  second Ctrl-C can never interrupt the cleanup half-way (a bag split half-closed, a gate that
  never sent its final hold).
- The context stays up until the node's ``on_shutdown()`` hook (if it has one) has run, so a
  node can still publish in it: the safety gate sends its final hold there, the logger closes
  its open split, the trainer abandons a training round. A managed (lifecycle) node takes its
  shutdown transition instead, whose ``on_shutdown`` callback does the same; one that reaches
  the finalized state otherwise (``ros2 lifecycle set <node> shutdown``) ends its process.
- A bad configuration (``ValueError``/``OSError`` while building the node) exits with status 2
  and one clear log line instead of a traceback.
- After a clean shutdown the process exits at once (status 0, output flushed): the
  interpreter's own teardown (a final garbage collection of torch's objects, about a second)
  would only delay the stop that launch is waiting for.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Callable, Optional

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.lifecycle import LifecycleNodeMixin
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from mbrl_ros.nodes.managed import FINALIZED, shut_down, state_id

POLL_PERIOD_S = 0.05
"""Longest time between a stop signal and the executor noticing it."""
CONFIG_ERROR_EXIT = 2
"""Exit status for a configuration the node refused."""


class StopRequest:
    """SIGINT/SIGTERM -> a flag; the first signal requests the stop, later ones are ignored.

    Replaces rclpy's handler (which shuts the context down at once, so nothing could be
    published during cleanup) and Python's (KeyboardInterrupt anywhere, cleanup included).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, name: str) -> None:
        self.name = name
        self._event = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                signal.signal(signum, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self._event.is_set():
            print(f"[{self.name}] {signal.Signals(signum).name} again: already stopping",
                  file=sys.stderr, flush=True)
            return
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self) -> None:
        """Request the stop from code (tests, fatal errors)."""
        self._event.set()

    def ignore_until_exit(self) -> None:
        """Ignore the signals at the C level: Python's own finalisation puts the default
        handler (death by SIGINT) back for signals that have a Python handler."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                signal.signal(signum, signal.SIG_IGN)


def run_node(make_node: Callable[[], Node], make_executor: Callable[[], Executor],
             args=None, name: Optional[str] = None) -> None:
    """Spin the node until SIGINT/SIGTERM or rclpy shutdown, then run its ``on_shutdown()``
    hook with the context still up, destroy it and shut rclpy down."""
    label = name or getattr(make_node, "__name__", "node")
    stop = StopRequest(label)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = None
    try:
        node = make_node()
        executor = make_executor()
        executor.add_node(node)
        while not stop.requested and rclpy.ok() and not _finalized(node):
            executor.spin_once(timeout_sec=POLL_PERIOD_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, OSError) as exc:
        if node is not None:
            raise
        rclpy.logging.get_logger(label).fatal(f"bad configuration: {exc}")
        raise SystemExit(CONFIG_ERROR_EXIT) from None
    finally:
        stop.request()  # from here on every signal is ignored, until the process exits
        _shut_down(node, executor)
        stop.ignore_until_exit()
    _exit_now()


def _exit_now() -> None:
    """Exit with status 0 without the interpreter's teardown (everything is shut down)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _finalized(node: Node) -> bool:
    """True for a managed node in the finalized state: nothing is left for it to do."""
    return isinstance(node, LifecycleNodeMixin) and state_id(node) == FINALIZED


def _shut_down(node: Optional[Node], executor: Optional[Executor]) -> None:
    try:
        hook = getattr(node, "on_shutdown", None)
        if isinstance(node, LifecycleNodeMixin) and rclpy.ok():
            try:
                shut_down(node)
            except Exception as exc:  # noqa: BLE001 - the rest of the cleanup must still run
                node.get_logger().error(f"shutdown transition failed: {exc!r}")
        elif callable(hook) and rclpy.ok():
            try:
                hook()
            except Exception as exc:  # noqa: BLE001 - the rest of the cleanup must still run
                node.get_logger().error(f"shutdown hook failed: {exc!r}")
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
    finally:
        if rclpy.ok():
            rclpy.try_shutdown()


def set_realtime_priority(priority: int, pid: int | str = "self") -> str:
    """Every thread of process ``pid`` (this one by default; DDS threads included) at
    SCHED_FIFO ``priority``, as ros2_control's ``thread_priority`` does; returns '' or why it
    could not (no CAP_SYS_NICE or rtprio limit, not Linux)."""
    try:
        for thread in os.listdir(f"/proc/{pid}/task"):
            os.sched_setscheduler(int(thread), os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as error:
        return str(error)
    return ""
