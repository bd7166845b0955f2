"""Hard constraints of the planner: action bounds (clamp) and state limits (feasibility)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

ConstraintFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""An extra hard constraint of the planner (e.g. the workspace, mbrl_ros.core.workspace):
``constraint(states [M, N, H+1, S], actions [N, H, A]) -> violation [N]`` (physical units,
>= 0; step 0 of the states is the current state, which the plan cannot change). It adds to the
state-limit violation: feasible up to ``constraint_tolerance``, ranked by while none is."""


class ActionScale:
    """Map between normalised actions in ``[-1, 1]`` and physical actions in ``[low, high]``."""

    def __init__(self, low: Sequence[float], high: Sequence[float], action_dim: int,
                 device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        """Broadcast one-value bounds to ``action_dim``; raise ValueError on a size mismatch."""
        if len(low) not in (1, action_dim) or len(high) not in (1, action_dim):
            raise ValueError(f"action bounds must have 1 or {action_dim} values, "
                             f"got {len(low)} and {len(high)}")
        low_t = torch.as_tensor(low, dtype=dtype, device=device).expand(action_dim)
        high_t = torch.as_tensor(high, dtype=dtype, device=device).expand(action_dim)
        self.low = low_t.clone()
        """[A] lower bound."""
        self.high = high_t.clone()
        """[A] upper bound."""
        self.center = (high_t + low_t) / 2
        """[A] midpoint of the bounds (normalised 0)."""
        self.half_range = (high_t - low_t) / 2
        """[A] half the width of the bounds (normalised 1)."""

    def to_physical(self, normalised: torch.Tensor) -> torch.Tensor:
        """``normalised: [..., A]`` in [-1, 1] -> physical actions ``[..., A]``."""
        return torch.addcmul(self.center, normalised, self.half_range)

    def to_normalised(self, physical: torch.Tensor) -> torch.Tensor:
        """``physical: [..., A]`` -> normalised actions ``[..., A]``, clamped to [-1, 1]."""
        return ((physical - self.center) / self.half_range).clamp_(-1.0, 1.0)


class StateLimits:
    """Box limits on predicted states (joint positions / velocities); ±inf marks free dims."""

    def __init__(self, low: Sequence[float], high: Sequence[float], state_dim: int,
                 tolerance: float, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        """Empty ``low``/``high`` mean no limits; otherwise each needs ``state_dim`` values."""
        self.active = len(low) > 0
        """False when no state limits are configured (everything is feasible)."""
        if self.active and (len(low) != state_dim or len(high) != state_dim):
            raise ValueError(f"state limits must have {state_dim} values (one per state dim), "
                             f"got {len(low)} and {len(high)}")
        self.low: Optional[torch.Tensor] = (
            torch.as_tensor(low, dtype=dtype, device=device) if self.active else None)
        """[S] lower limits, or None."""
        self.high: Optional[torch.Tensor] = (
            torch.as_tensor(high, dtype=dtype, device=device) if self.active else None)
        """[S] upper limits, or None."""
        self.tolerance = tolerance
        """Violations up to this size still count as feasible."""

    def violation(self, states: torch.Tensor) -> torch.Tensor:
        """Total limit violation per trajectory.

        ``states: [M, N, H+1, S]`` (M members or 1) -> ``[N]``: sum over members, steps
        1..H and state dims of the distance outside the limits; NaN states count as +inf.
        The initial state (step 0) is excluded: the plan cannot change it.
        """
        predicted = states[..., 1:, :]
        if not self.active:
            return torch.zeros(states.shape[1], dtype=states.dtype, device=states.device)
        excess = (predicted - self.high).clamp_(min=0.0) + (self.low - predicted).clamp_(min=0.0)
        total = excess.sum(dim=(0, 2, 3))
        return torch.nan_to_num(total, nan=float("inf"))

    def feasible(self, violation: torch.Tensor) -> torch.Tensor:
        """``violation: [N]`` -> ``[N]`` bool, true where within tolerance."""
        return violation <= self.tolerance


def ranking_cost(cost: torch.Tensor, violation: torch.Tensor,
                 feasible: torch.Tensor) -> torch.Tensor:
    """Cost used to rank samples under hard state limits (no host sync).

    ``cost, violation: [N]``, ``feasible: [N]`` bool -> ``[N]``. If any sample is feasible,
    infeasible (and NaN-cost) samples get +inf, i.e. weight 0 / never elite. If none is
    feasible, samples are ranked by their violation so the search moves toward feasibility.
    """
    inf = torch.full_like(cost, float("inf"))
    feasible_cost = torch.where(feasible, torch.nan_to_num(cost, nan=float("inf")), inf)
    return torch.where(feasible.any(), feasible_cost, violation)
