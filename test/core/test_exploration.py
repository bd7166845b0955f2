"""Exploration before any model: smooth, within limits, deterministic."""

import numpy as np
import pytest

from mbrl_ros.core.exploration import ExplorationConfig, SmoothExplorer

LOWER, UPPER = np.array([-1.0, -2.0, 0.0]), np.array([1.0, 2.0, 3.0])
LIMIT = np.array([10.0, 20.0, 5.0])


def _run(mode, ticks=500, seed=0):
    explorer = SmoothExplorer(ExplorationConfig(seed=seed), mode, LOWER, UPPER, LIMIT, 0.01)
    position, velocity = np.zeros(3), np.zeros(3)
    commands = []
    for _ in range(ticks):
        commands.append(explorer(position, velocity))
        position = np.clip(position + 0.01 * velocity, LOWER, UPPER)
        velocity = 0.9 * velocity + 0.01 * commands[-1]
    return np.array(commands)


@pytest.mark.parametrize("mode", ["effort", "velocity"])
def test_commands_stay_within_command_limits(mode):
    commands = _run(mode)
    assert np.all(np.abs(commands) <= LIMIT + 1e-12)
    assert np.ptp(commands, axis=0).min() > 0.0, "exploration must move every joint"


def test_position_mode_stays_within_position_limits():
    commands = _run("position")
    assert np.all(commands >= LOWER) and np.all(commands <= UPPER)


def test_exploration_is_smooth_and_seeded():
    commands = _run("effort")
    assert np.array_equal(commands, _run("effort"))
    assert not np.array_equal(commands, _run("effort", seed=1))
    # correlated noise and filtered targets: tick-to-tick change is a small share of the range
    step = np.abs(np.diff(commands, axis=0)).max(axis=0)
    assert np.all(step < 0.35 * LIMIT)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="control_mode"):
        SmoothExplorer(ExplorationConfig(), "torque", LOWER, UPPER, LIMIT, 0.01)
    with pytest.raises(ValueError, match="target_period_s"):
        ExplorationConfig(target_period_s=0.0).validate()


def test_inertia_aware_law_compensates_gravity_and_caps_target_speed():
    gravity, inertia = np.array([5.0, -2.0, 0.0]), np.array([1.0, 0.5, 0.1])
    config = ExplorationConfig(noise_acceleration=0.0, max_speed_fraction=0.5)
    explorer = SmoothExplorer(config, "effort", LOWER, UPPER, LIMIT, 0.01,
                              lambda q: (gravity, inertia), velocity_limit=np.ones(3))
    position = 0.5 * (LOWER + UPPER)
    command = explorer(position, np.zeros(3))
    # one tick: the tracked target moved at most 0.5 rad/s x 0.01 s from the start
    assert np.all(np.abs(explorer._tracked - position) <= 0.005 + 1e-12)
    w = explorer.bandwidth
    expected = gravity + inertia * (w * w * (explorer._tracked - position))
    assert np.allclose(command, np.clip(expected, -LIMIT, LIMIT))


def test_position_targets_stay_near_a_robot_that_is_held_back():
    config = ExplorationConfig(target_period_s=0.5, target_range_fraction=1.0,
                               noise_fraction=0.0, max_position_lead=0.2)
    explorer = SmoothExplorer(config, "position", np.array([-3.0, -3.0]), np.array([3.0, 3.0]),
                              np.array([3.0, 3.0]), 0.04)
    held = np.array([0.5, -0.5])
    for _ in range(200):  # the robot never moves (e.g. the gate holds it)
        command = explorer(held, np.zeros(2))
        assert np.all(np.abs(command - held) <= 0.2 + 1e-12)


def test_position_targets_stay_within_the_gates_exploration_bound():
    """A robot held still (by the gate, a contact) never gets targets beyond the bound the
    safety gate passes for exploration: effort_limit / servo_kp, scaled down."""
    from mbrl_ros.core.command_limits import exploration_lead
    lead = exploration_lead(np.array([87.0, 12.0]), np.array([400.0, 20.0]))
    explorer = SmoothExplorer(ExplorationConfig(max_position_lead=1.0, seed=3), "position",
                              np.array([-2.0, -2.0]), np.array([2.0, 2.0]),
                              np.array([2.0, 2.0]), 0.04, position_lead=lead)
    held = np.array([0.3, -0.2])
    for _ in range(500):
        command = explorer(held, np.zeros(2))
        assert np.all(np.abs(command - held) <= lead + 1e-12)


def _track(explorer, ticks=400):
    """Positions of a servo that tracks every position command exactly."""
    position, positions = np.zeros(3), []
    for _ in range(ticks):
        position = explorer(position, np.zeros(3))
        positions.append(position)
    return np.array(positions)


def test_goal_sampler_draws_the_targets_within_the_limits():
    """A task's sampler replaces the uniform draw, seeded by the explorer and clipped to the
    limits; without one the targets spread over the range."""
    centre = np.array([0.5, -1.0, 2.0])

    def sampler(rng):
        return centre + rng.uniform(-0.05, 0.05, 3)

    def config():
        return ExplorationConfig(seed=3, noise_fraction=0.0)

    guided = _track(SmoothExplorer(config(), "position", LOWER, UPPER, LIMIT, 0.01,
                                   goal_sampler=sampler))
    np.testing.assert_allclose(guided[-100:], np.tile(centre, (100, 1)), atol=0.1)
    assert np.array_equal(guided, _track(SmoothExplorer(config(), "position", LOWER, UPPER,
                                                        LIMIT, 0.01, goal_sampler=sampler)))
    uniform = _track(SmoothExplorer(config(), "position", LOWER, UPPER, LIMIT, 0.01))
    assert np.abs(uniform - centre).max() > 0.5
    outside = _track(SmoothExplorer(config(), "position", LOWER, UPPER, LIMIT, 0.01,
                                    goal_sampler=lambda rng: UPPER + 5.0))
    assert np.all(outside <= UPPER) and np.allclose(outside[-1], UPPER, atol=0.05)
