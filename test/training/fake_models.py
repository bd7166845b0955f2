"""Tiny dynamics models given by formulas, and trajectories of a known linear system, for the
tests of the model errors and of the trainer's deployment decisions."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch

from mbrl_ros.core.types import TransitionBatch

STATE_DIM, ACTION_DIM = 2, 2
DYNAMICS = np.array([[0.9, 0.1], [-0.1, 0.9]])
"""``next_state = state @ DYNAMICS + ACTION_GAIN * action``: a stable, lightly damped system."""
ACTION_GAIN = 0.5

Step = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(state [N, S], action [N, A]) -> next_state [N, S]``."""


def true_step(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    return state @ DYNAMICS + ACTION_GAIN * action


def trajectory(rows: int, seed: int, noise: float = 0.0) -> TransitionBatch:
    """``rows`` consecutive transitions of the true system (each ``next_state`` is the next
    row's ``state``), with Gaussian process noise of std ``noise``."""
    rng = np.random.default_rng(seed)
    state = np.zeros((rows + 1, STATE_DIM))
    state[0] = rng.normal(size=STATE_DIM)
    action = rng.uniform(-1.0, 1.0, (rows, ACTION_DIM))
    for t in range(rows):
        state[t + 1] = true_step(state[t], action[t]) + rng.normal(0.0, noise, STATE_DIM)
    return TransitionBatch(state[:-1], action, state[1:])


class FakeModel:
    """A dynamics model given by ``step``: every member predicts ``step(s, a)`` plus its own
    offset from ``member_offsets``, with variance ``variance`` (None: the model returns no
    variance)."""

    def __init__(self, step: Step, variance: Optional[float] = None,
                 member_offsets: Sequence[float] = (0.0,)) -> None:
        self.step, self.variance = step, variance
        self.member_offsets = tuple(member_offsets)
        self.device = torch.device("cpu")

    def predict(self, state: torch.Tensor, action: torch.Tensor):
        mean = self.step(state.double().numpy(), action.double().numpy())
        means = np.stack([mean + offset for offset in self.member_offsets])
        var = None if self.variance is None else torch.full(means.shape, self.variance)
        return torch.as_tensor(means, dtype=torch.float32), var
