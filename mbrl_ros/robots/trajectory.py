"""Joint-space trajectory sampling (ROS-free part of a JointTrajectory command)."""

from __future__ import annotations

import numpy as np


class JointTrajectory:
    """Piecewise-linear joint trajectory, held at its last point after the end."""

    def __init__(self, start_time: float, times: np.ndarray, values: np.ndarray) -> None:
        """Args:
            start_time: time the trajectory starts [s] (sim time).
            times: [num_points] time from start of each point [s], strictly increasing, >= 0.
            values: [num_points, num_joints] target of each point (positions, velocities or
                efforts, whichever the actuators take).
        """
        times = np.asarray(times, dtype=float)
        values = np.asarray(values, dtype=float)
        if times.ndim != 1 or len(times) == 0 or values.shape[0] != len(times) or values.ndim != 2:
            raise ValueError(f"trajectory needs times [K] and values [K, J], got "
                             f"{times.shape} and {values.shape}")
        if not (np.all(np.isfinite(times)) and np.all(np.isfinite(values))):
            raise ValueError("trajectory contains NaN or inf")
        if times[0] < 0 or np.any(np.diff(times) <= 0):
            raise ValueError("trajectory times must be >= 0 and strictly increasing")
        self.start_time, self.times, self.values = start_time, times, values

    def sample(self, time: float) -> np.ndarray:
        """[num_joints] target at ``time`` (first point before its time, last after the end)."""
        elapsed = time - self.start_time
        return np.array([np.interp(elapsed, self.times, column) for column in self.values.T])


def joint_path(start: np.ndarray, target: np.ndarray, horizon: int,
               max_step: np.ndarray) -> np.ndarray:
    """[horizon, J] straight joint-space path from ``start`` toward ``target`` (both [J]),
    moving each joint at most ``max_step`` [J] per step, then holding ``target``."""
    start, target = np.asarray(start, dtype=float), np.asarray(target, dtype=float)
    steps = np.arange(1, int(horizon) + 1)[:, None] * np.asarray(max_step, dtype=float)[None]
    return start[None] + np.clip((target - start)[None], -steps, steps)
