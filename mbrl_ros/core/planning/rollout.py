"""Propagate action sequences through a dynamics ensemble and score them.

The dynamics object (see docs/planner.md) provides ``num_members``, ``state_dim``,
``action_dim``, ``device`` and ``predict(state, action) -> (mean, var)`` with state
``[E, N, S]`` or ``[N, S]`` (broadcast to all members), action ``[E, N, A]`` or ``[N, A]``,
and mean / var ``[E, N, S]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from mbrl_ros.core.ensemble_kernel import MeanStepKernel

CostFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``cost_fn(states [N, H+1, S], actions [N, H, A]) -> [N]`` (physical units)."""
ValueFn = Callable[[torch.Tensor], torch.Tensor]
"""``value(state [N, S]) -> [N]``; the planner's terminal cost is ``-value``."""
PolicyFn = Callable[[torch.Tensor], torch.Tensor]
"""``policy(state [N, S]) -> [N, A]`` physical actions (the prior)."""


def ensemble_disagreement(member_means: torch.Tensor) -> torch.Tensor:
    """Disagreement of an ensemble: mean over state dims of the variance across members.

    ``member_means: [E, ..., S]`` (each member's predicted next-state mean) -> ``[...]``.
    The variance is the population variance (divide by E); a single member gives 0.
    Raw state units; used for models without their own ``disagreement`` method.
    """
    return member_means.var(dim=0, unbiased=False).mean(dim=-1)


def model_disagreement(dynamics, member_means: torch.Tensor) -> torch.Tensor:
    """The disagreement used everywhere in the planner (penalty, plan report, safety gate).

    ``member_means: [E, ..., S]`` -> ``[...]``. Uses ``dynamics.disagreement(mean)`` when the
    model defines it (``DynamicsModel``: across-member variance in normalised target units,
    angle dims wrapped, averaged over state dims), else :func:`ensemble_disagreement`.
    """
    own = getattr(dynamics, "disagreement", None)
    if callable(own):
        return own(member_means)
    return ensemble_disagreement(member_means)


@dataclass
class Rollout:
    """Predicted trajectories of N action sequences."""

    states: torch.Tensor
    """[M, N, H+1, S] predicted mean states; M = E (ensemble) or 1 (mean). For partition it
    is [E, G, H+1, S] with G = ceil(N / E): sample n is propagated by member n // G
    (member-major; the spare rows of the last member repeat the first samples)."""
    disagreement: torch.Tensor
    """[N, H] disagreement of the members' predictions at each step (zeros for partition)."""
    num_samples: int = 0
    """N, the number of sampled sequences (partition pads N up to a multiple of E)."""
    partition: bool = False
    """True if ``states`` uses the partition (member-major) layout."""


def mean_kernel(dynamics, dtype: torch.dtype = torch.float32,
                chunk_rows: int = 0) -> Optional[MeanStepKernel]:
    """The model's fused next-state-mean step (:class:`MeanStepKernel`, a snapshot of its
    current weights), or None when the model has none (then ``predict`` is used)."""
    build = getattr(dynamics, "mean_kernel", None)
    return build(dtype=dtype, chunk_rows=chunk_rows) if callable(build) else None


