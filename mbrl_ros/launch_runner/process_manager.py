"""Start and supervise node processes; shut them down like ros2 launch, leaving no orphans.

Each node runs in its own process group. Shutdown sends SIGINT to every group, then SIGTERM
after the node's ``sigterm_timeout`` and SIGKILL after a further ``sigkill_timeout``.

Only exit status 0 is a clean finish. Any other exit, during shutdown too (a crash in the
node's cleanup, death by the runner's own SIGTERM/SIGKILL escalation), is logged as an error
and makes the runner's exit status non-zero: the shell-style status of the first failure.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, List, Optional, Tuple

from mbrl_ros.launch_runner.executor import NodeProcess

logger = logging.getLogger(__name__)

#: Exit status of a process killed by a signal, shell style: 128 + signal number.
SIGNAL_EXIT_BASE = 128
#: Exit status when a node could not be started.
START_FAILURE_EXIT = 1


@dataclass(frozen=True)
class ManagerConfig:
    """Settings of the process manager."""

    log_dir: str
    """Folder for the log files of nodes with ``output: log`` or ``both``."""
    poll_interval_s: float = 0.05
    """Seconds between checks of the child processes."""
    output_join_timeout_s: float = 1.0
    """Seconds to wait for the rest of a finished node's output."""

    def validate(self) -> None:
        """Raise ValueError on a bad setting."""
        if not self.log_dir:
            raise ValueError('log_dir must be a non-empty path')
        if not self.poll_interval_s > 0.0:
            raise ValueError(f'poll_interval_s must be > 0, got {self.poll_interval_s}')
        if self.output_join_timeout_s < 0.0:
            raise ValueError('output_join_timeout_s must be >= 0, '
                             f'got {self.output_join_timeout_s}')


class _Child:
    """One supervised node: its spec, current process and shutdown progress."""

    def __init__(self, spec: NodeProcess) -> None:
        self.spec = spec
        self.process: Optional[subprocess.Popen] = None
        self.threads: List[threading.Thread] = []
        self.log_file: Optional[IO[str]] = None
        self.respawns = 0
        self.restart_at: Optional[float] = None
        self.signal_sent: Optional[int] = None
        self.sigint_at: Optional[float] = None
        self.next_signal_at = 0.0
        self.finished = False
        self.process_groups: List[int] = []


def exit_status(returncode: int) -> int:
    """Shell-style exit status of a child return code (negative: killed by a signal)."""
    return SIGNAL_EXIT_BASE - returncode if returncode < 0 else returncode


def describe_returncode(returncode: int) -> str:
    """``"exit code -6 (SIGABRT)"``: the return code, with the signal's name if killed."""
    if returncode >= 0:
        return f'exit code {returncode}'
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f'signal {-returncode}'
    return f'exit code {returncode} ({name})'


