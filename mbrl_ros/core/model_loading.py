"""Rebuild whichever dynamics model a checkpoint file holds.

Above the models and the file format (:mod:`mbrl_ros.core.checkpoint`), which import nothing
from here.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from mbrl_ros.core.checkpoint import CheckpointError, load_checkpoint
from mbrl_ros.core.dynamics_model import DynamicsModel
from mbrl_ros.core.ensemble import ProbabilisticEnsemble
from mbrl_ros.core.gp_dynamics import GPDynamics
from mbrl_ros.core.residual import ResidualDynamics


def load_model(path: str, expected_sha256: Optional[str] = None,
               device: Optional[torch.device | str] = None, nominal: Any = None,
               nominal_factory: Optional[Callable[[Any], Any]] = None) -> DynamicsModel:
    """Rebuild the dynamics model stored in ``path``: a
    :class:`~mbrl_ros.core.ensemble.ProbabilisticEnsemble`, a
    :class:`~mbrl_ros.core.residual.ResidualDynamics` or a
    :class:`~mbrl_ros.core.gp_dynamics.GPDynamics` (each duck-types
    :class:`~mbrl_ros.core.dynamics_model.DynamicsModel` for the planner).

    Args:
        path: checkpoint file.
        expected_sha256: refuse the file unless its sha256 matches.
        device: where to put the model (default CPU).
        nominal: for residual checkpoints, the nominal model object to use.
        nominal_factory: for residual checkpoints, ``factory(descriptor) -> nominal`` called with
            the nominal descriptor stored in the header (used when ``nominal`` is None).

    Raises:
        CheckpointError: unreadable file, or a model class this function does not know.
    """
    checkpoint = load_checkpoint(path, expected_sha256)
    model_class = checkpoint.header.get("model_class")
    if model_class == "ProbabilisticEnsemble":
        return ProbabilisticEnsemble.from_checkpoint(checkpoint, device=device)
    if model_class == "GPDynamics":
        return GPDynamics.from_checkpoint(checkpoint, device=device)
    if model_class == "ResidualDynamics":
        return ResidualDynamics.from_checkpoint(checkpoint, device=device, nominal=nominal,
                                                nominal_factory=nominal_factory)
    raise CheckpointError(f"checkpoint {path} holds a {model_class!r}, not a dynamics model")
