"""MPPI update: exponentially weighted mean and std of all samples."""

from __future__ import annotations

from typing import Tuple

import torch


def mppi_weights(ranking_cost: torch.Tensor, temperature: float) -> torch.Tensor:
    """``ranking_cost: [N]`` -> weights ``[N]`` summing to 1: softmax(-(cost - min) / temperature).

    +inf costs (infeasible samples) get weight 0. If every cost is +inf the weights are uniform,
    so the update stays finite (the planner reports such a step as infeasible).
    """
    logits = -(ranking_cost - ranking_cost.min()) / temperature
    logits = torch.nan_to_num(logits, nan=0.0)
    return torch.softmax(logits, dim=0)


def mppi_update(candidates: torch.Tensor, ranking_cost: torch.Tensor, temperature: float
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and std of the candidates.

    ``candidates: [N, H, A]`` normalised actions, ``ranking_cost: [N]`` ->
    ``(mean [H, A], std [H, A])`` (std unclamped; the planner clamps it).
    """
    weights = mppi_weights(ranking_cost, temperature)
    mean = torch.einsum("n,nha->ha", weights, candidates)
    variance = torch.einsum("n,nha->ha", weights, (candidates - mean).square_())
    return mean, variance.sqrt_()
