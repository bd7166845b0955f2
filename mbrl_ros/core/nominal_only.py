"""The hand-derived model alone (the URDF rigid body or the joint servo), planned with as a
one-member "ensemble": what a robot runs before any data, and the reference a learned model
has to beat."""

from __future__ import annotations

from typing import Any, Tuple

import torch

from mbrl_ros.core.dynamics_model import set_operating_point


class NominalOnlyModel:
    """A nominal model (``step(state [N, S], action [N, A]) -> [N, S]``) with the planner's
    ``predict`` interface: one member, zero variance (so zero disagreement)."""

    num_members = 1

    def __init__(self, nominal: Any, state_dim: int, action_dim: int,
                 device: torch.device = torch.device("cpu")) -> None:
        self.nominal, self.state_dim, self.action_dim = nominal, state_dim, action_dim
        self.device = torch.device(device)

    def set_operating_point(self, positions) -> None:
        """The planner's current pose, for a nominal model that linearises about it."""
        set_operating_point(self.nominal, positions)

    def predict(self, state: torch.Tensor, action: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``([1, N, S] mean, [1, N, S] zero variance)`` for state ``[N, S]`` or ``[E, N, S]``
        and action alike (broadcast)."""
        batch = torch.broadcast_shapes(state.shape[:-1], action.shape[:-1])
        flat = self.nominal.step(state.expand(*batch, self.state_dim).reshape(-1, self.state_dim),
                                 action.expand(*batch, self.action_dim)
                                 .reshape(-1, self.action_dim))
        mean = flat.reshape(*batch, self.state_dim)
        mean = mean if mean.dim() == 3 else mean.unsqueeze(0)
        return mean, torch.zeros_like(mean)
