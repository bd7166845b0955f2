"""A ``BagRecorder`` fed through a queue, written on its own thread (ROS-free).

ROS callbacks only append to the queue, so a slow disk (a split closing, a flush, a busy
machine) never stalls the executor: while the writer thread closes a split, messages keep
arriving and wait in the queue instead of overflowing the subscriptions' history, which dropped
messages at every split rotation when the executor itself did the closing. The thread also
flushes on the recorder's ``flush_period_s`` when no message comes, and ``close`` writes every
queued message before it closes the open split.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mbrl_ros.data.bag_writer import BagRecorder, RawOrMessage

logger = logging.getLogger(__name__)

_STOP = object()
"""Queue item that ends the writer thread."""
_NEW_SPLIT = object()
"""Queue item that closes the open split where it stands in the stream."""
LOG_EVERY_ERRORS = 1000
"""After the first error, log one in this many (a full disk fails every message)."""


@dataclass(frozen=True)
class BackgroundRecorderConfig:
    """Queue and shutdown limits of a ``BackgroundRecorder``."""

    max_queued_messages: int = 100_000
    """Messages waiting for the disk before new ones are dropped (and counted): bounds memory
    when the disk stalls for good (over 8 min of 100 Hz state and commands, some 30 MB)."""
    close_timeout_s: float = 2.5
    """Longest wait in ``close`` for the queue to be written and the split closed."""

    def validate(self) -> "BackgroundRecorderConfig":
        """Raise ValueError on a bad setting; return self."""
        if self.max_queued_messages <= 0 or not self.close_timeout_s > 0:
            raise ValueError("max_queued_messages and close_timeout_s must be positive")
        return self


class BackgroundRecorder:
    """Writes messages to ``recorder`` on a thread of its own; see the module docstring."""

    def __init__(self, recorder: BagRecorder,
                 config: BackgroundRecorderConfig = BackgroundRecorderConfig()):
        self.recorder = recorder
        self.config = config.validate()
        self.dropped = 0
        """Messages refused because the queue was full or the recorder closed."""
        self.errors = 0
        """Writes, flushes and rotations that failed (e.g. disk full); logged, throttled."""
        self.last_split: Optional[Path] = None
        """Final path of the split that ``close`` finished (None if none was open)."""
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._accepting = True
        self._submit_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()

    def submit(self, topic: str, msg_type: str, message: RawOrMessage,
               timestamp_ns: int) -> bool:
        """Queue one message for ``BagRecorder.write``; False (and counted) if refused."""
        with self._submit_lock:
            if not self._accepting or self._queue.qsize() >= self.config.max_queued_messages:
                self.dropped += 1
                return False
            self._queue.put((topic, msg_type, message, timestamp_ns))
            return True

    def start_new_split(self) -> None:
        """Close the open split after the messages queued so far."""
        with self._submit_lock:
            if self._accepting:
                self._queue.put(_NEW_SPLIT)

    @property
    def queued(self) -> int:
        """Messages waiting for the writer thread."""
        return self._queue.qsize()

    def close(self) -> bool:
        """Write what is queued, close the open split and stop (idempotent).

        Returns True when all of it finished within ``close_timeout_s``; otherwise the thread
        keeps going in the background (the open split stays in ``.partial/`` if the process
        exits first, and is recovered on the next start).
        """
        with self._submit_lock:
            if self._accepting:
                self._accepting = False
                self._queue.put(_STOP)
        self._thread.join(self.config.close_timeout_s)
        if self._thread.is_alive():
            logger.error("bag writer did not finish within %.1f s (%d messages queued)",
                         self.config.close_timeout_s, self._queue.qsize())
            return False
        return True

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self.recorder.seconds_until_flush())
                except queue.Empty:
                    self._call(self.recorder.flush_if_due)
                    continue
                if item is _STOP:
                    break
                if item is _NEW_SPLIT:
                    self._call(self.recorder.start_new_split)
                else:
                    self._call(self.recorder.write, *item)
        finally:
            try:
                self.last_split = self.recorder.close()
            except (OSError, RuntimeError) as error:
                logger.error("bag writer: closing the recorder failed: %s", error)

    def _call(self, function, *args) -> None:
        """Call ``function``; count and log (throttled) a failure instead of raising."""
        try:
            function(*args)
        except (OSError, ValueError, RuntimeError) as error:
            self.errors += 1
            if self.errors % LOG_EVERY_ERRORS == 1:
                logger.error("bag writer: %s failed (%d so far): %s",
                             getattr(function, "__name__", "call"), self.errors, error)
