"""Align robot streams at the control rate into transitions, counting everything dropped.

Per recording (one bag), fully vectorized with ``np.searchsorted``:

1. Every stream is cleaned: non-finite samples, duplicate and out-of-order stamps (a stamp not
   after the largest one before it) are dropped. A backward jump larger than
   ``gap_threshold_s`` is a clock reset; samples before a stream's last clock reset are dropped.
2. The state stream is cut into segments at time jumps larger than ``gap_threshold_s``;
   control ticks run every period from each segment's first sample.
3. The state (and odom / imu) is resampled at the ticks (linear or previous sample) when the
   samples used lie within ``state_tolerance_s``; the action of tick ``t`` is the last command
   stamped at or before ``t + command_latency_s`` (zero-order hold over ``[t, t + dt)``),
   if it is at most ``command_max_age_s`` old.
4. A transition joins ticks ``k`` and ``k + 1`` of one segment when both are valid, no reset
   marker lies in ``(t_k, t_k+1]`` and no joint moved more than ``reset_jump_threshold``;
   maximal runs of transitions are episodes.

State layout: ``[q (J), qd (J), odom (13) if configured, imu (10) if configured]``; see
``AlignedDataset.state_names``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.data.bag_reader import (GOAL_NAMES, IMU_NAMES, ODOM_NAMES, Recording,
                                      RobotStreams, TimeSeries)
from mbrl_ros.data.dataset_config import AlignmentConfig

logger = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
QUATERNION_SLICES = {"odom": slice(3, 7), "imu": slice(0, 4)}


@dataclass
class AlignmentReport:
    """Counts of everything aligned, dropped or split, summed over recordings."""

    num_ticks: int = 0
    """Control ticks generated inside state segments."""
    num_transitions: int = 0
    """Transitions kept."""
    num_episodes: int = 0
    """Episodes kept."""
    dropped_samples: Counter = field(default_factory=Counter)
    """``"<stream>/<reason>"``: samples dropped while cleaning (nonfinite, out_of_order,
    duplicate_stamp, before_clock_reset)."""
    dropped_ticks: Counter = field(default_factory=Counter)
    """Reason -> ticks without a usable state/odom/imu or command (no_state, no_command,
    stale_command, no_odom, no_imu)."""
    breaks: Counter = field(default_factory=Counter)
    """Reason -> episode splits: gap (state time jump), reset_marker, reset_jump."""
    dropped_transitions: Counter = field(default_factory=Counter)
    """Reason -> valid transitions dropped afterwards (short_episode)."""

    def summary(self) -> str:
        """One line for logs."""
        def nonzero(counts: Counter) -> dict:
            return {k: v for k, v in counts.items() if v}
        return (f"{self.num_transitions} transitions in {self.num_episodes} episodes from "
                f"{self.num_ticks} ticks; dropped samples {nonzero(self.dropped_samples)}, "
                f"ticks {nonzero(self.dropped_ticks)}, transitions "
                f"{nonzero(self.dropped_transitions)}; breaks {nonzero(self.breaks)}")


@dataclass
class AlignedDataset:
    """Transitions of all recordings with names and provenance of every row."""

    batch: TransitionBatch
    """state/next_state: [N, state_dim], action: [N, action_dim], episode: [N]."""
    state_names: tuple[str, ...]
    """Name of each state column."""
    action_names: tuple[str, ...]
    """Name of each action column."""
    tick_ns: np.ndarray
    """[N] int64 stamp of each transition's state."""
    recording: np.ndarray
    """[N] int64 index of the recording (bag) each transition came from."""
    goal: Optional[np.ndarray]
    """[N, 7] goal pose in effect (NaN before the first goal); None without a goal topic."""
    report: AlignmentReport


def clean_series(series: TimeSeries, name: str, gap_ns: int,
                 report: AlignmentReport) -> TimeSeries:
    """Drop non-finite, duplicate, out-of-order and pre-clock-reset samples (counted).

    Returns a series with strictly increasing stamps.
    """
    stamps, values = series.stamps_ns, series.values
    finite = np.isfinite(values).all(axis=1) if values.shape[1] else np.ones(len(stamps), bool)
    report.dropped_samples[f"{name}/nonfinite"] += int((~finite).sum())
    stamps, values = stamps[finite], values[finite]
    if len(stamps) == 0:
        return TimeSeries(stamps, values)
    resets = np.flatnonzero(np.diff(stamps) < -gap_ns)
    if len(resets):
        first = resets[-1] + 1
        report.dropped_samples[f"{name}/before_clock_reset"] += int(first)
        stamps, values = stamps[first:], values[first:]
    previous_max = np.concatenate([[np.iinfo(np.int64).min],
                                   np.maximum.accumulate(stamps)[:-1]])
    report.dropped_samples[f"{name}/duplicate_stamp"] += int((stamps == previous_max).sum())
    report.dropped_samples[f"{name}/out_of_order"] += int((stamps < previous_max).sum())
    keep = stamps > previous_max
    return TimeSeries(stamps[keep], values[keep])


