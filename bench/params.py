"""Reading a ROS 2 parameters file (config/<robot>.yaml) in the ROS-free benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Sequence, Tuple

import yaml

from bench.recorded import REPO, recorded_args
from mbrl_ros.nodes.sim_config import SimConfig
from mbrl_ros.robots.simulator import Simulator

__all__ = ["REPO", "recorded_args", "config_from", "graph_params", "node_section",
           "simulator_from"]


def node_section(params: dict, node: str) -> Dict[str, Any]:
    """The ``ros__parameters`` ``<node>`` gets: the ``/**`` section's (every node's, e.g. the
    task and its cost) merged with those of ``/**/<node>`` (which win), as ROS applies them
    (empty if neither is there)."""
    def merged(base: Dict[str, Any], over: Mapping[str, Any]) -> Dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            out[key] = (merged(out[key], value) if isinstance(value, Mapping)
                        and isinstance(out.get(key), Mapping) else value)
        return out
    return merged(params.get("/**", {}).get("ros__parameters") or {},
                  params.get(f"/**/{node}", {}).get("ros__parameters") or {})


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


def simulator_from(sim_params: Dict[str, Any], urdf: str, package_paths: Sequence[str],
                   joint_names: Sequence[str], seed: int, pushes: bool = True) -> Simulator:
    """The simulator the sim node would build from the same parameters (``SimConfig``), with
    its random pushes seeded by ``seed`` (and switched off when ``pushes`` is False)."""
    values = dict(sim_params, urdf=str(urdf), package_search_paths=list(package_paths),
                  seed=seed)
    if not pushes:
        values["push_rate_hz"] = 0.0
    config = config_from(SimConfig, values)
    config.validate()
    return Simulator(config.urdf_source, config.build_options(tuple(joint_names)),
                     config.mismatch(), config.simulator())
