"""Launch-file parsing and resolution into node command lines (no ROS needed)."""

import os
import stat
import sys
import textwrap

import pytest
import yaml

from mbrl_ros.launch_runner import packages
from mbrl_ros.launch_runner.errors import LaunchError, LaunchFileError
from mbrl_ros.launch_runner.executor import resolve_launch_file


@pytest.fixture
def write(tmp_path):
    """Write a launch file into tmp_path and return its path."""
    def _write(name, text):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)
    return _write


@pytest.fixture
def resolve(tmp_path):
    env = {'PATH': os.path.dirname(sys.executable), 'AMENT_PREFIX_PATH': ''}

    def _resolve(path, **arguments):
        return resolve_launch_file(path, arguments, str(tmp_path), environment=env)
    return _resolve


NODE = 'exec: {}'.format(sys.executable)


def ros_args(process):
    return process.command[process.command.index('--ros-args'):]


def params_in(process):
    files = [process.command[i + 1] for i, a in enumerate(process.command)
             if a == '--params-file']
    return [yaml.safe_load(open(f)) for f in files]


def test_namespaces_remaps_and_scoping(write, resolve):
    inner = write("inner.launch.yaml", """
        launch:
        - arg: {name: ns}
        - push_ros_namespace: {namespace: $(var ns)}
        - let: {name: leaked, value: 'true'}
        """)
    path = write('main.launch.yaml', f"""
        launch:
        - arg: {{name: top, default: robot}}
        - group:
            children:
            - push-ros-namespace: {{namespace: $(var top)}}
            - let: {{name: scoped_only, value: '1'}}
            - node: {{{NODE}, name: a, namespace: sub, remap: [{{from: x, to: y}}]}}
        - node: {{{NODE}, name: b, if: $(var scoped_only false)}}
        - include:
            file: {inner}
            arg: [{{name: ns, value: outer}}]
        - node: {{{NODE}, name: c, args: --flag v, unless: $(not $(var leaked))}}
        """)
    processes = resolve(path)
    assert [p.node_name for p in processes] == ['/robot/sub/a', '/outer/c']
    assert ros_args(processes[0]) == ['--ros-args', '-r', '__node:=a', '-r',
                                      '__ns:=/robot/sub', '-r', 'x:=y']
    assert processes[1].command[1:3] == ['--flag', 'v']
    assert [p.label for p in processes] == [f'{os.path.basename(sys.executable)}-{i}'
                                            for i in (1, 2)]


@pytest.mark.parametrize('namespace, pushed, expected', [
    ('', None, '/'),                      # the default: the root namespace, as launch_ros
    ('robot_a', None, '/robot_a'),
    ('/robot_a/', None, '/robot_a'),
    ('robot_a', 'fleet', '/fleet/robot_a'),  # relative: below a pushed namespace
    ('', 'fleet', '/fleet'),
    ('/robot_a', 'fleet', '/robot_a'),    # absolute: the pushed namespace does not apply
])
def test_node_namespace_from_an_argument(write, resolve, namespace, pushed, expected):
    """A ``namespace`` launch argument (default '') on the node's ``namespace`` attribute, as
    the package's launch files use it; inline parameters are keyed by the full node name."""
    push = '' if pushed is None else f'- push_ros_namespace: {{namespace: {pushed}}}'
    path = write('ns.launch.yaml', f"""
        launch:
        - arg: {{name: namespace, default: ''}}
        - group:
            children:
            {push}
            - node:
                {NODE}
                name: gate
                namespace: $(var namespace)
                param: [{{name: rate, value: 50.0}}]
                remap: [{{from: effort_controller/commands, to: arm/commands}},
                        {{from: /clock, to: clock}}]
        """)
    (gate,) = resolve(path, namespace=namespace)
    full_name = expected.rstrip('/') + '/gate'
    assert gate.node_name == full_name
    assert ros_args(gate)[:5] == ['--ros-args', '-r', '__node:=gate', '-r', f'__ns:={expected}']
    assert ros_args(gate)[-4:] == ['-r', 'effort_controller/commands:=arm/commands',
                                   '-r', '/clock:=clock']
    assert params_in(gate) == [{full_name: {'ros__parameters': {'rate': 50.0}}}]


def test_command_line_arguments_override_defaults_and_required_args(write, resolve):
    path = write('a.launch.yaml', """
        launch:
        - arg: {name: mode, default: slow, choice: [{value: slow}, {value: fast}]}
        - arg: {name: robot, description: which robot}
        """)
    assert resolve(path, robot='r1', mode='fast') == []
    with pytest.raises(LaunchFileError, match="required launch argument 'robot'.*robot:="):
        resolve(path)
    with pytest.raises(LaunchFileError, match="'medium', not one of"):
        resolve(path, robot='r1', mode='medium')


def test_inline_parameters_are_typed_like_launch_ros(write, resolve, tmp_path):
    params_file = tmp_path / 'p.yaml'
    params_file.write_text('/**:\n  ros__parameters:\n    gain: 1.0\n')
    path = write('p.launch.yaml', f"""
        launch:
        - let: {{name: horizon, value: '12'}}
        - node:
            {NODE}
            name: planner
            namespace: mbrl
            param:
            - from: {params_file}
            - {{name: horizon, value: $(var horizon)}}
            - {{name: label, value: '12', type: str}}
            - {{name: gains, value: [1.0, 2.5]}}
            - name: limits
              param:
              - {{name: low, value: -1.5}}
        - node: {{{NODE}, name: other, param: [{{name: enabled, value: true}},
                                                {{name: quoted, value: 'true'}}]}}
        """)
    planner, other = resolve(path)
    loaded = params_in(planner)
    assert loaded[0] == {'/**': {'ros__parameters': {'gain': 1.0}}}
    assert [d['/mbrl/planner']['ros__parameters'] for d in loaded[1:]] == [
        {'horizon': 12}, {'label': '12'}, {'gains': [1.0, 2.5]}, {'limits.low': -1.5}]
    # a plain quoted string stays a string, as launch_ros's parse_if_substitutions keeps it
    assert params_in(other) == [{'/**': {'ros__parameters': {'enabled': True}}},
                                {'/**': {'ros__parameters': {'quoted': 'true'}}}]