def _ticks(stamps: np.ndarray, period_ns: int, gap_ns: int,
           report: AlignmentReport) -> tuple[np.ndarray, np.ndarray]:
    """Control ticks per state segment: ``(tick_ns [num_ticks], segment [num_ticks])``."""
    cuts = np.flatnonzero(np.diff(stamps) > gap_ns) + 1
    report.breaks["gap"] += len(cuts)
    starts = stamps[np.concatenate([[0], cuts])]
    ends = stamps[np.concatenate([cuts - 1, [len(stamps) - 1]])]
    counts = (ends - starts) // period_ns + 1
    segment = np.repeat(np.arange(len(starts)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return starts[segment] + offsets * period_ns, segment


def resample(series: TimeSeries, ticks: np.ndarray, config: AlignmentConfig,
             quaternion: Optional[slice] = None) -> tuple[np.ndarray, np.ndarray]:
    """Values of a cleaned series at ``ticks``: ``(values [num_ticks, dim], valid [num_ticks])``.

    Linear interpolation needs samples on both sides within ``state_tolerance_s`` and no gap
    between them; "previous" needs the last sample at or before the tick within tolerance.
    A quaternion slice is interpolated on the short arc and renormalized.
    """
    stamps, values = series.stamps_ns, series.values
    tolerance = int(config.state_tolerance_s * NS_PER_S)
    out = np.full((len(ticks), values.shape[1]), np.nan)
    if len(stamps) == 0:
        return out, np.zeros(len(ticks), bool)
    before = np.searchsorted(stamps, ticks, side="right") - 1
    has_before = before >= 0
    before = np.clip(before, 0, len(stamps) - 1)
    age = ticks - stamps[before]
    exact = has_before & (age == 0)
    if config.interpolation == "previous":
        valid = has_before & (age <= tolerance)
        out[valid] = values[before[valid]]
        return out, valid
    after = np.minimum(before + 1, len(stamps) - 1)
    lead = stamps[after] - ticks
    bracket = (has_before & (after > before) & (age <= tolerance) & (lead <= tolerance)
               & (stamps[after] - stamps[before] <= int(config.gap_threshold_s * NS_PER_S)))
    valid = exact | bracket
    weight = (age / np.maximum(stamps[after] - stamps[before], 1))[:, None]
    low, high = values[before], values[after].copy()
    if quaternion is not None:
        flip = (low[:, quaternion] * high[:, quaternion]).sum(axis=1) < 0
        high[flip, quaternion] *= -1.0
    mixed = low + weight * (high - low)
    if quaternion is not None:
        norm = np.linalg.norm(mixed[:, quaternion], axis=1, keepdims=True)
        mixed[:, quaternion] /= np.maximum(norm, np.finfo(float).tiny)
    out[bracket] = mixed[bracket]
    out[exact] = values[before[exact]]
    return out, valid


def hold(series: TimeSeries, ticks: np.ndarray, latency_ns: int,
         max_age_ns: Optional[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero-order hold: the last sample stamped at or before ``tick + latency``.

    Returns ``(values [num_ticks, dim], has_sample [num_ticks], fresh [num_ticks])``;
    ``fresh`` is False where the sample is older than ``max_age_ns`` (None: never stale).
    """
    stamps = series.stamps_ns
    query = ticks + latency_ns
    index = np.searchsorted(stamps, query, side="right") - 1
    has = index >= 0
    index = np.clip(index, 0, max(len(stamps) - 1, 0))
    out = np.full((len(ticks), series.values.shape[1]), np.nan)
    if len(stamps) == 0:
        return out, has, has
    out[has] = series.values[index[has]]
    fresh = has if max_age_ns is None else has & (query - stamps[index] <= max_age_ns)
    return out, has, fresh


def unwrap_angles(series: TimeSeries, joints: Sequence[int], num_joints: int) -> TimeSeries:
    """``series`` (joint states ``[q, qd]``) with the positions of ``joints`` unwrapped along
    the samples (steps of more than half a turn taken the short way); raises ValueError on a
    joint index out of range."""
    index = [int(i) for i in joints]
    if any(not 0 <= i < num_joints for i in index):
        raise ValueError(f"alignment angle_wrap {list(joints)} must be joint indices below "
                         f"{num_joints}")
    values = series.values.copy()
    values[:, index] = np.unwrap(values[:, index], axis=0)
    return TimeSeries(series.stamps_ns, values)


def _align_recording(recording: Recording, num_joints: int, config: AlignmentConfig,
                     report: AlignmentReport) -> Optional[dict]:
    gap_ns, period_ns = int(config.gap_threshold_s * NS_PER_S), config.period_ns
    state = clean_series(recording.state, "state", gap_ns, report)
    command = clean_series(recording.command, "command", gap_ns, report)
    if len(state) == 0:
        logger.warning("%s: no usable state samples", recording.path)
        return None
    if config.angle_wrap:
        state = unwrap_angles(state, config.angle_wrap, num_joints)
    ticks, segment = _ticks(state.stamps_ns, period_ns, gap_ns, report)
    report.num_ticks += len(ticks)
    parts, valid_state = [], np.ones(len(ticks), bool)
    values, ok = resample(state, ticks, config)
    report.dropped_ticks["no_state"] += int((~ok).sum())
    parts.append(values)
    valid_state &= ok
    for name in ("odom", "imu"):
        series = getattr(recording, name)
        if series is None:
            continue
        values, ok = resample(clean_series(series, name, gap_ns, report), ticks, config,
                              QUATERNION_SLICES[name])
        report.dropped_ticks[f"no_{name}"] += int((valid_state & ~ok).sum())
        parts.append(values)
        valid_state &= ok
    state_at_ticks = np.concatenate(parts, axis=1)
    action, has_command, fresh = hold(command, ticks, int(config.command_latency_s * NS_PER_S),
                                      int(config.command_max_age_s * NS_PER_S))
    report.dropped_ticks["no_command"] += int((valid_state & ~has_command).sum())
    report.dropped_ticks["stale_command"] += int((valid_state & has_command & ~fresh).sum())
    goal = None
    if recording.goal is not None:
        goal, _, _ = hold(clean_series(recording.goal, "goal", gap_ns, report), ticks, 0, None)

    same_segment = segment[1:] == segment[:-1]
    candidate = same_segment & valid_state[:-1] & valid_state[1:] & fresh[:-1]
    resets = np.sort(recording.resets_ns)
    crossed = (np.searchsorted(resets, ticks[1:], side="right")
               - np.searchsorted(resets, ticks[:-1], side="right")) > 0
    report.breaks["reset_marker"] += int((candidate & crossed).sum())
    jump = np.abs(state_at_ticks[1:, :num_joints] - state_at_ticks[:-1, :num_joints]).max(1)
    jumped = jump > config.reset_jump_threshold
    report.breaks["reset_jump"] += int((candidate & ~crossed & jumped).sum())
    keep = candidate & ~crossed & ~jumped
    index = np.flatnonzero(keep)
    starts = keep & ~np.concatenate([[False], keep[:-1]])
    episode = (np.cumsum(starts) - 1)[index]
    return {"state": state_at_ticks[index], "action": action[index],
            "next_state": state_at_ticks[index + 1], "episode": episode,
            "tick_ns": ticks[index], "goal": None if goal is None else goal[index]}


def align_streams(streams: RobotStreams, config: AlignmentConfig) -> AlignedDataset:
    """Turn the recordings of ``streams`` into transitions at ``config.control_rate_hz``.

    Episode ids are unique across recordings. Rows of episodes shorter than
    ``min_episode_transitions`` are dropped and counted.
    """
    config.validate()
    report = AlignmentReport()
    num_joints = len(streams.config.joints)
    names = list(streams.joint_state_names)
    if streams.config.odom_topic:
        names += [f"odom/{n}" for n in ODOM_NAMES]
    if streams.config.imu_topic:
        names += [f"imu/{n}" for n in IMU_NAMES]
    state_dim, action_dim = len(names), len(streams.action_names)
    pieces, episode_offset = [], 0
    for number, recording in enumerate(streams.recordings):
        part = _align_recording(recording, num_joints, config, report)
        if part is None or len(part["episode"]) == 0:
            continue
        lengths = np.bincount(part["episode"])
        long_enough = lengths[part["episode"]] >= config.min_episode_transitions
        report.dropped_transitions["short_episode"] += int((~long_enough).sum())
        part = {k: (None if v is None else v[long_enough]) for k, v in part.items()}
        _, part["episode"] = np.unique(part["episode"], return_inverse=True)
        part["episode"] = part["episode"].reshape(-1) + episode_offset
        episode_offset = int(part["episode"].max(initial=episode_offset - 1)) + 1
        part["recording"] = np.full(len(part["episode"]), number, dtype=np.int64)
        pieces.append(part)
    has_goal = bool(streams.config.goal_topic)

    def joined(key: str, shape: tuple, dtype) -> np.ndarray:
        return (np.concatenate([p[key] for p in pieces]) if pieces
                else np.zeros(shape, dtype=dtype))

    batch = TransitionBatch(state=joined("state", (0, state_dim), np.float32),
                            action=joined("action", (0, action_dim), np.float32),
                            next_state=joined("next_state", (0, state_dim), np.float32),
                            episode=joined("episode", (0,), np.int64))
    report.num_transitions = len(batch)
    report.num_episodes = episode_offset
    logger.info("alignment: %s", report.summary())
    return AlignedDataset(batch, tuple(names), streams.action_names,
                          joined("tick_ns", (0,), np.int64), joined("recording", (0,), np.int64),
                          joined("goal", (0, len(GOAL_NAMES)), float) if has_goal else None,
                          report)
