"""ROS parameters map onto frozen dataclass configs, with docstrings as descriptions."""

from dataclasses import dataclass
from typing import Tuple

import pytest
import rclpy
from rclpy.parameter import Parameter

from mbrl_ros.nodes.parameters import declare_config, field_docstrings, read_config


@dataclass(frozen=True)
class ExampleConfig:
    """A config as the core writes them."""

    horizon: int = 16
    """Number of planned steps."""
    temperature: float = 0.5
    """MPPI temperature."""
    joints: Tuple[str, ...] = ()
    """Joint names."""
    limits: Tuple[float, ...] = (1.0, 2.0)
    """Per-joint limits."""

    def validate(self):
        if self.horizon < 1:
            raise ValueError("horizon must be >= 1")
        return self


def test_field_docstrings_are_read_from_source():
    docs = field_docstrings(ExampleConfig)
    assert docs["horizon"] == "Number of planned steps."
    assert docs["joints"] == "Joint names."


def test_declare_and_read_config(ros_context):
    node = rclpy.create_node(
        "params_test", context=ros_context,
        parameter_overrides=[Parameter("planner.temperature", value=2)])
    try:
        config = declare_config(node, ExampleConfig, prefix="planner.",
                                overrides={"joints": ("a", "b")})
        assert config == ExampleConfig(16, 2.0, ("a", "b"), (1.0, 2.0))
        descriptor = node.describe_parameter("planner.horizon")
        assert descriptor.description == "Number of planned steps."
        changed = read_config(node, ExampleConfig, "planner.", {"planner.horizon": 4})
        assert changed.horizon == 4
        with pytest.raises(ValueError, match="horizon"):
            read_config(node, ExampleConfig, "planner.", {"planner.horizon": 0})
    finally:
        node.destroy_node()
