"""iCEM (Pinneri et al. 2020, "Sample-efficient cross-entropy method for real-time planning").

CEM with three changes, all here: colored sampling noise along the horizon
(:func:`~mbrl_ros.core.planning.sampling.colored_noise`), a population that shrinks by
``population_decay`` per iteration, and elite reuse: a fraction of each iteration's elites joins
the next iteration, and the same fraction of the last plan's elites, shifted one step, joins
the next plan's first iteration. The current mean is added as a sample in the last iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from mbrl_ros.core.planning.cem import cem_update
from mbrl_ros.core.planning.config import PlannerConfig
from mbrl_ros.core.planning.sampling import colored_noise

RankFn = Callable[[torch.Tensor], torch.Tensor]
"""``rank(candidates [N, H, A] normalised) -> [N]`` ranking cost (lower is better, +inf for
infeasible; see :func:`~mbrl_ros.core.planning.constraints.ranking_cost`)."""


@dataclass
class IcemOutcome:
    """Result of one iCEM search (normalised action units)."""

    mean: torch.Tensor
    """[H, A] final mean, clamped to [-1, 1]."""
    best: torch.Tensor
    """[H, A] lowest-ranked sample of the last iteration."""
    elites: torch.Tensor
    """[k, H, A] the best ``num_kept_elites`` of the last iteration, best first (for the next
    plan, which shifts them with :func:`shift_plans`)."""


def shift_plans(plans: torch.Tensor) -> torch.Tensor:
    """Shift ``plans [K, H, A]`` one step forward in time (last step repeated)."""
    return torch.cat([plans[:, 1:], plans[:, -1:]], dim=1)


def population_sizes(config: PlannerConfig, num_prior: int) -> List[int]:
    """Samples per iteration: ``num_samples / population_decay^i``, at least twice the elites
    and room for the prior, the kept elites, the mean and one noise sample; at most
    ``num_samples``."""
    floor = max(2 * config.num_elites, num_prior + config.num_kept_elites + 2)
    return [min(config.num_samples,
                max(floor, int(math.ceil(config.num_samples / config.population_decay ** i))))
            for i in range(config.num_iterations)]


def sorted_elites(candidates: torch.Tensor, rank: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` lowest-ranked candidates, best first: ``[count, H, A]``."""
    _, index = torch.topk(rank, count, largest=False, sorted=True)
    return candidates[index]


def icem_search(mean: torch.Tensor, std: torch.Tensor, prior: Optional[torch.Tensor],
                previous_elites: Optional[torch.Tensor], rank_fn: RankFn,
                config: PlannerConfig, generator: torch.Generator) -> IcemOutcome:
    """Run ``config.num_iterations`` iCEM iterations from ``mean, std [H, A]``.

    Iteration i scores ``population_sizes(...)[i]`` candidates: the policy-prior trajectories
    ``prior [P, H, A]`` (if any), the kept elites (iteration 0: ``previous_elites``, the last
    plan's, already shifted; later: the best ``num_kept_elites`` of the previous iteration),
    the mean (last iteration only) and colored-noise samples ``clamp(mean + std * noise)``.
    The update is CEM's (elite mean and std) with the planner's momentum and std clamp.
    """
    horizon, action_dim = mean.shape
    num_prior = 0 if prior is None else prior.shape[0]
    kept = previous_elites
    candidates = rank = None
    sizes = population_sizes(config, num_prior)
    for iteration, size in enumerate(sizes):
        parts = [] if prior is None else [prior]
        if kept is not None and kept.shape[0] > 0:
            parts.append(kept[:config.num_kept_elites])
        if iteration == len(sizes) - 1:
            parts.append(mean.clamp(-1.0, 1.0).unsqueeze(0))
        fixed = sum(part.shape[0] for part in parts)
        noise = colored_noise((size - fixed, horizon, action_dim), config.noise_exponent,
                              generator, mean.device, mean.dtype)
        parts.append(torch.addcmul(mean, noise, std).clamp_(-1.0, 1.0))
        candidates = torch.cat(parts)
        rank = rank_fn(candidates)
        new_mean, new_std = cem_update(candidates, rank, min(config.num_elites, size))
        mean = config.momentum * mean + (1.0 - config.momentum) * new_mean
        std = new_std.clamp_(config.min_std, config.max_std)
        kept = sorted_elites(candidates, rank, min(config.num_kept_elites, size))
    best = candidates[torch.argmin(rank)].clone()
    return IcemOutcome(mean=mean.clamp(-1.0, 1.0), best=best, elites=kept)
