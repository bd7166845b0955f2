"""Reading a ROS 2 parameters file (config/<robot>.yaml) in the ROS-free benchmarks."""

from __future__ import annotations

from typing import Any, Dict


def node_section(params: dict, node: str) -> Dict[str, Any]:
    """The ``ros__parameters`` of ``/**/<node>`` (empty if absent)."""
    return params.get(f"/**/{node}", {}).get("ros__parameters", {})


def config_from(config_cls, values: dict):
    """``config_cls`` from the keys of ``values`` it has (YAML lists become tuples)."""
    names = set(config_cls.__dataclass_fields__)
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in (values or {}).items() if k in names})
