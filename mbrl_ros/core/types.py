"""Data types shared by the logger, the replay buffer, the trainer and the offline tools."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterator, Optional

import numpy as np


@dataclass
class TransitionBatch:
    """A batch of transitions ``(state, action) -> next_state``.

    All arrays share the leading dimension ``N`` (number of transitions).
    """

    state: np.ndarray
    """[N, state_dim] state before the action, float32."""
    action: np.ndarray
    """[N, action_dim] action applied over one control period, float32."""
    next_state: np.ndarray
    """[N, state_dim] state one control period later, float32."""
    reward: Optional[np.ndarray] = None
    """[N] reward, where the task defines one (benchmarks); None for robot data."""
    terminal: Optional[np.ndarray] = None
    """[N] bool, true where the episode ended at ``next_state`` (no bootstrapping past it)."""
    episode: Optional[np.ndarray] = None
    """[N] int64 episode index, so episode boundaries survive concatenation."""

    def __post_init__(self) -> None:
        self.state = np.asarray(self.state, dtype=np.float32)
        self.action = np.asarray(self.action, dtype=np.float32)
        self.next_state = np.asarray(self.next_state, dtype=np.float32)
        if (self.state.ndim != 2 or self.action.ndim != 2
                or self.next_state.shape != self.state.shape):
            raise ValueError(
                f"TransitionBatch shapes disagree: state {self.state.shape}, "
                f"action {self.action.shape}, next_state {self.next_state.shape}")
        n = len(self.state)
        if len(self.action) != n:
            raise ValueError(f"action has {len(self.action)} rows, state has {n}")
        if self.reward is not None:
            self.reward = np.asarray(self.reward, dtype=np.float32).reshape(n)
        if self.terminal is not None:
            self.terminal = np.asarray(self.terminal, dtype=bool).reshape(n)
        if self.episode is not None:
            self.episode = np.asarray(self.episode, dtype=np.int64).reshape(n)

    def __len__(self) -> int:
        return len(self.state)

    @property
    def state_dim(self) -> int:
        return self.state.shape[1]

    @property
    def action_dim(self) -> int:
        return self.action.shape[1]

    def __getitem__(self, index) -> "TransitionBatch":
        """Select rows (slice, integer array or boolean mask)."""
        return TransitionBatch(**{f.name: (None if getattr(self, f.name) is None
                                           else getattr(self, f.name)[index])
                                  for f in fields(self)})

    def finite_mask(self) -> np.ndarray:
        """[N] bool: rows whose state, action and next_state are all finite."""
        return (np.isfinite(self.state).all(1) & np.isfinite(self.action).all(1)
                & np.isfinite(self.next_state).all(1))

    @staticmethod
    def concatenate(batches: "list[TransitionBatch]") -> "TransitionBatch":
        """Join batches; optional fields are kept only if every batch has them."""
        if not batches:
            raise ValueError("cannot concatenate an empty list of batches")
        out = {}
        for f in fields(TransitionBatch):
            values = [getattr(b, f.name) for b in batches]
            out[f.name] = None if any(v is None for v in values) else np.concatenate(values)
        return TransitionBatch(**out)

    def minibatches(self, batch_size: int,
                    rng: np.random.Generator) -> Iterator["TransitionBatch"]:
        """Shuffled minibatches covering the batch once."""
        order = rng.permutation(len(self))
        for start in range(0, len(self), batch_size):
            yield self[order[start:start + batch_size]]
