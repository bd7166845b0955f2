"""Read the trainer's section of a ROS 2 parameters file into the configs the trainer uses.

The offline tools (``mbrl-ros train`` / ``mbrl-ros evaluate``) must train and judge exactly
the models ``trainer_node`` trains, so they read the same parameters file (e.g.
``config/arm7.yaml``) the same way the node declares its parameters:

* top-level keys: :class:`TrainerNodeConfig` and
  :class:`~mbrl_ros.training.online_trainer.TrainerConfig` fields;
* ``ensemble.*``: :class:`~mbrl_ros.core.ensemble.EnsembleConfig`;
* ``gp.*``: :class:`~mbrl_ros.core.gp_dynamics_config.GPDynamicsConfig` (``model_kind: gp``);
* ``data.*``: :class:`~mbrl_ros.data.dataset_config.RobotStreamsConfig` (joints default to
  the URDF's joints, the command topic to ``/effort_controller/commands``);
* ``alignment.*``: :class:`~mbrl_ros.data.dataset_config.AlignmentConfig`
  (``control_rate_hz`` defaults to ``1 / model_period_s`` and must equal it);
* ``cost.*``: the planner's task cost (``ReachCostConfig`` or ``StandCostConfig``, per
  ``task``) and ``value.*``: :class:`~mbrl_ros.training.value_training.ValueTrainingConfig`,
  for the trainer's value/policy rounds.

Wildcard sections (``/**``) apply to every node: the shipped files keep ``task`` and ``cost``
there, read by the planner and the trainer alike. A key of a wildcard section that no trainer
config has is meant for another node and ignored (as ROS ignores it); in the trainer's own
section it is an error.

Nested dicts (``ensemble: {num_members: 5}``) and dotted keys (``ensemble.num_members: 5``)
are both accepted. Unknown keys are an error (a typo must not silently train another model).
Values are converted by :func:`mbrl_ros.core.config_values.coerce_value`, the function the
nodes convert their parameters with (``servo_kp: 100`` is ``(100.0,)`` either way).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar

import torch
import yaml

from mbrl_ros.core.config_values import coerce_value
from mbrl_ros.core.ensemble import EnsembleConfig
from mbrl_ros.core.gp_dynamics_config import GPDynamicsConfig
from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig
from mbrl_ros.robots.robot_model import with_continuous_angles
from mbrl_ros.robots.servo_model import robot_servo_config
from mbrl_ros.tasks.reach import load_robot, nominal_dynamics
from mbrl_ros.training.online_trainer import TrainerConfig
from mbrl_ros.training.value_training import COST_CONFIGS, TASKS, ValueTrainingConfig

ConfigT = TypeVar("ConfigT")

NODE_NAME = "trainer"
"""Name of the trainer node whose section is read."""
DEFAULT_COMMAND_TOPIC = "effort_controller/commands"
"""Command topic the trainer node defaults to (the effort controller's input)."""
SECTIONS = {"ensemble.": EnsembleConfig, "gp.": GPDynamicsConfig, "data.": RobotStreamsConfig,
            "alignment.": AlignmentConfig, "value.": ValueTrainingConfig}
"""Parameter prefix -> config class of the nested sections (``cost.`` depends on the task:
:data:`~mbrl_ros.training.value_training.COST_CONFIGS`)."""
COST_PREFIX = "cost."
"""Prefix of the task cost's parameters (the planner's)."""
ROS_BUILTIN_PREFIXES = ("use_sim_time", "qos_overrides.", "start_type_description_service")
"""Parameters every ROS node has; ignored here."""


class ParametersFileLoader(yaml.SafeLoader):
    """YAML read as ROS 2 reads parameters files: ``1e-3`` is a number (as in YAML 1.2), where
    PyYAML's YAML 1.1 rules would make it a string."""


ParametersFileLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


@dataclass(frozen=True)
class TrainerNodeConfig:
    """Node-level settings of ``trainer_node`` (same fields and defaults as the node's)."""

    urdf: str = ""
    """Robot URDF (file path or package:// URI): joints and the analytical model."""
    task: str = "reach"
    """The planner's task ("reach" or "stand"): the reward of the value/policy rounds is
    minus its cost (parameters ``cost.*``, the planner's)."""
    ee_frame: str = "ee_link"
    """End-effector frame (recorded in checkpoints)."""
    model_period_s: float = 0.01
    """Period of one model step [s]; data is aligned at 1 / model_period_s."""
    nominal_substeps: int = 5
    """Integration substeps of the analytical model per model period."""
    gravity_compensated: bool = False
    """The robot's driver compensates gravity: the analytical model has none."""
    command_mode: str = "effort"
    """What the commands are: "effort" (torques; nominal = URDF rigid-body model) or
    "position" (targets for the driver's joint servo; nominal = the servo model)."""
    servo_kp: Tuple[float, ...] = ()
    """Position mode: the driver's servo stiffness per joint [N m/rad] (one value or one per
    joint, URDF order). Empty: derived from the URDF by the rule ``mbrl-ros robot-config``
    writes (mbrl_ros/robots/defaults.py)."""
    servo_kd: Tuple[float, ...] = ()
    """Position mode: the driver's servo damping per joint [N m s/rad]; empty: derived."""
    device: str = "cpu"
    """Torch device for training."""
    torch_threads: int = 1
    """Torch CPU threads for training (leave cores to the planner and the simulator)."""
    niceness: int = 10
    """The trainer node lowers its own scheduling priority by this much (Linux ``nice``), so
    training on the robot's computer never takes CPU time from the control loop; 0 keeps it."""

    def validate(self) -> "TrainerNodeConfig":
        """Raise ValueError on a bad setting; return self."""
        if not self.urdf:
            raise ValueError("no robot URDF: pass --urdf or set the trainer parameter 'urdf'")
        if not self.model_period_s > 0 or self.nominal_substeps < 1 or self.torch_threads < 1:
            raise ValueError("model_period_s must be > 0; nominal_substeps, torch_threads >= 1")
        if not 0 <= self.niceness <= 19:
            raise ValueError(f"niceness must be in [0, 19], got {self.niceness}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.command_mode not in ("effort", "position"):
            raise ValueError(f"command_mode must be 'effort' or 'position', "
                             f"got {self.command_mode!r}")
        return self


@dataclass(frozen=True)
class TrainingSetup:
    """Everything the trainer node would build from its parameters."""

    node: TrainerNodeConfig
    trainer: TrainerConfig
    ensemble: EnsembleConfig
    streams: RobotStreamsConfig
    alignment: AlignmentConfig
    source: str
    """The parameters file read."""
    robot: Any = dataclasses.field(default=None, compare=False, repr=False)
    """The loaded :class:`~mbrl_ros.robots.robot_model.RobotModel` of ``node.urdf``."""
    cost: Any = None
    """The planner's task cost settings (``cost.*``): the ``ReachCostConfig`` or
    ``StandCostConfig`` of ``node.task``."""
    value: ValueTrainingConfig = ValueTrainingConfig()
    """Settings of the value/policy rounds (``value.*``)."""
    gp: GPDynamicsConfig = GPDynamicsConfig()
    """Settings of ``model_kind: gp`` (``gp.*``; the continuous joints' angles added to
    ``angle_wrap``, as for the ensemble)."""

    def metadata(self) -> Dict[str, Any]:
        """Checkpoint metadata the trainer node writes (robot joints, period, URDF)."""
        return dict(joints=list(self.streams.joints), model_period_s=self.node.model_period_s,
                    urdf=self.node.urdf)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _node_sections(document: Mapping[str, Any], node_name: str, path: str = ""):
    """Yield ``(specificity, parameters)`` of every section that applies to ``node_name``."""
    for key, value in document.items():
        if not isinstance(value, Mapping):
            continue
        name = f"{path}/{str(key).strip('/')}"
        if "ros__parameters" in value:
            last = name.rstrip("/").rsplit("/", 1)[-1]
            if last in ("**", "*"):
                yield 0, value["ros__parameters"] or {}
            elif last == node_name:
                yield 1, value["ros__parameters"] or {}
        else:
            yield from _node_sections(value, node_name, name)


def read_node_parameters(path: str | Path, node_name: str = NODE_NAME,
                         wildcards: bool = True) -> Dict[str, Any]:
    """Flat ``{dotted.name: value}`` parameters of ``node_name`` in a ROS 2 parameters file.

    Wildcard sections (``/**``) apply first (unless ``wildcards`` is False), then sections
    named after the node (in any namespace, e.g. ``/**/trainer`` or ``/robot/trainer``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not YAML, no section for the node, or a list that ROS 2 refuses (values
            of different types, ``[2, 2.5]``).
    """
    path = Path(path)
    try:
        document = yaml.load(path.read_text(), Loader=ParametersFileLoader)
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(document, Mapping):
        raise ValueError(f"{path} is not a ROS 2 parameters file (no mapping at the top)")
    sections = sorted(_node_sections(document, node_name), key=lambda item: item[0])
    if not any(specificity for specificity, _ in sections):
        found = [str(k) for k in document]
        raise ValueError(f"{path} has no '{node_name}' section with ros__parameters; "
                         f"sections found: {found}")
    merged: Dict[str, Any] = {}
    for specificity, parameters in sections:
        if not wildcards and not specificity:
            continue
        if not isinstance(parameters, Mapping):
            raise ValueError(f"{path}: ros__parameters of {node_name} must be a mapping")
        merged.update(_flatten(parameters))
    for name, value in merged.items():
        _check_list(path, name, value)
    return merged


def _check_list(path: Path, name: str, value: Any) -> None:
    """ROS 2 refuses a parameters file with a list of mixed or non-scalar values."""
    if not isinstance(value, list):
        return
    kinds = {type(v) for v in value}
    if len(kinds) > 1 or not kinds <= {bool, int, float, str}:
        raise ValueError(f"{path}: parameter {name} must be a list of values of one type "
                         f"(ROS 2 refuses {value!r}; write 2.0, not 2, among floats)")


def _default(field: dataclasses.Field, overrides: Mapping[str, Any]) -> Any:
    if field.name in overrides:
        return overrides[field.name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return ()


def build_config(config_cls: Type[ConfigT], parameters: Mapping[str, Any], prefix: str = "",
                 overrides: Optional[Mapping[str, Any]] = None) -> ConfigT:
    """``config_cls`` from ``parameters[prefix + field]``, defaults from ``overrides`` or the
    dataclass; each value converted by :func:`~mbrl_ros.core.config_values.coerce_value`, as
    the nodes convert their ROS parameters; validated when the class has ``validate()``."""
    overrides = overrides or {}
    values = {}
    for field in dataclasses.fields(config_cls):
        if not field.init:
            continue
        default = _default(field, overrides)
        name = prefix + field.name
        value = parameters.get(name)
        values[field.name] = (default if value is None
                              else coerce_value(name, value, default, field.type))
    config = config_cls(**values)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def known_parameters(task: str = "reach") -> set:
    """Names of every parameter the trainer node reads for ``task`` (``ensemble.num_members``,
    ``cost.end_effector_weight``, ...)."""
    names = {f.name for cls in (TrainerNodeConfig, TrainerConfig) for f in dataclasses.fields(cls)}
    for prefix, cls in SECTIONS.items():
        names |= {prefix + f.name for f in dataclasses.fields(cls)}
    return names | {COST_PREFIX + f.name for f in dataclasses.fields(COST_CONFIGS[task])}


def check_unknown(parameters: Mapping[str, Any], source: str) -> None:
    """Raise ValueError naming parameters that no trainer config has (typos); the cost's are
    those of the task ``parameters`` name."""
    task = parameters.get("task", TrainerNodeConfig.task)
    known = known_parameters(task if task in COST_CONFIGS else TrainerNodeConfig.task)
    unknown = sorted(k for k in parameters if k not in known
                     and not k.startswith(ROS_BUILTIN_PREFIXES))
    if unknown:
        raise ValueError(f"{source}: unknown trainer parameter(s) {unknown}; known: "
                         f"{sorted(known)}")


def load_training_setup(config_path: str | Path, urdf: Optional[str] = None,
                        overrides: Optional[Mapping[str, Any]] = None) -> TrainingSetup:
    """Read the trainer section of ``config_path`` as ``trainer_node`` would.

    Args:
        config_path: ROS 2 parameters file.
        urdf: robot URDF; replaces the file's ``urdf`` parameter when given. A relative path
            is taken relative to the working directory.
        overrides: parameter values that replace the file's (e.g. ``{"model_kind": "ensemble"}``
            or ``{"seed": 3}``), same dotted names.

    Raises:
        FileNotFoundError: missing parameters file or URDF.
        ValueError: unknown parameter, wrong type, inconsistent setting or no URDF.
    """
    parameters = read_node_parameters(config_path)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    parameters.update(given)
    if urdf:
        parameters["urdf"] = urdf
    own = set(read_node_parameters(config_path, wildcards=False)) | set(given) | {"urdf"}
    check_unknown({k: v for k, v in parameters.items() if k in own}, str(config_path))
    node = build_config(TrainerNodeConfig, parameters).validate()
    if not node.urdf.startswith("package://") and not Path(node.urdf).expanduser().exists():
        raise FileNotFoundError(f"URDF {node.urdf} does not exist")
    robot = load_robot(node.urdf, node.ee_frame)
    joints = tuple(robot.joint_names)
    streams = build_config(RobotStreamsConfig, parameters, "data.", overrides=dict(
        joints=joints, command_topic=DEFAULT_COMMAND_TOPIC))
    alignment = with_continuous_angles(build_config(
        AlignmentConfig, parameters, "alignment.",
        overrides=dict(control_rate_hz=1.0 / node.model_period_s)), robot, joints)
    if not math.isclose(alignment.control_rate_hz * node.model_period_s, 1.0, rel_tol=1e-6):
        raise ValueError(f"alignment.control_rate_hz ({alignment.control_rate_hz}) must be "
                         f"1 / model_period_s ({1.0 / node.model_period_s})")
    unknown_joints = [j for j in streams.joints if j not in joints]
    if unknown_joints:
        raise ValueError(f"data.joints {unknown_joints} are not joints of {node.urdf}; "
                         f"its joints: {list(joints)}")
    if streams.joints != joints:
        raise ValueError(f"data.joints must list the URDF's joints in URDF order (the "
                         f"analytical model's state order): {list(joints)}")
    return TrainingSetup(node, build_config(TrainerConfig, parameters),
                         with_continuous_angles(build_config(EnsembleConfig, parameters,
                                                             "ensemble."), robot, joints),
                         streams,
                         alignment, str(config_path), robot,
                         build_config(COST_CONFIGS[node.task], parameters, COST_PREFIX),
                         build_config(ValueTrainingConfig, parameters, "value."),
                         with_continuous_angles(build_config(GPDynamicsConfig, parameters, "gp."),
                                                robot, joints))


def build_nominal(setup: TrainingSetup, device: torch.device):
    """The nominal model the trainer node uses (see :func:`node_nominal`)."""
    return node_nominal(setup.robot, setup.node, device)


def node_nominal(robot, node: TrainerNodeConfig, device: torch.device):
    """The nominal model under the residual for the trainer's settings (``nominal_dynamics``:
    the URDF rigid-body model for torques, the joint servo model for position targets); None
    for a floating-base robot, whose models are fixed-base only (the ensemble needs none)."""
    if robot.floating_base:
        return None
    return nominal_dynamics(robot, node.model_period_s, node.nominal_substeps, device,
                            node.gravity_compensated, node.command_mode,
                            robot_servo_config(robot, node.servo_kp, node.servo_kd)
                            if node.command_mode == "position" else None)
