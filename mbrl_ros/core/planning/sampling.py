"""Sampling of candidate action sequences: Gaussian around the mean, policy prior, warm start."""

from __future__ import annotations

from typing import Optional

import torch

from mbrl_ros.core.planning.constraints import ActionScale
from mbrl_ros.core.planning.rollout import PolicyFn


def shift_warm_start(previous: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Shift a plan one step forward in time (receding horizon).

    ``previous: [H, A]`` normalised plan of the last step -> ``out: [H, A]`` with
    ``out[t] = previous[t + 1]`` and the last step repeating ``previous[H - 1]``.
    """
    out[:-1] = previous[1:]
    out[-1] = previous[-1]
    return out


def gaussian_samples(mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor,
                     generator: torch.Generator, out: torch.Tensor) -> torch.Tensor:
    """Fill ``out: [K, H, A]`` with ``clamp(mean + std * eps, -1, 1)``, eps ~ N(0, I).

    ``mean, std: [H, A]`` normalised; ``noise: [K, H, A]`` preallocated scratch for eps.
    Clamping enforces the action bounds as a hard constraint.
    """
    torch.randn(noise.shape, generator=generator, out=noise, dtype=noise.dtype,
                device=noise.device)
    torch.addcmul(mean, noise, std, out=out)
    return out.clamp_(-1.0, 1.0)


def policy_trajectories(dynamics, policy: PolicyFn, state: torch.Tensor, num_trajectories: int,
                        horizon: int, scale: ActionScale, noise_std: float,
                        generator: torch.Generator) -> torch.Tensor:
    """Roll the policy prior out through the ensemble (TD-MPC warm start).

    ``state: [S]`` -> normalised actions ``[P, H, A]``. Trajectory p is propagated by ensemble
    member ``p % E`` (so trajectories differ where members do) with Gaussian noise of std
    ``noise_std`` (normalised units) added to the policy's actions. Policy output is validated:
    wrong shapes raise ValueError; non-finite actions are replaced by 0 (bound midpoint).
    """
    num_members = dynamics.num_members
    member = torch.arange(num_trajectories, device=state.device) % num_members
    rows = torch.arange(num_trajectories, device=state.device)
    current = state.expand(num_trajectories, state.shape[-1])
    actions = state.new_empty(num_trajectories, horizon, scale.center.shape[0])
    for step in range(horizon):
        physical = policy(current)
        if physical.shape != (num_trajectories, actions.shape[-1]):
            raise ValueError(f"policy returned shape {tuple(physical.shape)}, expected "
                             f"{(num_trajectories, actions.shape[-1])}")
        normalised = scale.to_normalised(torch.nan_to_num(physical.to(state.dtype),
                                                          nan=0.0, posinf=0.0, neginf=0.0))
        if noise_std > 0.0:
            noise = torch.randn(normalised.shape, generator=generator, dtype=state.dtype,
                                device=state.device)
            normalised = normalised + noise_std * noise
        # within the planner's bounds (a policy may have been trained for wider ones)
        normalised = normalised.clamp(-1.0, 1.0)
        actions[:, step] = normalised
        mean, _ = dynamics.predict(current, scale.to_physical(normalised))
        current = mean[member, rows]
    return actions


def fill_candidates(candidates: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                    prior: Optional[torch.Tensor], noise: torch.Tensor,
                    generator: torch.Generator) -> torch.Tensor:
    """Assemble one iteration's candidates ``[N, H, A]`` (normalised) in place.

    Layout: rows ``[0, P)`` the policy-prior trajectories ``prior: [P, H, A]`` (if any), row P
    the current mean itself (clamped), the rest Gaussian around ``mean`` with ``std``.
    ``noise`` is scratch of shape ``[N - P - 1, H, A]``.
    """
    num_prior = 0 if prior is None else prior.shape[0]
    if num_prior:
        candidates[:num_prior] = prior
    candidates[num_prior] = mean.clamp(-1.0, 1.0)
    gaussian_samples(mean, std, noise, generator, candidates[num_prior + 1:])
    return candidates
