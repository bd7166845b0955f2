"""Fixed-capacity ring buffer of transitions with episode indices, saved as plain .npz."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mbrl_ros.core.types import TransitionBatch

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ReplayBufferConfig:
    """Settings of a :class:`ReplayBuffer`."""

    capacity: int = 1_000_000
    """Maximum number of transitions; the oldest are overwritten first."""

    def validate(self) -> None:
        """Raise ValueError on a non-positive capacity."""
        if int(self.capacity) < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {self.capacity}")


class ReplayBuffer:
    """Ring buffer of :class:`TransitionBatch` rows.

    Every row carries an episode index. Rows added without one get the buffer's current
    episode; a row with ``terminal`` set, or :meth:`end_episode`, starts a new episode.
    Rows with non-finite state/action/next_state are refused (logged), never stored.
    """

    def __init__(self, state_dim: int, action_dim: int,
                 config: ReplayBufferConfig = ReplayBufferConfig()) -> None:
        config.validate()
        if state_dim < 1 or action_dim < 1:
            raise ValueError(f"state_dim and action_dim must be >= 1, got {state_dim}, "
                             f"{action_dim}")
        self.config = config
        self.state_dim, self.action_dim = state_dim, action_dim
        cap = int(config.capacity)
        self._state = np.zeros((cap, state_dim), np.float32)
        self._action = np.zeros((cap, action_dim), np.float32)
        self._next_state = np.zeros((cap, state_dim), np.float32)
        self._reward = np.zeros(cap, np.float32)
        self._has_reward = np.zeros(cap, bool)
        self._terminal = np.zeros(cap, bool)
        self._episode = np.zeros(cap, np.int64)
        self._cursor = 0
        self._size = 0
        self._current_episode = 0
        self.num_added = 0
        """Transitions ever stored (including overwritten ones)."""

    @property
    def capacity(self) -> int:
        return int(self.config.capacity)

    @property
    def current_episode(self) -> int:
        """Episode index the next rows without one will get."""
        return self._current_episode

    def __len__(self) -> int:
        return self._size

    def end_episode(self) -> None:
        """Start a new episode for rows added without episode indices."""
        if self._size and self._episode[(self._cursor - 1) % self.capacity] >= \
                self._current_episode:
            self._current_episode += 1

    def add(self, batch: TransitionBatch) -> int:
        """Append rows (``[N, ...]`` fields); returns the number stored.

        Raises:
            ValueError: when the batch dims do not match the buffer.
        """
        if batch.state_dim != self.state_dim or batch.action_dim != self.action_dim:
            raise ValueError(f"batch dims ({batch.state_dim}, {batch.action_dim}) do not match "
                             f"the buffer ({self.state_dim}, {self.action_dim})")
        finite = batch.finite_mask()
        if batch.reward is not None:
            finite &= np.isfinite(batch.reward)
        if not finite.all():
            logger.warning("replay buffer: refused %d of %d transitions with non-finite values",
                           int((~finite).sum()), len(batch))
        n = len(batch)
        terminal = batch.terminal if batch.terminal is not None else np.zeros(n, bool)
        if batch.episode is not None:
            episode = batch.episode
            if n:
                self._current_episode = max(self._current_episode, int(episode.max()) + 1)
        else:  # a terminal row ends its episode: the next row starts a new one
            starts = np.concatenate([[0], np.cumsum(terminal[:-1])]) if n else np.zeros(0)
            episode = self._current_episode + starts.astype(np.int64)
            if n:
                self._current_episode = int(episode[-1]) + int(terminal[-1])
        keep = np.flatnonzero(finite)[-self.capacity:]
        if len(keep) < int(finite.sum()):
            logger.info("replay buffer: batch larger than capacity, kept the newest %d rows",
                        len(keep))
        index = (self._cursor + np.arange(len(keep))) % self.capacity
        self._state[index] = batch.state[keep]
        self._action[index] = batch.action[keep]
        self._next_state[index] = batch.next_state[keep]
        self._has_reward[index] = batch.reward is not None
        self._reward[index] = batch.reward[keep] if batch.reward is not None else 0.0
        self._terminal[index] = terminal[keep]
        self._episode[index] = episode[keep]
        self._cursor = int((self._cursor + len(keep)) % self.capacity)
        self._size = min(self._size + len(keep), self.capacity)
        self.num_added += len(keep)
        return len(keep)

    def _chronological(self) -> np.ndarray:
        if self._size < self.capacity:
            return np.arange(self._size)
        return (self._cursor + np.arange(self.capacity)) % self.capacity

    def _gather(self, index: np.ndarray) -> TransitionBatch:
        all_reward = bool(self._has_reward[self._chronological()].all()) and self._size > 0
        return TransitionBatch(state=self._state[index].copy(),
                               action=self._action[index].copy(),
                               next_state=self._next_state[index].copy(),
                               reward=self._reward[index].copy() if all_reward else None,
                               terminal=self._terminal[index].copy(),
                               episode=self._episode[index].copy())

    def all(self) -> TransitionBatch:
        """Every stored row, oldest first. ``reward`` is None unless every row has one."""
        return self._gather(self._chronological())

    def sample(self, num_samples: int, rng: np.random.Generator) -> TransitionBatch:
        """``num_samples`` rows drawn uniformly with replacement.

        Raises:
            ValueError: when the buffer is empty or ``num_samples`` is negative.
        """
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        return self._gather(rng.integers(0, self._size, size=num_samples))

    def save(self, path: str) -> None:
        """Write the stored rows to ``path`` (.npz, no pickled objects), atomically."""
        data = self.all()
        has_reward = self._has_reward[self._chronological()]
        reward = self._reward[self._chronological()]
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp_replay_", suffix=".npz", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, format_version=np.int64(_FORMAT_VERSION),
                         capacity=np.int64(self.capacity), state=data.state, action=data.action,
                         next_state=data.next_state, reward=reward, has_reward=has_reward,
                         terminal=data.terminal, episode=data.episode,
                         current_episode=np.int64(self._current_episode),
                         num_added=np.int64(self.num_added))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str, config: Optional[ReplayBufferConfig] = None) -> "ReplayBuffer":
        """Read a buffer written by :meth:`save`; ``config`` overrides the stored capacity
        (the newest rows are kept if it is smaller).

        Raises:
            ValueError: unreadable, corrupt or inconsistent file.
        """
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"cannot read replay buffer {path}: {exc}") from exc
        try:
            if int(arrays["format_version"]) != _FORMAT_VERSION:
                raise ValueError(f"format version {int(arrays['format_version'])}")
            config = config or ReplayBufferConfig(capacity=int(arrays["capacity"]))
            state = arrays["state"]
            buffer = cls(state.shape[1], arrays["action"].shape[1], config)
            has_reward = arrays["has_reward"].astype(bool)
            episode = arrays["episode"]
            batch = TransitionBatch(state, arrays["action"], arrays["next_state"],
                                    terminal=arrays["terminal"], episode=episode)
            if buffer.add(batch) != min(len(state), buffer.capacity):
                raise ValueError("it holds non-finite transitions")
            keep = buffer._chronological()
            tail = slice(len(state) - len(keep), len(state))
            buffer._reward[keep] = arrays["reward"][tail]
            buffer._has_reward[keep] = has_reward[tail]
            buffer._current_episode = int(arrays["current_episode"])
            buffer.num_added = int(arrays["num_added"])
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"replay buffer file {path} is corrupt or inconsistent: {exc}") \
                from exc
        return buffer
