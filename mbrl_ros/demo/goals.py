"""Random reachable end-effector goals: forward kinematics of random joint configurations
that keep the arm inside its workspace (every checked point above the floor, the end effector
within its box; see :mod:`mbrl_ros.core.workspace`): anywhere in the middle of the joint ranges
(:class:`GoalSampler`), or within a given travel time of a start pose
(:func:`goals_within_travel`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from mbrl_ros.core.workspace import WorkspaceConfig
from mbrl_ros.robots.defaults import range_centre, range_half_width
from mbrl_ros.robots.robot_model import RobotModel
from mbrl_ros.robots.workspace_points import workspace_guard


@dataclass(frozen=True)
class GoalSampler:
    """Draws goals from the middle of each joint's range, kept above the base and away from
    its axis, both in proportion to the arm's reach (so the rule fits any arm's size)."""

    range_fraction: float = 0.5
    """Joint configurations are drawn within this fraction of each range, around its centre
    (ranges of a turn or more: within this fraction of a turn around 0)."""
    min_height_fraction: float = 0.12
    """Lowest goal height above the base, as a fraction of the reach."""
    min_radius_fraction: float = 0.25
    """Smallest horizontal distance from the base axis, as a fraction of the reach."""
    reach_samples: int = 200
    """The reach is the farthest end-effector distance among this many drawn configurations."""

    def sample(self, robot: RobotModel, count: int, rng: np.random.Generator,
               workspace: WorkspaceConfig = WorkspaceConfig()) -> np.ndarray:
        """[count, 3] goals, each the end-effector position of a joint configuration that
        ``workspace`` allows (the planner's: a goal it could not reach without leaving the
        workspace is never drawn)."""
        return self.sample_with_configurations(robot, count, rng, workspace)[0]

    def sample_with_configurations(self, robot: RobotModel, count: int,
                                   rng: np.random.Generator,
                                   workspace: WorkspaceConfig = WorkspaceConfig()
                                   ) -> Tuple[np.ndarray, np.ndarray]:
        """([count, 3] goals, [count, J] the joint configurations they come from)."""
        guard = workspace_guard(robot, workspace)
        centre = range_centre(robot)
        half = range_half_width(robot) * self.range_fraction
        reach = max(float(np.linalg.norm(robot.ee_pose(rng.uniform(centre - half,
                                                                   centre + half))[0]))
                    for _ in range(self.reach_samples))
        min_height, min_radius = (self.min_height_fraction * reach,
                                  self.min_radius_fraction * reach)
        goals, configurations = [], []
        for _ in range(1000 * count):
            q = rng.uniform(centre - half, centre + half)
            position, _ = robot.ee_pose(q)
            if position[2] >= min_height and np.hypot(*position[:2]) >= min_radius \
                    and (guard is None or guard.allows(q)):
                goals.append(position)
                configurations.append(q)
                if len(goals) == count:
                    return np.array(goals), np.array(configurations)
        raise ValueError("could not find enough reachable goals; relax GoalSampler settings "
                         "or the workspace")


@dataclass(frozen=True)
class TravelGoals:
    """Goals a given time of joint travel away from a start pose."""

    travel_s: float = 0.6
    """The slowest joint needs at most this long to get there at ``speed_fraction`` [s]."""
    min_travel_fraction: float = 0.5
    """... and at least this fraction of it (no trivial goals)."""
    speed_fraction: float = 0.5
    """Speed of the travel, as a fraction of the URDF velocity limits (the planner's goal
    seed moves at its ``goal_seed_speed_fraction``)."""
    candidates_per_goal: int = 100
    """Joint configurations drawn at most per goal kept."""


def goals_within_travel(robot: RobotModel, start: np.ndarray, count: int,
                        rng: np.random.Generator, config: TravelGoals = TravelGoals(),
                        workspace: WorkspaceConfig = WorkspaceConfig()) -> np.ndarray:
    """[count, 3] goals: the end effector at random joint configurations around ``start`` whose
    slowest joint needs ``min_travel_fraction`` to all of ``travel_s`` at ``speed_fraction``
    of the velocity limits, inside the joint limits and ``workspace``."""
    reach = config.travel_s * config.speed_fraction * robot.velocity_limits
    guard = workspace_guard(robot, workspace)
    goals = []
    for _ in range(count * config.candidates_per_goal):
        step = rng.uniform(-1.0, 1.0, start.shape)
        q = start + step * reach
        if np.max(np.abs(step)) < config.min_travel_fraction \
                or np.any(q < robot.position_lower) or np.any(q > robot.position_upper) \
                or (guard is not None and not guard.allows(q)):
            continue
        goals.append(robot.ee_pose(q)[0])
        if len(goals) == count:
            return np.array(goals)
    raise ValueError(f"only {len(goals)} of {count} goals found within {config.travel_s} s of "
                     "travel inside the joint limits and the workspace")
