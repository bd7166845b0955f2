"""One parameters file, one configuration: ``trainer_node`` (a real rclpy node, reading its
parameters through the ROS parameter layer) and the offline reader of ``mbrl-ros train`` /
``mbrl-ros evaluate`` read the same YAML into equal configs, and refuse the same bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
import rclpy
import torch
from rclpy.context import Context
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.parameter import Parameter
from sim_bags import REPO

from mbrl_ros.data.dataset_config import resolve_topic_name
from mbrl_ros.nodes.parameters import read_config
from mbrl_ros.nodes.trainer_node import TrainerNode
from mbrl_ros.training.config_file import (ROS_BUILTIN_PREFIXES, TrainerNodeConfig,
                                           known_parameters, load_training_setup)

RCLError = rclpy_implementation.RCLError
ARM_URDF = str(REPO / "urdf" / "arm7.urdf")
QUADRUPED_URDF = str(REPO / "urdf" / "quadruped12.urdf")

QUIRKS = """\
/**/trainer:
  ros__parameters:
    model_period_s: 0.02
    command_mode: position
    servo_kp: 300                 # one integer for a list of floats (every joint)
    servo_kd: [20, 3, 2, 2, 1, 1, 1]       # integers for floats
    retrain_period_s: 4           # an integer for a float
    holdout_fraction: 2e-1        # a float without a dot (YAML 1.2, as ROS reads it)
    ensemble:                     # a nested section ...
      hidden_sizes: [32, 32]
      num_elites: 2
      learning_rate: 1e-3
      relative_action: [0, 1, 2, 3, 4, 5, 6]
    ensemble.num_members: 3       # ... and a dotted key into the same section
    data:
      command_topic: /position_controller/commands
      command_field: position
    alignment.command_latency_s: 0   # an integer for a float, dotted
/robot/trainer:                   # a namespaced section applies too
  ros__parameters:
    min_transitions: 250
"""

DEFAULTS = """\
/**/trainer:
  ros__parameters:
    model_period_s: 0.02
"""


def node_configs(params_file: Path, urdf: str, folder: Path) -> dict:
    """What a real trainer_node started with ``--params-file params_file`` reads."""
    context = Context()
    rclpy.init(args=["--ros-args", "--params-file", str(params_file)], context=context)
    threads = torch.get_num_threads()
    node = None
    try:
        node = TrainerNode(context=context, namespace="/robot", parameter_overrides=[
            Parameter("urdf", value=urdf), Parameter("niceness", value=0),
            Parameter("data_dir", value=str(folder / "data")),
            Parameter("model_dir", value=str(folder / "models"))])
        names = {name for name in node.list_parameters([], 0).names
                 if not name.startswith(ROS_BUILTIN_PREFIXES)}
        trainer = node.trainer
        return dict(names=names, node=read_config(node, TrainerNodeConfig),
                    trainer=trainer.config, ensemble=trainer.ensemble_config,
                    streams=trainer.streams, alignment=trainer.alignment,
                    metadata=trainer.metadata, cost=node.cost_config, value=node.value_config)
    finally:
        torch.set_num_threads(threads)
        if node is not None:
            node.destroy_node()
        try:
            rclpy.shutdown(context=context)
        except AttributeError:
            # the context destroys a TrainerNode whose __init__ raised; its destroy_node()
            # then misses the worker thread that was never started
            if node is not None:
                raise


def offline_configs(params_file: Path, urdf: str, folder: Path) -> dict:
    """What ``mbrl-ros train --config params_file --urdf urdf`` reads."""
    setup = load_training_setup(params_file, urdf, {
        "niceness": 0, "data_dir": str(folder / "data"), "model_dir": str(folder / "models")})
    # the node runs in namespace /robot: its relative topics resolve there, as
    # `mbrl-ros train --namespace robot` resolves them
    streams = setup.streams.resolved(lambda topic: resolve_topic_name(topic, "/robot"))
    return dict(names=known_parameters(setup.node.task), node=setup.node,
                trainer=setup.trainer, ensemble=setup.ensemble, streams=streams,
                alignment=setup.alignment, metadata=setup.metadata(), cost=setup.cost,
                value=setup.value)


def params_file(name: str, folder: Path) -> Path:
    if name.endswith(".yaml"):
        return REPO / "config" / name
    path = folder / f"{name}.yaml"
    path.write_text({"quirks": QUIRKS, "defaults": DEFAULTS}[name])
    return path


@pytest.mark.parametrize("name, urdf", [
    ("arm7.yaml", ARM_URDF),
    ("quadruped12.yaml", QUADRUPED_URDF),
    ("quirks", ARM_URDF),
    ("defaults", ARM_URDF),
])
def test_trainer_node_and_offline_reader_read_a_file_alike(name, urdf, tmp_path):
    path = params_file(name, tmp_path)
    (tmp_path / "data").mkdir()
    ours = offline_configs(path, urdf, tmp_path)
    node = node_configs(path, urdf, tmp_path)
    # every parameter the node declares is read offline, and nothing else is
    assert node["names"] == ours["names"]
    for key in ("node", "trainer", "ensemble", "streams", "alignment", "metadata", "cost",
                "value"):
        assert node[key] == ours[key], key


def test_the_quirks_mean_what_they_say(tmp_path):
    path = params_file("quirks", tmp_path)
    (tmp_path / "data").mkdir()
    ours = offline_configs(path, ARM_URDF, tmp_path)
    assert ours["node"].servo_kp == (300.0,) and isinstance(ours["node"].servo_kp[0], float)
    assert ours["node"].servo_kd == (20.0, 3.0, 2.0, 2.0, 1.0, 1.0, 1.0)
    assert ours["trainer"].retrain_period_s == 4.0 and ours["trainer"].holdout_fraction == 0.2
    assert ours["trainer"].min_transitions == 250
    assert (ours["ensemble"].num_members, ours["ensemble"].hidden_sizes) == (3, (32, 32))
    assert ours["ensemble"].learning_rate == 1e-3
    assert ours["alignment"].command_latency_s == 0.0
    assert ours["alignment"].control_rate_hz == 50.0


MIXED_LIST = "Sequence should be of same type"
"""How ROS refuses a parameters file with a list of mixed types (before any node starts)."""


@pytest.mark.parametrize("line, node_error", [
    ("ensemble.hidden_sizes: 64", None),          # one value for a list of integers
    ("ensemble.hidden_sizes: [32.0, 32.0]", None),  # floats for integers
    ("nominal_substeps: 4.0", None),              # a float for an integer
    ("gravity_compensated: 1", None),             # an integer for a boolean
    ("nominal_substeps: '4'", None),              # a quoted number is a string
    ("device: 0", None),                          # a number for a string
    ("servo_kp: [high, low]", None),              # strings for numbers
    ("servo_kp: [100, high]", MIXED_LIST),        # a string among numbers
    ("servo_kd: [20, 2.5]", MIXED_LIST),          # integers among floats
])
def test_a_bad_value_is_refused_both_ways(line, node_error, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(DEFAULTS + f"    {line}\n")
    (tmp_path / "data").mkdir()
    key = line.split(":")[0]
    with pytest.raises(ValueError, match=key):
        offline_configs(path, ARM_URDF, tmp_path)
    with pytest.raises((ValueError, InvalidParameterTypeException, RCLError),
                       match=node_error or key):
        node_configs(path, ARM_URDF, tmp_path)
