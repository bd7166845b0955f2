"""Walk a parsed launch description and resolve it into node processes to start.

The walk follows the semantics of ros2 launch for the supported actions: launch
configurations and the environment are scoped by ``group`` (not by ``include``), ``arg`` keeps
a value set earlier (command line, ``include`` argument, ``let``), the ROS namespace pushed by
``push_ros_namespace`` lives in the ``ros_namespace`` configuration, and conditions are
checked when the walk reaches the action.
"""

import logging
import os
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import yaml

from mbrl_ros.launch_runner import model, packages, ros_names
from mbrl_ros.launch_runner.errors import LaunchError, LaunchFileError
from mbrl_ros.launch_runner.parser import load_launch_file
from mbrl_ros.launch_runner.substitutions import perform, to_bool, to_typed_bool

logger = logging.getLogger(__name__)

#: Seconds from SIGINT to SIGTERM and from SIGTERM to SIGKILL, as in ros2 launch.
DEFAULT_SIGNAL_TIMEOUT_S = 5.0
#: Launch configurations that set the shutdown timeouts for every node (ros2 launch names).
SIGTERM_TIMEOUT_CONFIGURATION = 'sigterm_timeout'
SIGKILL_TIMEOUT_CONFIGURATION = 'sigkill_timeout'
ROS_NAMESPACE_CONFIGURATION = 'ros_namespace'
OUTPUT_MODES = ('screen', 'log', 'both')
DEFAULT_OUTPUT = 'log'
#: Respawn forever unless ``respawn_max_retries`` says otherwise.
UNLIMITED_RESPAWNS = -1


@dataclass
class NodeProcess:
    """A resolved node: everything needed to start and supervise its process."""

    label: str
    command: List[str]
    environment: Dict[str, str]
    cwd: Optional[str]
    output: str
    node_name: Optional[str]
    on_exit_shutdown: bool
    respawn: bool
    respawn_delay_s: float
    respawn_max_retries: int
    sigterm_timeout_s: float
    sigkill_timeout_s: float
    lifecycle: bool = False
    """A ``lifecycle_node``: starts unconfigured; a lifecycle manager brings it up."""


@dataclass
class LaunchContext:
    """Launch configurations, environment and the current file, with group scopes."""

    configurations: Dict[str, str]
    environment: Dict[str, str]
    params_dir: str
    file_path: str = ''
    initial_environment: Dict[str, str] = field(default_factory=dict)
    process_count: int = 0
    _scopes: List[Tuple[Dict[str, str], Dict[str, str]]] = field(default_factory=list)

    def push(self) -> None:
        """Start a scope: later changes are undone by ``pop``."""
        self._scopes.append((dict(self.configurations), dict(self.environment)))

    def pop(self) -> None:
        """End the innermost scope."""
        self.configurations, self.environment = self._scopes.pop()


