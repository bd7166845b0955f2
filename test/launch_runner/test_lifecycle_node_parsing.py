"""``lifecycle_node`` entities (launch_ros LifecycleNode's YAML frontend), no ROS needed."""

import os
import sys
import textwrap

import pytest
import yaml

from mbrl_ros.launch_runner.errors import LaunchFileError
from mbrl_ros.launch_runner.executor import resolve_launch_file

NODE = f'exec: {sys.executable}'


@pytest.fixture
def resolve(tmp_path):
    env = {'PATH': os.path.dirname(sys.executable), 'AMENT_PREFIX_PATH': ''}

    def _resolve(text, **arguments):
        path = tmp_path / 'lifecycle.launch.yaml'
        path.write_text(textwrap.dedent(text))
        return resolve_launch_file(str(path), arguments, str(tmp_path), environment=env)
    return _resolve


def test_a_lifecycle_node_is_a_node_with_every_node_attribute(resolve):
    """Same command line as a ``node`` with the same attributes; only ``lifecycle`` differs."""
    body = f"""
        {NODE}
        name: planner
        namespace: $(var ns)
        respawn: 'true'
        respawn_delay: 1.0
        param:
        - {{name: autostart, value: false}}
        remap:
        - {{from: /clock, to: clock}}
    """
    entity = textwrap.indent(textwrap.dedent(body).strip(), '    ')
    managed, = resolve(f"launch:\n- arg: {{name: ns, default: left}}\n- lifecycle_node:\n"
                       f"{entity}\n")
    plain, = resolve(f"launch:\n- arg: {{name: ns, default: left}}\n- node:\n{entity}\n")
    assert managed.lifecycle and not plain.lifecycle
    assert managed.node_name == '/left/planner'
    assert managed.respawn and managed.respawn_delay_s == 1.0
    assert managed.command[managed.command.index('--ros-args'):][:4] == [
        '--ros-args', '-r', '__node:=planner', '-r'] and '__ns:=/left' in managed.command
    assert '/clock:=clock' in managed.command
    params_file = managed.command[managed.command.index('--params-file') + 1]
    assert yaml.safe_load(open(params_file)) == {
        '/left/planner': {'ros__parameters': {'autostart': False}}}
    strip = [a for a in managed.command if not a.endswith('.yaml')]
    assert strip == [a for a in plain.command if not a.endswith('.yaml')]


@pytest.mark.parametrize('autostart', ["autostart: false", "autostart: 'false'",
                                       "autostart: $(var start)", ""])
def test_autostart_false_or_absent_is_accepted(resolve, autostart):
    separator = ', ' if autostart else ''
    managed, = resolve(f"launch:\n- arg: {{name: start, default: '0'}}\n"
                       f"- lifecycle_node: {{{NODE}, name: a, namespace: ''"
                       f"{separator}{autostart}}}\n")
    assert managed.lifecycle and managed.node_name == '/a'


@pytest.mark.parametrize('text, message', [
    (f"- lifecycle_node: {{{NODE}, namespace: ''}}", r"needs 'name'"),
    (f"- lifecycle_node: {{{NODE}, name: a}}", r"needs 'namespace'"),
    (f"- lifecycle_node: {{{NODE}}}", r"needs 'name' and 'namespace'"),
    (f"- lifecycle_node: {{{NODE}, name: a, namespace: '', autostart: true}}",
     r"'autostart: true' is not supported by mbrl-ros launch"),
    (f"- lifecycle_node: {{{NODE}, name: a, namespace: '', autostart: 'yes'}}",
     r"'autostart: true' is not supported"),
    (f"- lifecycle_node: {{{NODE}, name: a, namespace: '', autostart: 'maybe'}}",
     r"attribute 'autostart': cannot convert 'maybe'"),
    (f"- lifecycle_node: {{{NODE}, name: a, namespace: '', autostart: 1}}",
     r"'autostart' must be of type bool"),
    (f"- lifecycle_node: {{{NODE}, name: a, namespace: '', auto_start: false}}",
     r"unsupported attribute\(s\) \['auto_start'\]"),
    ("- lifecycle_transition: {lifecycle_node_names: [a], transition_ids: ['1']}",
     r"'lifecycle_transition'.*not supported by mbrl-ros launch"),
])
def test_what_ros2_launch_refuses_or_the_runner_cannot_do_is_an_error(resolve, text, message):
    with pytest.raises(LaunchFileError, match=message):
        resolve(f"launch:\n{text}\n")


def test_the_package_graph_manages_the_planner_and_the_gate(tmp_path):
    """The launch files start the planner and the gate unconfigured (``autostart`` false; as
    ``node``, which every launch_ros reads) and a lifecycle manager that brings them up."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    processes = resolve_launch_file(os.path.join(repo, 'launch', 'arm_sim.launch.yaml'), {},
                                    str(tmp_path))
    by_name = {p.node_name: p for p in processes}
    assert not any(p.lifecycle for p in processes)
    manager = by_name['/lifecycle_manager']
    assert manager.respawn and not manager.lifecycle

    def parameters(process):
        found = {}
        for index, argument in enumerate(process.command):
            if argument == '--params-file':
                document = yaml.safe_load(open(process.command[index + 1]))
                found.update(document.get(process.node_name, {}).get('ros__parameters', {}))
        return found
    assert parameters(manager)['managed_nodes'] == ['safety_gate', 'planner']
    for name in ('/planner', '/safety_gate'):
        assert parameters(by_name[name])['autostart'] is False
        assert by_name[name].respawn
