"""Goals a given travel time from the home pose: within it, not trivially close, repeatable."""

from pathlib import Path

import numpy as np
import pytest

from mbrl_ros.core.workspace import WorkspaceConfig
from mbrl_ros.demo.goals import TravelGoals, goals_within_travel
from mbrl_ros.tasks.reach import load_robot

REPO = Path(__file__).resolve().parents[2]
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def test_goals_lie_within_the_travel_and_the_workspace():
    robot = load_robot(str(REPO / "urdf" / "arm7.urdf"))
    config = TravelGoals(travel_s=0.6, speed_fraction=0.5)
    workspace = WorkspaceConfig(ee_lower=(-0.9, -0.9, 0.1), ee_upper=(0.9, 0.9, 1.3))
    goals = goals_within_travel(robot, HOME, 20, np.random.default_rng(0), config, workspace)
    again = goals_within_travel(robot, HOME, 20, np.random.default_rng(0), config, workspace)
    np.testing.assert_array_equal(goals, again)
    home = robot.ee_pose(HOME)[0]
    distance = np.linalg.norm(goals - home, axis=1)
    # the farthest the end effector gets with every joint moved by at most the travel:
    # a bound from the joint speeds and the arm's size (1.2 m covers arm7's reach)
    joint_travel = config.travel_s * config.speed_fraction * robot.velocity_limits
    assert np.all(distance <= 1.2 * np.sum(joint_travel)) and distance.min() > 0.02
    assert np.all(goals[:, 2] >= 0.1)  # the workspace's box
    farther = goals_within_travel(robot, HOME, 20, np.random.default_rng(0),
                                  TravelGoals(travel_s=1.2, speed_fraction=0.5), workspace)
    assert np.median(np.linalg.norm(farther - home, axis=1)) > np.median(distance)
    with pytest.raises(ValueError, match="only"):
        goals_within_travel(robot, HOME, 5, np.random.default_rng(0), config,
                            WorkspaceConfig(ee_lower=(5.0, 5.0, 5.0), ee_upper=(6.0, 6.0, 6.0)))
