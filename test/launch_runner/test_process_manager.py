"""Process supervision: required nodes, respawn, signal escalation, no orphans, and an
honest account of how each process ended."""

import logging
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

from mbrl_ros.launch_runner.executor import NodeProcess, resolve_launch_file
from mbrl_ros.launch_runner.process_manager import (
    SIGNAL_EXIT_BASE, ManagerConfig, ProcessManager)

HERE = Path(__file__).resolve().parent
WAIT_S = 10.0
"""Longest wait for a child to start or restart."""


def spec(label, code, on_exit_shutdown=False, respawn=False, retries=-1,
         sigterm_timeout_s=5.0, sigkill_timeout_s=1.0):
    return NodeProcess(label=label, command=[sys.executable, '-c', code],
                       environment=dict(os.environ), cwd=None, output='screen',
                       node_name=None, on_exit_shutdown=on_exit_shutdown, respawn=respawn,
                       respawn_delay_s=0.0, respawn_max_retries=retries,
                       sigterm_timeout_s=sigterm_timeout_s, sigkill_timeout_s=sigkill_timeout_s)


SLEEPER = ('import signal, sys, time; signal.signal(signal.SIGINT, lambda *_: sys.exit(0)); '
           'time.sleep(60)')
"""Sleeps until SIGINT, then exits with status 0 (a node that stops cleanly)."""


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
    assert manager.run() == 1  # it crashed: the launch did not go well
    assert manager.failures == [('flaky-1', 1)] * 3
    assert manager.children[0].respawns == 2
    assert len(manager.children[0].process_groups) == 3


def test_sigint_escalates_to_sigterm_for_a_stubborn_node(tmp_path):
    stubborn = 'import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)'
    manager = ProcessManager([spec('stubborn-1', stubborn, sigterm_timeout_s=0.3),
                              spec('polite-2', SLEEPER)],
                             ManagerConfig(log_dir=str(tmp_path)))
    timer = threading.Timer(1.5, manager.request_shutdown, args=('test',))
    timer.start()
    assert manager.run() == SIGNAL_EXIT_BASE + signal.SIGTERM  # killed: a failure
    assert manager.failures == [('stubborn-1', SIGNAL_EXIT_BASE + signal.SIGTERM)]
    stubborn_child, polite_child = manager.children
    assert stubborn_child.signal_sent == signal.SIGTERM
    assert polite_child.signal_sent == signal.SIGINT
    assert all(not alive(group) for c in manager.children for group in c.process_groups)


def run_in_thread(manager):
    result = {}
    thread = threading.Thread(target=lambda: result.update(status=manager.run()))
    thread.start()
    return thread, result


def stop(manager, thread, result):
    manager.request_shutdown('test')
    thread.join(timeout=WAIT_S)
    assert not thread.is_alive()
    return result['status']