class Executor:
    """Resolve actions into ``NodeProcess`` objects, in launch-file order."""

    def __init__(self, context: LaunchContext) -> None:
        self.context = context
        self.processes: List[NodeProcess] = []

    def run(self, description: model.LaunchDescription) -> List[NodeProcess]:
        """Walk ``description``; return the processes to start."""
        self._run_actions(description.actions)
        return self.processes

    def _run_actions(self, actions: List[model.Action]) -> None:
        for action in actions:
            try:
                self._visit(action)
            except LaunchFileError:
                raise
            except LaunchError as err:
                raise LaunchFileError(str(err), action.origin.file_path,
                                      _describe(action)) from None

    def _visit(self, action: model.Action) -> None:
        self.context.file_path = action.origin.file_path
        if action.condition is not None:
            text = perform(action.condition.expression, self.context)
            holds = to_bool(text, "condition 'if'/'unless'")
            if holds != action.condition.expected:
                return
        handler = getattr(self, '_do_' + type(action).__name__)
        handler(action)

    def _do_DeclareArgument(self, action: model.DeclareArgument) -> None:
        configurations = self.context.configurations
        if action.name not in configurations:
            if action.default is None:
                raise LaunchError(f"required launch argument '{action.name}' was not provided "
                                  f'(description: {action.description!r}); '
                                  f'pass it as {action.name}:=<value>')
            configurations[action.name] = perform(action.default, self.context)
        if action.choices is not None and configurations[action.name] not in action.choices:
            raise LaunchError(f"argument '{action.name}' has value "
                              f"{configurations[action.name]!r}, not one of {action.choices}")

    def _do_SetLaunchConfiguration(self, action: model.SetLaunchConfiguration) -> None:
        name = perform(action.name, self.context)
        self.context.configurations[name] = perform(action.value, self.context)

    def _do_SetEnvironmentVariable(self, action: model.SetEnvironmentVariable) -> None:
        name = perform(action.name, self.context)
        self.context.environment[name] = perform(action.value, self.context)

    def _do_UnsetEnvironmentVariable(self, action: model.UnsetEnvironmentVariable) -> None:
        self.context.environment.pop(perform(action.name, self.context), None)

    def _do_LogInfo(self, action: model.LogInfo) -> None:
        logger.info('%s', perform(action.message, self.context))

    def _do_PushRosNamespace(self, action: model.PushRosNamespace) -> None:
        pushed = perform(action.namespace, self.context)
        previous = self.context.configurations.get(ROS_NAMESPACE_CONFIGURATION)
        namespace = ros_names.make_namespace_absolute(
            ros_names.prefix_namespace(previous, pushed))
        ros_names.validate_namespace(namespace)
        self.context.configurations[ROS_NAMESPACE_CONFIGURATION] = namespace

    def _do_Group(self, action: model.Group) -> None:
        if not action.scoped:
            for name, value in action.keeps:
                self.context.configurations[perform(name, self.context)] = \
                    perform(value, self.context)
            self._run_actions(action.actions)
            return
        self.context.push()
        try:
            keeps = {perform(n, self.context): perform(v, self.context)
                     for n, v in action.keeps}
            if not action.forwarding:
                self.context.environment = dict(self.context.initial_environment)
                self.context.configurations = {}
            self.context.configurations.update(keeps)
            self._run_actions(action.actions)
        finally:
            self.context.pop()

    def _do_Include(self, action: model.Include) -> None:
        path = perform(action.file, self.context)
        if not os.path.isfile(path):
            raise LaunchError(f'included launch file {path!r} does not exist (a relative path '
                              'is taken from the working directory; use $(dirname)/... or '
                              '$(find-pkg-share pkg)/...)')
        description = load_launch_file(path)
        given = [(perform(n, self.context), perform(v, self.context))
                 for n, v in action.arguments]
        given_names = [name for name, _ in given]
        for argument in _unconditional_arguments(description.actions):
            if argument.default is None and argument.name not in given_names:
                raise LaunchError(
                    f"included launch file {path!r} is missing required argument "
                    f"'{argument.name}' (description: {argument.description!r}), "
                    f'given: {given_names}')
        for name, value in given:
            self.context.configurations[name] = value
        self._run_actions(description.actions)

    def _do_Node(self, action: model.Node) -> None:
        self.processes.append(_resolve_node(action, self.context))


def _describe(action: model.Action) -> str:
    label = f"'{action.origin.entity}'"
    if isinstance(action, (model.Node, model.DeclareArgument)) and action.name:
        name = action.name if isinstance(action.name, str) else ''.join(
            getattr(p, 'text', '$(...)') for p in action.name)
        label += f' (name: {name})'
    return label


def _unconditional_arguments(actions: List[model.Action]) -> List[model.DeclareArgument]:
    """``arg`` entities not under a condition, through groups (launch's best-effort check)."""
    found = []
    for action in actions:
        if action.condition is not None:
            continue
        if isinstance(action, model.DeclareArgument):
            found.append(action)
        elif isinstance(action, model.Group):
            found.extend(_unconditional_arguments(action.actions))
    return found


def _timeout(action_value: Optional[float], context: LaunchContext, configuration: str) -> float:
    if action_value is not None:
        return action_value
    text = context.configurations.get(configuration)
    if text is None:
        return DEFAULT_SIGNAL_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        raise LaunchError(f"launch configuration '{configuration}' must be a number, "
                          f'got {text!r}') from None
    if value < 0.0:
        raise LaunchError(f"launch configuration '{configuration}' must be non-negative")
    return value


def _write_params_file(context: LaunchContext, key: str, parameters: Mapping) -> str:
    with tempfile.NamedTemporaryFile('w', prefix='launch_params_', suffix='.yaml',
                                     dir=context.params_dir, delete=False) as handle:
        yaml.safe_dump({key: {'ros__parameters': dict(parameters)}}, handle,
                       default_flow_style=False)
        return handle.name


