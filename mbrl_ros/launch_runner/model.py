"""The parsed form of a launch file: one dataclass per supported entity (action)."""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from mbrl_ros.launch_runner.substitutions import Parts


@dataclass(frozen=True)
class Condition:
    """An ``if`` or ``unless`` attribute: the action runs when it evaluates to ``expected``."""

    expression: Parts
    expected: bool


@dataclass(frozen=True)
class Origin:
    """Where an entity was written, for error messages and ``$(dirname)``."""

    file_path: str
    entity: str


@dataclass
class Action:
    """Common part of every action: where it comes from and its condition."""

    origin: Origin
    condition: Optional[Condition]


@dataclass
class DeclareArgument(Action):
    """``arg``: a launch argument with an optional default and allowed choices."""

    name: str = ''
    default: Optional[Parts] = None
    description: str = ''
    choices: Optional[List[str]] = None


@dataclass
class SetLaunchConfiguration(Action):
    """``let``: set a launch configuration."""

    name: Parts = ()
    value: Parts = ()


@dataclass
class SetEnvironmentVariable(Action):
    """``set_env``: set an environment variable for the nodes that follow."""

    name: Parts = ()
    value: Parts = ()


@dataclass
class UnsetEnvironmentVariable(Action):
    """``unset_env``: remove an environment variable for the nodes that follow."""

    name: Parts = ()


@dataclass
class LogInfo(Action):
    """``log``: print a message."""

    message: Parts = ()


@dataclass
class PushRosNamespace(Action):
    """``push_ros_namespace`` / ``push-ros-namespace``: prefix the namespace of later nodes."""

    namespace: Parts = ()


@dataclass
class Group(Action):
    """``group``: actions sharing a (by default scoped) set of configurations."""

    scoped: bool = True
    forwarding: bool = True
    keeps: List[Tuple[Parts, Parts]] = field(default_factory=list)
    actions: List[Action] = field(default_factory=list)


@dataclass
class Include(Action):
    """``include``: another launch file, with arguments set as launch configurations."""

    file: Parts = ()
    arguments: List[Tuple[Parts, Parts]] = field(default_factory=list)


#: An inline parameter value as written: a scalar, a string (parsed), or a list of them.
RawValue = Union[bool, int, float, Parts, List[Union[bool, int, float, Parts]]]


@dataclass(frozen=True)
class ParameterValue:
    """An inline parameter value and its optional declared ``type``."""

    value: RawValue
    value_type: Optional[str]


#: Inline parameters of one ``param`` item: name -> value, or name -> nested parameters.
ParameterTree = Dict[Parts, Union[ParameterValue, 'ParameterTree']]


@dataclass(frozen=True)
class ParameterFile:
    """A ``param`` item with ``from``: a YAML parameters file."""

    path: Parts


@dataclass
class Node(Action):
    """``node``: a ROS node process, with the attributes of launch_ros Node; also
    ``lifecycle_node`` (launch_ros LifecycleNode), with ``lifecycle`` set."""

    package: Optional[Parts] = None
    executable: Parts = ()
    name: Optional[Parts] = None
    namespace: Optional[Parts] = None
    exec_name: Optional[Parts] = None
    arguments: List[Parts] = field(default_factory=list)
    ros_arguments: Optional[List[Parts]] = None
    parameters: List[Union[ParameterFile, ParameterTree]] = field(default_factory=list)
    remappings: List[Tuple[Parts, Parts]] = field(default_factory=list)
    environment: List[Tuple[Parts, Parts]] = field(default_factory=list)
    cwd: Optional[Parts] = None
    output: Optional[Parts] = None
    launch_prefix: Optional[Parts] = None
    on_exit_shutdown: bool = False
    respawn: Optional[Parts] = None
    respawn_delay: Optional[float] = None
    respawn_max_retries: Optional[int] = None
    sigterm_timeout: Optional[float] = None
    sigkill_timeout: Optional[float] = None
    lifecycle: bool = False
    """Written as ``lifecycle_node``: a managed node, which starts unconfigured."""
    autostart: Optional[Union[bool, Parts]] = None
    """``lifecycle_node``'s ``autostart`` (a YAML bool or a string with substitutions)."""


@dataclass
class LaunchDescription:
    """A parsed launch file."""

    file_path: str
    actions: List[Action]
