"""Sampling of candidate action sequences: Gaussian (white or colored) around the mean, policy
prior, warm start."""

from __future__ import annotations

import math
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


def colored_noise(shape, exponent: float, generator: torch.Generator,
                  device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gaussian noise ``[K, H, A]`` (``shape``) that is colored along the horizon (dim 1).

    Power-law ("1/f^beta") noise by FFT, as in iCEM (Pinneri et al. 2020) and the
    ``colorednoise`` package: independent complex Gaussian coefficients per frequency, their
    amplitude scaled by ``f^(-exponent / 2)`` (so the power spectrum goes as
    ``f^(-exponent)``; frequencies below ``1 / H`` are treated as ``1 / H``), transformed back
    with an inverse real FFT and divided by the process's standard deviation, so every value
    has unit variance. ``exponent = 0`` is white noise. One draw from ``generator`` for all K x
    A sequences at once.
    """
    count, horizon, action_dim = shape
    frequencies = torch.fft.rfftfreq(horizon, device=device, dtype=torch.float64)
    frequencies = frequencies.clamp(min=1.0 / horizon)
    amplitude = frequencies.pow(-exponent / 2.0)
    # the zero frequency (and the Nyquist one for even H) has a real coefficient only
    real_only = torch.zeros_like(amplitude, dtype=torch.bool)
    real_only[0] = True
    if horizon % 2 == 0:
        real_only[-1] = True
    scale = torch.where(real_only, amplitude * math.sqrt(2.0), amplitude)
    # std of the time-domain process, from Parseval over the (two-sided) spectrum
    twice = torch.where(real_only, torch.ones_like(amplitude), 2.0 * torch.ones_like(amplitude))
    sigma = 2.0 * torch.sqrt((twice * amplitude.square()).sum() / 2.0) / horizon
    bins = amplitude.shape[0]
    real = torch.randn((count, action_dim, bins), generator=generator, device=device,
                       dtype=torch.float64)
    imaginary = torch.randn((count, action_dim, bins), generator=generator, device=device,
                            dtype=torch.float64)
    imaginary = torch.where(real_only, torch.zeros_like(imaginary), imaginary)
    spectrum = torch.complex(real * scale, imaginary * amplitude)
    noise = torch.fft.irfft(spectrum, n=horizon, dim=-1) / sigma
    return noise.transpose(1, 2).to(dtype).contiguous()