@pytest.mark.parametrize('body, message', [
    ("- arg: {name: x, default: 5}", r"'default' must be of type str.*quote it"),
    ("- node: {exec: a, nmae: b}", r"entity 'node'.*unsupported attribute\(s\) \['nmae'\]"),
    ("- node: {exec: a, name: b, shell: true}", r"'node' \(name: b\).*\['shell'\]"),
    ("- timer: {period: '1'}", "'timer'.*not supported by mbrl-ros launch"),
    ("- nodes: {exec: a}", "'nodes'.*unknown entity type"),
    ("- node: {exec: a, args: $(eval 1)}", r"'node'.*\$\(eval\)' is not supported"),
    ("- node: {exec: a, on_exit: restart}", "'on_exit' must be 'shutdown'"),
    ("- group: [{log: {message: x}}]\n- log: {message: hi, if: maybe}", "expected one of"),
])
def test_invalid_or_unsupported_input_names_file_and_entity(write, resolve, body, message):
    path = write('bad.launch.yaml', 'launch:\n' + body + '\n')
    with pytest.raises(LaunchFileError, match=message) as info:
        resolve(path)
    assert 'bad.launch.yaml' in str(info.value)


def test_respawn_attributes_are_typed_like_launch_execute_process(write, resolve):
    """launch's ExecuteProcess.parse: ``respawn`` a substitution read as a bool (YAML rules,
    '1'/'0'), ``respawn_delay`` a YAML float, ``respawn_max_retries`` a YAML integer."""
    path = write('r.launch.yaml', f"""
        launch:
        - arg: {{name: again, default: 'false'}}
        - node: {{{NODE}, name: a, respawn: 'true', respawn_delay: 1.5}}
        - node: {{{NODE}, name: b, respawn: 'yes', respawn_max_retries: 3}}
        - node: {{{NODE}, name: c, respawn: $(var again)}}
        - node: {{{NODE}, name: d, respawn: '1', respawn_delay: 0.0}}
        - node: {{{NODE}, name: e}}
        """)
    a, b, c, d, e = resolve(path)
    assert [p.respawn for p in (a, b, c, d, e)] == [True, True, False, True, False]
    assert [p.respawn_delay_s for p in (a, b, d, e)] == [1.5, 0.0, 0.0, 0.0]
    assert [p.respawn_max_retries for p in (a, b)] == [-1, 3]
    assert resolve(path, again='True')[2].respawn
    assert a.command == resolve(path)[0].command  # what a respawn starts again


@pytest.mark.parametrize('attributes, message', [
    ("respawn: true", r"'respawn' must be of type str.*quote it"),
    ("respawn: 'maybe'", r"attribute 'respawn': cannot convert 'maybe' to a bool"),
    ("respawn: 'tRUE'", r"cannot convert 'tRUE' to a bool"),
    ("respawn_delay: '2.0'", r"'respawn_delay' must be a YAML float.*string '2.0'"),
    ("respawn_delay: 2", r"'respawn_delay' must be of type float, got int"),
    ("respawn_delay: -1.0", r"'respawn_delay' must be non-negative"),
    ("respawn_max_retries: '3'", r"'respawn_max_retries' must be a YAML integer"),
    ("sigterm_timeout: '3.0'", r"'sigterm_timeout' must be a YAML float"),
])
def test_respawn_attributes_launch_would_refuse_are_errors(write, resolve, attributes,
                                                           message):
    path = write('bad.launch.yaml', f'launch:\n- node: {{{NODE}, {attributes}}}\n')
    with pytest.raises(LaunchFileError, match=message):
        resolve(path)


def test_include_checks_its_required_arguments(write, resolve):
    inner = write('inner.launch.yaml', 'launch:\n- arg: {name: needed}\n')
    path = write('outer.launch.yaml', f'launch:\n- include: {{file: {inner}}}\n')
    with pytest.raises(LaunchFileError, match="missing required argument 'needed'"):
        resolve(path, needed='given on the command line is not enough, as in launch')


def test_executable_resolution_order(tmp_path, monkeypatch):
    prefix = tmp_path / 'install'
    (prefix / 'share/ament_index/resource_index/packages').mkdir(parents=True)
    (prefix / 'share/ament_index/resource_index/packages/demo').write_text('')
    (prefix / 'lib/demo').mkdir(parents=True)
    exe = prefix / 'lib/demo/run_me'
    exe.write_text('#!/bin/sh\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    env = {'AMENT_PREFIX_PATH': str(prefix), 'PATH': ''}
    assert packages.resolve_executable('demo', 'run_me', env) == [str(exe)]
    assert packages.package_share('demo', env) == str(prefix / 'share/demo')
    with pytest.raises(LaunchError, match="'missing' not found for package 'demo'"):
        packages.resolve_executable('demo', 'missing', env)
    monkeypatch.setattr(packages.importlib.util, 'find_spec', lambda name: object())
    assert packages.resolve_executable('mbrl_ros', 'some_node', env) == [
        sys.executable, '-m', 'mbrl_ros.nodes.some_node']