def _check_autostart(action: model.Node, context: LaunchContext) -> None:
    """A lifecycle node's ``autostart`` must be false here: the runner starts processes and
    calls no ROS service (``ros2 launch`` configures and activates such a node itself)."""
    value = action.autostart
    if value is not None and not isinstance(value, bool):
        value = to_typed_bool(perform(value, context), "attribute 'autostart'")
    if value:
        raise LaunchError("lifecycle_node 'autostart: true' is not supported by mbrl-ros "
                          'launch (it calls no ROS service); leave it false and start a '
                          'lifecycle manager (mbrl_ros lifecycle_manager, parameter '
                          'managed_nodes)')


def _resolve_node(action: model.Node, context: LaunchContext) -> NodeProcess:
    """Build the command line of a node exactly as launch_ros ``Node`` does (a
    ``lifecycle_node``'s too: it differs only in the state its process starts in)."""
    if action.lifecycle:
        _check_autostart(action, context)
    package = None if action.package is None else perform(action.package, context)
    executable = perform(action.executable, context)
    name = None if action.name is None else perform(action.name, context)
    if name is not None:
        ros_names.validate_node_name(name)
    namespace = None if action.namespace is None else perform(action.namespace, context)
    namespace = ros_names.make_namespace_absolute(ros_names.prefix_namespace(
        context.configurations.get(ROS_NAMESPACE_CONFIGURATION), namespace))
    if namespace is not None:
        ros_names.validate_namespace(namespace)
    fully_specified = name is not None and namespace is not None
    full_name = ros_names.prefix_namespace(namespace, name) if fully_specified else None

    command = [] if action.launch_prefix is None else shlex.split(
        perform(action.launch_prefix, context))
    command += packages.resolve_executable(package, executable, context.environment)
    command += [perform(arg, context) for arg in action.arguments]
    if action.ros_arguments is not None:
        command += ['--ros-args'] + [perform(arg, context) for arg in action.ros_arguments]
    command += ['--ros-args']
    if name is not None:
        command += ['-r', f'__node:={name}']
    if namespace is not None:
        command += ['-r', f'__ns:={namespace}']
    for parameters in action.parameters:
        if isinstance(parameters, model.ParameterFile):
            path = os.path.abspath(perform(parameters.path, context))
            if not os.path.isfile(path):
                raise LaunchError(f'parameters file {path!r} does not exist')
        else:
            flat = ros_names.evaluate_parameter_tree(parameters, context)
            path = _write_params_file(context, full_name or '/**', flat)
        command += ['--params-file', path]
    for source, target in action.remappings:
        command += ['-r', f'{perform(source, context)}:={perform(target, context)}']

    environment = dict(context.environment)
    for env_name, env_value in action.environment:
        environment[perform(env_name, context)] = perform(env_value, context)
    output = DEFAULT_OUTPUT if action.output is None else perform(action.output, context)
    if output not in OUTPUT_MODES:
        raise LaunchError(f'output {output!r} is not supported (one of {OUTPUT_MODES})')
    base_label = perform(action.exec_name, context) if action.exec_name else \
        Path(executable).name
    context.process_count += 1  # one counter for all processes, as in launch
    return NodeProcess(
        label=f'{base_label}-{context.process_count}',
        command=command,
        environment=environment,
        cwd=None if action.cwd is None else perform(action.cwd, context),
        output=output,
        node_name=full_name,
        on_exit_shutdown=action.on_exit_shutdown,
        respawn=False if action.respawn is None else to_typed_bool(
            perform(action.respawn, context), "attribute 'respawn'"),
        respawn_delay_s=0.0 if action.respawn_delay is None else action.respawn_delay,
        respawn_max_retries=UNLIMITED_RESPAWNS if action.respawn_max_retries is None
        else action.respawn_max_retries,
        sigterm_timeout_s=_timeout(action.sigterm_timeout, context,
                                   SIGTERM_TIMEOUT_CONFIGURATION),
        sigkill_timeout_s=_timeout(action.sigkill_timeout, context,
                                   SIGKILL_TIMEOUT_CONFIGURATION),
        lifecycle=action.lifecycle,
    )


def resolve_launch_file(file_path: str, arguments: Mapping[str, str], params_dir: str,
                        environment: Optional[Mapping[str, str]] = None) -> List[NodeProcess]:
    """Parse ``file_path`` with command-line ``arguments`` and return its node processes.

    Inline parameters are written as params files into ``params_dir``.
    Raises LaunchFileError / LaunchError with a message naming the file and entity.
    """
    env = dict(os.environ if environment is None else environment)
    context = LaunchContext(configurations=dict(arguments), environment=env,
                            params_dir=params_dir, initial_environment=dict(env))
    description = load_launch_file(file_path)
    return Executor(context).run(description)
