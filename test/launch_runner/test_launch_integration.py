"""Run a launch file with real rclpy nodes; check names, parameters, topics, clean Ctrl-C."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ros_helpers import spin_until

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


def children_of(pid):
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as handle:
                    fields = handle.read().rsplit(')', 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as handle:
            return handle.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def get_parameters(node, executor, full_name, names):
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python
    client = node.create_client(GetParameters, f'{full_name}/get_parameters')
    assert client.wait_for_service(timeout_sec=START_TIMEOUT_S), full_name
    future = client.call_async(GetParameters.Request(names=names))
    assert spin_until(executor, future.done, START_TIMEOUT_S)
    return [parameter_value_to_python(v) for v in future.result().values]


@pytest.fixture
def runner(tmp_path):
    env = dict(os.environ)
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    env['PYTHONPATH'] = str(REPO_ROOT) + os.pathsep + env.get('PYTHONPATH', '')
    process = subprocess.Popen(
        [sys.executable, '-m', 'mbrl_ros.cli', 'launch',
         str(HERE / 'two_nodes.launch.yaml'), 'greeting:=hi there', 'robot_ns:=r2',
         '--log-dir', str(tmp_path / 'log')],
        env=env, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    seen_children = set()
    yield process, seen_children
    for pid in seen_children | set(children_of(process.pid)):  # cleanup if the test failed
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_launch_runs_nodes_and_stops_cleanly(ros_context, runner):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    process, seen_children = runner
    node = Node('launch_probe', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        expected_nodes = {('talker', '/r2'), ('counter', '/r2/tools')}
        assert spin_until(
            executor, lambda: expected_nodes <= set(node.get_node_names_and_namespaces()),
            START_TIMEOUT_S), node.get_node_names_and_namespaces()
        expected_topics = {'/r2/greetings': ['std_msgs/msg/String'],
                           '/counter_out': ['std_msgs/msg/Int64']}

        def topics():  # endpoints are discovered after the nodes themselves
            found = dict(node.get_topic_names_and_types())
            return {name: found.get(name) for name in expected_topics}

        assert spin_until(executor, lambda: topics() == expected_topics,
                          START_TIMEOUT_S), topics()
        assert get_parameters(node, executor, '/r2/talker', ['greeting', 'rate_hz']) == [
            'hi there', 20.0]
        assert get_parameters(node, executor, '/r2/tools/counter',
                              ['start', 'limits.low', 'limits.high']) == [5, 1, 9]
        seen_children.update(children_of(process.pid))
        assert len(seen_children) == 2
    finally:
        executor.shutdown()
        node.destroy_node()
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=STOP_TIMEOUT_S)
    assert process.returncode == 0, output.decode()
    deadline = time.monotonic() + 1.0
    while any(alive(pid) for pid in seen_children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in seen_children)
    # both nodes exit 0 on SIGINT (anything else would be an error and a non-zero status)
    assert output.count(b'process has finished cleanly') == 2, output.decode()
    assert b'process has died' not in output and output.count(b's after SIGINT') == 2
