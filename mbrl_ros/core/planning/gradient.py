"""Gradient refinement of a plan: Adam on the action sequence through the ensemble mean."""

from __future__ import annotations

from typing import Optional

import inspect

import torch

from mbrl_ros.core.planning.constraints import ActionScale
from mbrl_ros.core.planning.rollout import CostFn, ValueFn, model_disagreement


def mean_rollout_cost(dynamics, state: torch.Tensor, actions: torch.Tensor,
                      scale: ActionScale, cost_fn: Optional[CostFn], value_fn: Optional[ValueFn],
                      disagreement_weight: float, discounts: torch.Tensor) -> torch.Tensor:
    """Differentiable cost of ``actions: [N, H, A]`` (normalised) from ``state: [S]``.

    Calls ``predict(..., grad=True)`` when the model takes that flag (``DynamicsModel``).
    Propagates the mean over members (next state = mean of the members' predicted means) and
    adds the disagreement penalty and terminal value as the sampler does. Returns ``[N]``.
    """
    num_samples, horizon, _ = actions.shape
    keyword = {"grad": True} if "grad" in inspect.signature(dynamics.predict).parameters else {}
    physical = scale.to_physical(actions)
    current = state.expand(num_samples, state.shape[-1])
    states = [current]
    penalty = actions.new_zeros(num_samples)
    for step in range(horizon):
        member_means, _ = dynamics.predict(current, physical[:, step], **keyword)
        if disagreement_weight > 0.0:
            penalty = penalty + discounts[step] * model_disagreement(dynamics, member_means)
        current = member_means.mean(dim=0)
        states.append(current)
    trajectory = torch.stack(states, dim=1)
    total = disagreement_weight * penalty
    if cost_fn is not None:
        total = total + cost_fn(trajectory, physical)
    if value_fn is not None:
        total = total - discounts[horizon] * value_fn(current)
    return total


def refine_plan(dynamics, state: torch.Tensor, plan: torch.Tensor, scale: ActionScale,
                cost_fn: Optional[CostFn], value_fn: Optional[ValueFn],
                disagreement_weight: float, discounts: torch.Tensor, steps: int,
                learning_rate: float) -> torch.Tensor:
    """Run ``steps`` Adam steps on ``plan: [H, A]`` (normalised) and return the refined plan.

    Gradients are taken with ``torch.autograd.grad`` with respect to the actions only, so no
    ``.grad`` accumulates on model parameters. After every step the plan is clamped to
    [-1, 1] (the action bounds). The caller decides whether to keep the result.
    """
    with torch.inference_mode(False), torch.enable_grad():
        actions = plan.detach().clone().unsqueeze(0).requires_grad_(True)
        optimizer = torch.optim.Adam([actions], lr=learning_rate)
        for _ in range(steps):
            cost = mean_rollout_cost(dynamics, state.detach().clone(), actions, scale, cost_fn,
                                     value_fn, disagreement_weight, discounts.clone()).sum()
            if not torch.isfinite(cost):
                break
            (gradient,) = torch.autograd.grad(cost, actions)
            actions.grad = torch.nan_to_num(gradient, nan=0.0, posinf=0.0, neginf=0.0)
            optimizer.step()
            with torch.no_grad():
                actions.clamp_(-1.0, 1.0)
        return actions.detach()[0]
