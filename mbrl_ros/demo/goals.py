"""Random reachable end-effector goals: forward kinematics of random joint configurations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbrl_ros.robots.robot_model import RobotModel


@dataclass(frozen=True)
class GoalSampler:
    """Draws goals from the middle of each joint's range, kept above the floor."""

    range_fraction: float = 0.5
    """Joint configurations are drawn within this fraction of each range, around its centre."""
    min_height: float = 0.15
    """Lowest goal height above the base [m]."""
    min_radius: float = 0.3
    """Smallest horizontal distance from the base axis [m]."""

    def sample(self, robot: RobotModel, count: int, rng: np.random.Generator) -> np.ndarray:
        """[count, 3] goals, each the end-effector position of a joint configuration."""
        centre = 0.5 * (robot.position_lower + robot.position_upper)
        half = 0.5 * (robot.position_upper - robot.position_lower) * self.range_fraction
        goals = []
        for _ in range(1000 * count):
            q = rng.uniform(centre - half, centre + half)
            position, _ = robot.ee_pose(q)
            if position[2] >= self.min_height and np.hypot(*position[:2]) >= self.min_radius:
                goals.append(position)
                if len(goals) == count:
                    return np.array(goals)
        raise ValueError("could not find enough reachable goals; relax GoalSampler settings")
