"""Reading a ROS 2 parameters file (config/<robot>.yaml) in the ROS-free benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import yaml


def node_section(params: dict, node: str) -> Dict[str, Any]:
    """The ``ros__parameters`` of ``/**/<node>`` (empty if absent)."""
    return params.get(f"/**/{node}", {}).get("ros__parameters", {})


def graph_params(config_path: Path) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """The sim, planner and trainer parameters of a config/<robot>.yaml file."""
    params = yaml.safe_load(Path(config_path).read_text())
    return node_section(params, "sim"), node_section(params, "planner"), \
        node_section(params, "trainer")


def config_from(config_cls, values: dict):
    """``config_cls`` from the keys of ``values`` it has (YAML lists become tuples)."""
    names = set(config_cls.__dataclass_fields__)
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in (values or {}).items() if k in names})
