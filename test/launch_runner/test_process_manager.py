"""Process supervision: required nodes, respawn, signal escalation, no orphans."""

import os
import signal
import sys
import threading
import time

from mbrl_ros.launch_runner.executor import NodeProcess
from mbrl_ros.launch_runner.process_manager import ManagerConfig, ProcessManager


def spec(label, code, on_exit_shutdown=False, respawn=False, retries=-1,
         sigterm_timeout_s=5.0):
    return NodeProcess(label=label, command=[sys.executable, '-c', code],
                       environment=dict(os.environ), cwd=None, output='screen',
                       node_name=None, on_exit_shutdown=on_exit_shutdown, respawn=respawn,
                       respawn_delay_s=0.0, respawn_max_retries=retries,
                       sigterm_timeout_s=sigterm_timeout_s, sigkill_timeout_s=1.0)


SLEEPER = 'import time; time.sleep(60)'


def alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as handle:
            return handle.read().split()[2] != 'Z'
    except FileNotFoundError:
        return False


def test_required_node_exit_ends_launch_with_its_status(tmp_path, capsys):
    manager = ProcessManager([
        spec('sleeper-1', SLEEPER),
        spec('required-2', 'print("bye"); raise SystemExit(3)', on_exit_shutdown=True),
    ], ManagerConfig(log_dir=str(tmp_path)))
    started = time.monotonic()
    assert manager.run() == 3
    assert time.monotonic() - started < 5.0
    assert '[required-2] bye' in capsys.readouterr().out
    assert all(not alive(group) for c in manager.children for group in c.process_groups)


def test_respawn_stops_after_max_retries(tmp_path):
    manager = ProcessManager([spec('flaky-1', 'raise SystemExit(1)', respawn=True, retries=2)],
                             ManagerConfig(log_dir=str(tmp_path)))
    assert manager.run() == 0
    assert manager.children[0].respawns == 2
    assert len(manager.children[0].process_groups) == 3


def test_sigint_escalates_to_sigterm_for_a_stubborn_node(tmp_path):
    stubborn = 'import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)'
    manager = ProcessManager([spec('stubborn-1', stubborn, sigterm_timeout_s=0.3),
                              spec('polite-2', SLEEPER)],
                             ManagerConfig(log_dir=str(tmp_path)))
    timer = threading.Timer(1.5, manager.request_shutdown, args=('test',))
    timer.start()
    assert manager.run() == 0
    stubborn_child, polite_child = manager.children
    assert stubborn_child.signal_sent == signal.SIGTERM
    assert polite_child.signal_sent == signal.SIGINT
    assert all(not alive(group) for c in manager.children for group in c.process_groups)
