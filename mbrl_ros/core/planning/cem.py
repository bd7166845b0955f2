"""CEM update: mean and std of the elite samples."""

from __future__ import annotations

from typing import Tuple

import torch


def cem_update(candidates: torch.Tensor, ranking_cost: torch.Tensor, num_elites: int
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the ``num_elites`` lowest-cost candidates.

    ``candidates: [N, H, A]`` normalised actions, ``ranking_cost: [N]`` ->
    ``(mean [H, A], std [H, A])`` (std unclamped; the planner clamps it). Elites with +inf
    cost (infeasible while some sample is feasible) are left out; if all are +inf, all elites
    count equally.
    """
    elite_cost, elite_index = torch.topk(ranking_cost, num_elites, largest=False, sorted=False)
    elites = candidates[elite_index]
    finite = torch.isfinite(elite_cost).to(candidates.dtype)
    weights = torch.where(finite.sum() > 0, finite, torch.ones_like(finite))
    weights = weights / weights.sum()
    mean = torch.einsum("n,nha->ha", weights, elites)
    variance = torch.einsum("n,nha->ha", weights, (elites - mean).square_())
    return mean, variance.sqrt_()