def test_clean_stop_is_logged_with_the_time_it_took(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mbrl_ros.launch_runner")
    manager = ProcessManager([spec('polite-1', SLEEPER)], ManagerConfig(log_dir=str(tmp_path)))
    thread, result = run_in_thread(manager)
    assert wait_for(lambda: manager.pids())
    time.sleep(0.5)  # Python has installed the SIGINT handler
    assert stop(manager, thread, result) == 0
    assert '[polite-1] process has finished cleanly' in caplog.text
    assert '[polite-1] stopped 0.' in caplog.text and 's after SIGINT' in caplog.text
    assert 'died' not in caplog.text and manager.failures == []


def test_a_crash_during_shutdown_is_an_error_and_fails_the_launch(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mbrl_ros.launch_runner")
    aborts = ('import os, signal, time; signal.signal(signal.SIGINT, lambda *_: os.abort()); '
              'time.sleep(60)')
    manager = ProcessManager([spec('crashy-1', aborts), spec('polite-2', SLEEPER)],
                             ManagerConfig(log_dir=str(tmp_path)))
    thread, result = run_in_thread(manager)
    assert wait_for(lambda: len(manager.pids()) == 2)
    time.sleep(0.5)
    assert stop(manager, thread, result) == SIGNAL_EXIT_BASE + signal.SIGABRT
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.startswith('[crashy-1] process has died during shutdown') and
               'exit code -6 (SIGABRT)' in m for m in errors), errors
    assert '[crashy-1] process has finished cleanly' not in caplog.text
    assert '[polite-2] process has finished cleanly' in caplog.text
    assert '[crashy-1] stopped' in caplog.text
    assert manager.failures == [('crashy-1', SIGNAL_EXIT_BASE + signal.SIGABRT)]


def test_the_runners_own_sigkill_is_a_failure(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mbrl_ros.launch_runner")
    deaf = ('import signal, time; [signal.signal(s, signal.SIG_IGN) for s in '
            '(signal.SIGINT, signal.SIGTERM)]; time.sleep(60)')
    manager = ProcessManager([spec('deaf-1', deaf, sigterm_timeout_s=0.2, sigkill_timeout_s=0.2)],
                             ManagerConfig(log_dir=str(tmp_path)))
    thread, result = run_in_thread(manager)
    assert wait_for(lambda: manager.pids())
    time.sleep(0.5)
    assert stop(manager, thread, result) == SIGNAL_EXIT_BASE + signal.SIGKILL
    assert 'exit code -9 (SIGKILL)' in caplog.text
    assert 's after SIGINT (after SIGKILL)' in caplog.text


def test_a_node_dying_without_on_exit_shutdown_leaves_the_others_running(tmp_path):
    manager = ProcessManager([spec('dies-1', 'raise SystemExit(4)'), spec('keeps-2', SLEEPER)],
                             ManagerConfig(log_dir=str(tmp_path)))
    thread, result = run_in_thread(manager)
    assert wait_for(lambda: manager.children[0].finished)
    survivor = manager.children[1].process
    time.sleep(1.0)  # plenty of supervision loops after the death
    assert survivor.poll() is None and not manager._shutting_down
    assert stop(manager, thread, result) == 4  # the crash is still reported at the end
    assert survivor.returncode == 0 and manager.children[1].signal_sent == signal.SIGINT


RESPAWN_DELAY_S = 0.5


def test_a_respawning_node_killed_with_sigkill_is_restarted_with_its_command_line(
        tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mbrl_ros.launch_runner")
    records = tmp_path / 'records'
    records.mkdir()
    launch_file = tmp_path / 'respawn.launch.yaml'
    launch_file.write_text(textwrap.dedent(f"""
        launch:
        - node:
            exec: {sys.executable}
            args: {HERE / 'tiny_sleeper.py'} {records}
            name: sleeper
            output: screen
            respawn: 'true'
            respawn_delay: {RESPAWN_DELAY_S}
        """))
    processes = resolve_launch_file(str(launch_file), {}, str(tmp_path))
    manager = ProcessManager(processes, ManagerConfig(log_dir=str(tmp_path / 'log')))
    thread, result = run_in_thread(manager)

    def started():
        return sorted(int(p.name) for p in records.iterdir() if p.suffix == '')

    try:
        assert wait_for(lambda: len(started()) == 1)
        (first,) = started()
        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()
        assert wait_for(lambda: len(started()) == 2)
        restart_s = time.monotonic() - killed_at
    finally:
        status = stop(manager, thread, result)
    second = started()[1]
    assert restart_s >= RESPAWN_DELAY_S
    command_lines = [(records / str(pid)).read_text().split('\0') for pid in (first, second)]
    assert command_lines[0] == command_lines[1] == processes[0].command[1:]
    assert f'process has died [pid {first}, exit code -9 (SIGKILL)' in caplog.text
    assert f'respawning in {RESPAWN_DELAY_S:.1f} s' in caplog.text
    assert manager.children[0].respawns == 1
    assert status == SIGNAL_EXIT_BASE + signal.SIGKILL  # the kill counts; the clean stop too
    assert manager.failures == [(processes[0].label, SIGNAL_EXIT_BASE + signal.SIGKILL)]


def wait_for(predicate, timeout_s=WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())
