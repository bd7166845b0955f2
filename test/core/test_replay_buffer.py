"""ReplayBuffer: ring wraparound, episode indices, sampling, .npz save/load."""

import logging

import numpy as np
import pytest

from mbrl_ros.core.replay_buffer import ReplayBuffer, ReplayBufferConfig
from mbrl_ros.core.types import TransitionBatch


def numbered(start: int, num: int, terminal_at=(), reward: bool = True) -> TransitionBatch:
    """Rows whose state[0] is their global index (start .. start + num - 1)."""
    index = np.arange(start, start + num, dtype=np.float32)
    terminal = np.zeros(num, bool)
    terminal[list(terminal_at)] = True
    return TransitionBatch(state=np.stack([index, -index], 1), action=index[:, None] * 0.5,
                           next_state=np.stack([index + 1, -index - 1], 1),
                           reward=index * 2 if reward else None, terminal=terminal)


def test_wraparound_keeps_newest_in_order():
    buffer = ReplayBuffer(2, 1, ReplayBufferConfig(capacity=5))
    assert buffer.add(numbered(0, 3)) == 3 and len(buffer) == 3
    buffer.add(numbered(3, 4))
    assert len(buffer) == 5 and buffer.num_added == 7
    data = buffer.all()
    np.testing.assert_array_equal(data.state[:, 0], [2, 3, 4, 5, 6])
    np.testing.assert_array_equal(data.reward, [4, 6, 8, 10, 12])
    np.testing.assert_array_equal(data.action[:, 0], data.state[:, 0] * 0.5)
    buffer.add(numbered(7, 12))  # larger than the capacity: newest rows only
    np.testing.assert_array_equal(buffer.all().state[:, 0], [14, 15, 16, 17, 18])


def test_episode_boundaries():
    buffer = ReplayBuffer(2, 1, ReplayBufferConfig(capacity=100))
    buffer.add(numbered(0, 5, terminal_at=[1]))
    buffer.add(numbered(5, 2))
    buffer.end_episode()
    buffer.end_episode()  # no rows since the last call: no empty episode
    buffer.add(numbered(7, 2, terminal_at=[1]))
    buffer.add(numbered(9, 1))
    np.testing.assert_array_equal(buffer.all().episode, [0, 0, 1, 1, 1, 1, 1, 2, 2, 3])
    np.testing.assert_array_equal(buffer.all().terminal[[1, 8]], [True, True])
    given = numbered(10, 2)
    given.episode = np.array([40, 41])
    buffer.add(given)
    assert buffer.current_episode == 42
    buffer.add(numbered(12, 1))
    assert buffer.all().episode[-1] == 42


def test_sample_is_seeded_and_rewards_only_when_all_rows_have_them():
    buffer = ReplayBuffer(2, 1, ReplayBufferConfig(capacity=10))
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(3, np.random.default_rng(0))
    buffer.add(numbered(0, 6))
    first = buffer.sample(50, np.random.default_rng(1))
    second = buffer.sample(50, np.random.default_rng(1))
    np.testing.assert_array_equal(first.state, second.state)
    assert len(first) == 50 and set(first.state[:, 0]) <= set(range(6))
    np.testing.assert_array_equal(first.reward, first.state[:, 0] * 2)
    buffer.add(numbered(6, 2, reward=False))
    assert buffer.all().reward is None and buffer.sample(4, np.random.default_rng(0)).reward \
        is None


def test_non_finite_rows_are_refused_with_warning(caplog):
    buffer = ReplayBuffer(2, 1, ReplayBufferConfig(capacity=10))
    batch = numbered(0, 4)
    batch.state[1, 0] = np.nan
    batch.reward[2] = np.inf
    with caplog.at_level(logging.WARNING):
        assert buffer.add(batch) == 2
    assert "refused 2 of 4" in caplog.text
    np.testing.assert_array_equal(buffer.all().state[:, 0], [0, 3])
    with pytest.raises(ValueError, match="do not match"):
        buffer.add(TransitionBatch(np.zeros((1, 3)), np.zeros((1, 1)), np.zeros((1, 3))))


def test_save_load_round_trip(tmp_path):
    buffer = ReplayBuffer(2, 1, ReplayBufferConfig(capacity=6))
    buffer.add(numbered(0, 5, terminal_at=[2]))
    buffer.add(numbered(5, 4, reward=False))
    path = str(tmp_path / "buffer.npz")
    buffer.save(path)
    loaded = ReplayBuffer.load(path)
    assert loaded.capacity == 6 and len(loaded) == 6 and loaded.num_added == 9
    assert loaded.current_episode == buffer.current_episode
    for name in ("state", "action", "next_state", "terminal", "episode"):
        np.testing.assert_array_equal(getattr(loaded.all(), name), getattr(buffer.all(), name))
    np.testing.assert_array_equal(loaded._has_reward[loaded._chronological()],
                                  [True, True, False, False, False, False])
    smaller = ReplayBuffer.load(path, ReplayBufferConfig(capacity=3))
    np.testing.assert_array_equal(smaller.all().state[:, 0], [6, 7, 8])
    loaded.add(numbered(9, 1))
    np.testing.assert_array_equal(loaded.all().state[:, 0], [4, 5, 6, 7, 8, 9])


def test_corrupt_files_raise_value_error(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read"):
        ReplayBuffer.load(str(path))
    np.savez(path, state=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="corrupt or inconsistent"):
        ReplayBuffer.load(str(path))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(2, 1, ReplayBufferConfig(capacity=0))