def _mean_step(dynamics, kernel: Optional[MeanStepKernel], state: torch.Tensor,
               action: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Every member's next-state mean ``[E, R, S]`` (into ``out`` when given)."""
    if kernel is not None:
        return kernel.step(state, action, out)
    mean, _ = dynamics.predict(state, action)
    return mean if out is None else out.copy_(mean)


def propagate(dynamics, state: torch.Tensor, actions: torch.Tensor, propagation: str,
              out: Optional[Rollout] = None, with_disagreement: bool = True,
              kernel: Optional[MeanStepKernel] = None) -> Rollout:
    """Roll ``actions: [N, H, A]`` (physical) out from ``state: [S]`` through the ensemble.

    ``propagation``: "ensemble" (every member propagates every sample), "mean" (next state =
    mean over members) or "partition" (sample n through member n // ceil(N / E) only).
    ``out`` is a preallocated :class:`Rollout` of the right shape, reused across calls.
    ``with_disagreement=False`` skips the per-step disagreement (left as zeros) when no
    penalty needs it. ``kernel`` (:func:`mean_kernel` of ``dynamics``) is the fused step used
    instead of ``dynamics.predict`` (the same means, no variance head).
    One Python loop over the horizon; none over samples or members.
    """
    num_samples, horizon, _ = actions.shape
    num_members = dynamics.num_members
    state_dim = state.shape[-1]
    if propagation == "partition":
        group = -(-num_samples // num_members)
        padding = num_members * group - num_samples
        if padding:
            actions = torch.cat([actions, actions[:padding]])
        # member-major: sample n = member * group + j
        part_actions = actions.view(num_members, group, horizon, -1)
        if out is None:
            out = Rollout(
                states=state.new_empty(num_members, group, horizon + 1, state_dim),
                disagreement=state.new_zeros(num_samples, horizon), num_samples=num_samples,
                partition=True)
        out.states[:, :, 0] = state
        for step in range(horizon):
            _mean_step(dynamics, kernel, out.states[:, :, step], part_actions[:, :, step],
                       out.states[:, :, step + 1])
        return out

    num_tracks = num_members if propagation == "ensemble" else 1
    if out is None:
        out = Rollout(states=state.new_empty(num_tracks, num_samples, horizon + 1, state_dim),
                      disagreement=state.new_zeros(num_samples, horizon),
                      num_samples=num_samples)
    out.states[:, :, 0] = state
    current = state.expand(num_samples, state_dim)
    for step in range(horizon):
        if propagation == "ensemble":
            mean = _mean_step(dynamics, kernel, current, actions[:, step],
                              out.states[:, :, step + 1])
            current = mean
        else:
            mean = _mean_step(dynamics, kernel, current, actions[:, step])
        if with_disagreement:
            out.disagreement[:, step] = model_disagreement(dynamics, mean)
        if propagation != "ensemble":
            out.states[0, :, step + 1] = mean.mean(dim=0)
            current = out.states[0, :, step + 1]
    return out


def score(rollout: Rollout, actions: torch.Tensor, cost_fn: Optional[CostFn],
          value_fn: Optional[ValueFn], disagreement_weight: float,
          discounts: torch.Tensor) -> torch.Tensor:
    """Total cost per sample, ``[N]``, averaged over the propagated tracks.

    ``actions: [N, H, A]`` physical; ``discounts: [H+1]`` = discount ** t. Cost =
    cost_fn (own discounting) + disagreement_weight * sum_t discounts[t] * disagreement[:, t]
    - discounts[H] * value(terminal state).
    """
    states = track_states(rollout)
    num_tracks, num_samples, steps, state_dim = states.shape
    horizon, action_dim = actions.shape[1:]
    flat_states = states.reshape(num_tracks * num_samples, steps, state_dim)
    flat_actions = actions if num_tracks == 1 else actions.unsqueeze(0).expand(
        num_tracks, -1, -1, -1).reshape(num_tracks * num_samples, horizon, action_dim)
    total = torch.zeros(num_tracks * num_samples, dtype=states.dtype, device=states.device)
    if cost_fn is not None:
        total = total + cost_fn(flat_states, flat_actions)
    if value_fn is not None:
        total = total - discounts[horizon] * value_fn(flat_states[:, -1])
    total = total.view(num_tracks, num_samples).mean(dim=0)
    if disagreement_weight > 0.0:
        total = total + disagreement_weight * (rollout.disagreement @ discounts[:horizon])
    return total


def track_states(rollout: Rollout) -> torch.Tensor:
    """States as ``[M, N, H+1, S]`` in sample order (undoes the partition layout and padding)."""
    states = rollout.states
    if rollout.partition:
        return states.reshape(1, -1, *states.shape[2:])[:, :rollout.num_samples]
    return states