class ProcessManager:
    """Run ``NodeProcess`` specs until shutdown; ``run()`` returns the launch exit status."""

    def __init__(self, processes: List[NodeProcess], config: ManagerConfig) -> None:
        config.validate()
        self.config = config
        self.children = [_Child(spec) for spec in processes]
        self._write_lock = threading.Lock()
        self._shutdown_reason: Optional[str] = None
        self._shutting_down = False
        self._exit_code = 0
        self.failures: List[Tuple[str, int]] = []
        """``(label, shell-style exit status)`` of every process that did not exit with 0."""

    # --- public ---------------------------------------------------------------------------

    def request_shutdown(self, reason: str) -> None:
        """Ask for a clean shutdown (safe to call from a signal handler)."""
        if self._shutdown_reason is None:
            self._shutdown_reason = reason

    def pids(self) -> List[int]:
        """Process ids of the children now running."""
        return [c.process.pid for c in self.children
                if c.process is not None and c.process.poll() is None]

    def run(self) -> int:
        """Start every node and supervise until shutdown; return the exit status."""
        try:
            for child in self.children:
                if not self._start(child):
                    self._record_failure(child, START_FAILURE_EXIT)
                    self.request_shutdown(f"node '{child.spec.label}' could not be started")
                    break
            while True:
                if self._shutdown_reason is not None and not self._shutting_down:
                    self._begin_shutdown(self._shutdown_reason)
                self._poll_children()
                if all(c.finished for c in self.children):
                    break
                if not self._shutting_down and not self._anything_running_or_pending():
                    logger.info('all processes have exited')
                    break
                time.sleep(self.config.poll_interval_s)
        finally:
            self._kill_all()
        if self.failures:
            logger.error('%d process(es) failed: %s', len(self.failures), ', '.join(
                f'{label} (status {status})' for label, status in self.failures))
        return self._exit_code

    # --- internals ------------------------------------------------------------------------

    def _anything_running_or_pending(self) -> bool:
        return any(not c.finished for c in self.children)

    def _start(self, child: _Child) -> bool:
        spec = child.spec
        environment = dict(spec.environment)
        environment.setdefault('PYTHONUNBUFFERED', '1')
        try:
            child.process = subprocess.Popen(
                spec.command, env=environment, cwd=spec.cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0)
        except OSError as err:
            logger.error("[%s] cannot start %s: %s", spec.label, spec.command, err)
            child.finished = True
            return False
        child.process_groups.append(child.process.pid)
        logger.info('[%s] process started with pid [%d]', spec.label, child.process.pid)
        logger.debug('[%s] command: %s', spec.label, ' '.join(spec.command))
        if spec.output in ('log', 'both') and child.log_file is None:
            Path(self.config.log_dir).mkdir(parents=True, exist_ok=True)
            child.log_file = open(Path(self.config.log_dir) / f'{spec.label}.log', 'a',
                                  encoding='utf-8')
        to_screen_out = spec.output in ('screen', 'both')
        child.threads = [
            threading.Thread(target=self._pump, daemon=True,
                             args=(child, child.process.stdout, sys.stdout, to_screen_out)),
            threading.Thread(target=self._pump, daemon=True,
                             args=(child, child.process.stderr, sys.stderr, True)),
        ]
        for thread in child.threads:
            thread.start()
        return True

    def _pump(self, child: _Child, stream: IO[bytes], screen: IO[str], to_screen: bool) -> None:
        """Copy one output stream line by line, prefixed with ``[label]``."""
        for raw in iter(stream.readline, b''):
            line = raw.decode('utf-8', errors='replace').rstrip('\n')
            with self._write_lock:
                if to_screen:
                    screen.write(f'[{child.spec.label}] {line}\n')
                    screen.flush()
                if child.log_file is not None:
                    child.log_file.write(line + '\n')
                    child.log_file.flush()
        stream.close()

    def _poll_children(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.finished:
                continue
            if child.process is None:
                if child.restart_at is not None and now >= child.restart_at \
                        and not self._shutting_down:
                    child.restart_at = None
                    if not self._start(child):
                        child.finished = True
                        self._record_failure(child, START_FAILURE_EXIT)
                elif self._shutting_down:
                    child.finished = True
                continue
            returncode = child.process.poll()
            if returncode is None:
                if self._shutting_down:
                    self._escalate(child, now)
                continue
            self._on_exit(child, returncode, now)

    def _record_failure(self, child: _Child, status: int) -> None:
        self.failures.append((child.spec.label, status))
        if self._exit_code == 0:
            self._exit_code = status

    def _on_exit(self, child: _Child, returncode: int, now: float) -> None:
        spec = child.spec
        for thread in child.threads:
            thread.join(timeout=self.config.output_join_timeout_s)
        status = exit_status(returncode)
        if returncode == 0:
            logger.info('[%s] process has finished cleanly [pid %d]', spec.label,
                        child.process.pid)
        else:
            logger.error('[%s] process has died%s [pid %d, %s, cmd %r]', spec.label,
                         ' during shutdown' if self._shutting_down else '', child.process.pid,
                         describe_returncode(returncode), ' '.join(spec.command))
            self._record_failure(child, status)
        if self._shutting_down and child.sigint_at is not None:
            escalated = child.signal_sent if child.signal_sent != signal.SIGINT else None
            logger.info('[%s] stopped %.1f s after SIGINT%s', spec.label, now - child.sigint_at,
                        f' (after {signal.Signals(escalated).name})' if escalated else '')
        child.process = None
        if self._shutting_down:
            child.finished = True
            return
        if spec.on_exit_shutdown:
            child.finished = True
            self.request_shutdown(f"node '{spec.label}' (on_exit: shutdown) exited "
                                  f'with status {status}')
            return
        retries_left = spec.respawn_max_retries < 0 or child.respawns < spec.respawn_max_retries
        if spec.respawn and retries_left:
            child.respawns += 1
            child.restart_at = now + spec.respawn_delay_s
            logger.info('[%s] respawning in %.1f s', spec.label, spec.respawn_delay_s)
            return
        child.finished = True

    def _begin_shutdown(self, reason: str) -> None:
        logger.info('shutting down: %s', reason)
        self._shutting_down = True
        now = time.monotonic()
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                self._signal(child, signal.SIGINT)
                child.sigint_at = now
                child.next_signal_at = now + child.spec.sigterm_timeout_s

    def _escalate(self, child: _Child, now: float) -> None:
        if now < child.next_signal_at:
            return
        if child.signal_sent == signal.SIGINT:
            logger.warning('[%s] did not exit %.1f s after SIGINT, sending SIGTERM',
                           child.spec.label, child.spec.sigterm_timeout_s)
            self._signal(child, signal.SIGTERM)
            child.next_signal_at = now + child.spec.sigkill_timeout_s
        elif child.signal_sent == signal.SIGTERM:
            logger.warning('[%s] did not exit %.1f s after SIGTERM, sending SIGKILL',
                           child.spec.label, child.spec.sigkill_timeout_s)
            self._signal(child, signal.SIGKILL)
            child.next_signal_at = float('inf')

    def _signal(self, child: _Child, signum: int) -> None:
        child.signal_sent = signum
        try:
            os.killpg(child.process.pid, signum)
        except ProcessLookupError:
            pass

    def _kill_all(self) -> None:
        """Last resort on the way out: no process group of ours survives the runner."""
        for child in self.children:
            for group in child.process_groups:
                try:
                    os.killpg(group, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if child.process is not None:
                child.process.wait()
            for thread in child.threads:
                thread.join(timeout=self.config.output_join_timeout_s)
            if child.log_file is not None:
                child.log_file.close()
                child.log_file = None
