"""Stand task: state layout, base features, stand cost, exploration box."""

import numpy as np
import pytest
import torch

from mbrl_ros.tasks.stand import (ODOM_SIZE, StandCostConfig, StandLayout,
                                  StandTaskConfig, base_features, build_stand_cost,
                                  exploration_box, gravity_in_base, odom_vector,
                                  stand_planner_limits, stand_state, tilt_angle)

JOINTS = 3
POSTURE = (0.0, 0.8, -1.6)


def _quat_xyzw(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return np.concatenate([np.sin(angle / 2) * axis, [np.cos(angle / 2)]])


def _state(height=0.3, quat=(0, 0, 0, 1), q=POSTURE, linear=(0, 0, 0)):
    odom = odom_vector([0.4, -0.2, height], quat, linear, [0, 0, 0])
    return stand_state(np.array(q), np.zeros(JOINTS), odom)


def test_layout_matches_the_trainers_odometry_columns():
    layout = StandLayout(JOINTS)
    assert layout.state_dim == 2 * JOINTS + ODOM_SIZE
    state = _state(height=0.27, linear=(0.1, 0.2, 0.3))
    assert state[layout.height] == pytest.approx(0.27)
    np.testing.assert_allclose(state[layout.quaternion], [0, 0, 0, 1])
    np.testing.assert_allclose(state[layout.linear_velocity], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(state[layout.positions], POSTURE)


def test_state_builder_rejects_bad_input():
    with pytest.raises(ValueError, match="quaternion"):
        odom_vector([0, 0, 0.3], [0, 0, 0, 0], [0, 0, 0], [0, 0, 0])
    with pytest.raises(ValueError, match="3 values"):
        odom_vector([0, 0.3], [0, 0, 0, 1], [0, 0, 0], [0, 0, 0])
    odom = odom_vector([0, 0, 0.3], [0, 0, 0, 2.0], [0, 0, 0], [0, 0, 0])
    np.testing.assert_allclose(odom[3:7], [0, 0, 0, 1])  # normalised
    with pytest.raises(ValueError, match="NaN"):
        stand_state(np.array([np.nan, 0, 0]), np.zeros(3), odom)
    with pytest.raises(ValueError, match="odometry"):
        stand_state(np.zeros(3), np.zeros(3), odom[:12])


def test_gravity_and_tilt_are_yaw_invariant_and_match_numpy_and_torch():
    upright = gravity_in_base(_quat_xyzw([0, 0, 1], 1.3))
    np.testing.assert_allclose(upright, [0, 0, -1], atol=1e-12)
    pitched = _quat_xyzw([0, 1, 0], 0.3)
    # pitching nose-down by 0.3 rad: gravity tips toward +x in the base frame
    np.testing.assert_allclose(gravity_in_base(pitched), [np.sin(0.3), 0, -np.cos(0.3)],
                               atol=1e-12)
    yawed = np.concatenate([_quat_xyzw([0, 0, 1], 2.0)[3:], _quat_xyzw([0, 0, 1], 2.0)[:3]])
    # yaw then roll: the same tilt whatever the heading
    w1, x1, y1, z1 = yawed
    w2, x2, y2, z2 = np.concatenate([[np.cos(0.2)], np.sin(0.2) * np.array([1.0, 0, 0])])
    composed = np.array([w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2, w1 * y2 - x1 * z2 + y1 * w2
                         + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
                         w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2])
    assert tilt_angle(composed) == pytest.approx(0.4)
    assert tilt_angle(_quat_xyzw([1, 0, 0], np.pi)) == pytest.approx(np.pi)
    batch = np.stack([pitched, composed, 3.0 * pitched])  # unnormalised quaternions too
    np.testing.assert_allclose(gravity_in_base(torch.tensor(batch)).numpy(),
                               gravity_in_base(batch), atol=1e-9)
    np.testing.assert_allclose(gravity_in_base(batch[2]), gravity_in_base(batch[0]), atol=1e-9)


def test_base_features_are_compact_and_checked():
    features = base_features(np.stack([_state(0.3), _state(0.2, _quat_xyzw([1, 0, 0], 0.5))]),
                             JOINTS)
    assert features.shape == (2, 10)
    np.testing.assert_allclose(features[0, :4], [0.3, 0, 0, -1], atol=1e-12)
    assert features[1, 0] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="columns"):
        base_features(np.zeros((2, 7)), JOINTS)


def _cost(**overrides):
    config = StandCostConfig(posture=POSTURE, **overrides)
    return build_stand_cost(JOINTS, config, torch.device("cpu"))


def _rollout(state, horizon=3):
    """states [1, H+1, S] holding ``state``, actions [1, H, J] at the state's joints."""
    states = torch.tensor(np.tile(state, (1, horizon + 1, 1)), dtype=torch.float32)
    actions = states[:, 1:, :JOINTS].clone()
    return states, actions


def test_stand_cost_is_zero_at_the_target_and_orders_the_failures():
    cost = _cost(height_target=0.3)
    at_target = float(cost(*_rollout(_state())))
    assert at_target == pytest.approx(0.0, abs=1e-5)
    low, tilted, crouched, moving = (
        float(cost(*_rollout(s))) for s in (_state(0.2), _state(quat=_quat_xyzw([1, 0, 0], 0.3)),
                                            _state(q=(0.0, 1.4, -2.6)),
                                            _state(linear=(0.5, 0, 0))))
    assert min(low, tilted, crouched, moving) > 0.0
    # yaw and horizontal position do not matter
    yawed = _state(quat=_quat_xyzw([0, 0, 1], 2.5))
    assert float(cost(*_rollout(yawed))) == pytest.approx(0.0, abs=1e-5)
    # an upside-down base costs more than a tilted one
    flipped = float(cost(*_rollout(_state(quat=_quat_xyzw([1, 0, 0], np.pi)))))
    assert flipped > tilted
    # servo effort: targets away from the joints cost
    states, actions = _rollout(_state())
    assert float(cost(states, actions + 0.1)) > 0.0
    # batched: [N, H+1, S] -> [N]
    many = torch.cat([_rollout(_state(h))[0] for h in (0.3, 0.25, 0.2)])
    values = cost(many, many[:, 1:, :JOINTS])
    assert values.shape == (3,) and bool((values[1:] > values[:-1]).all())


def test_stand_cost_config_validation():
    with pytest.raises(ValueError, match="posture"):
        StandCostConfig().validate()
    with pytest.raises(ValueError, match="height_weight"):
        StandCostConfig(posture=POSTURE, height_weight=-1.0).validate()
    with pytest.raises(ValueError, match="height_target"):
        StandCostConfig(posture=POSTURE, height_target=0.0).validate()
    with pytest.raises(ValueError, match="posture needs 3"):
        build_stand_cost(JOINTS, StandCostConfig(posture=(0.0, 1.0)), torch.device("cpu"))
    with pytest.raises(ValueError, match="crouch"):
        StandTaskConfig().validate()


def test_exploration_box_and_planner_limits():
    lower, upper = np.array([-0.8, -1.0, -2.7]), np.array([0.8, 3.5, -0.9])
    low, high = exploration_box((0.0, 1.4, -2.6), POSTURE, 0.25, lower, upper)
    np.testing.assert_allclose(low, [-0.25, 0.55, -2.7])
    np.testing.assert_allclose(high, [0.25, 1.65, -1.35])
    with pytest.raises(ValueError, match="margin"):
        exploration_box((0.0, 1.4), POSTURE, 0.25, lower, upper)
    limits = stand_planner_limits(lower, upper, np.ones(3), 1.5)
    assert len(limits["state_low"]) == StandLayout(JOINTS).state_dim
    assert limits["action_low"] == tuple(lower)
    assert limits["state_high"][JOINTS] == 1.5 and limits["state_high"][-1] == np.inf


def test_posture_warm_start_ramps_to_the_standing_posture_within_speed():
    from mbrl_ros.tasks.stand import PostureWarmStart
    posture = np.array([0.0, 0.8, -1.6])
    seed = PostureWarmStart(posture, np.array([10.0, 10.0, 10.0]), 0.04, speed_fraction=0.5)
    crouch = np.array([0.0, 1.4, -2.5])
    path = seed(crouch, None, 8)
    assert path.shape == (8, 3)
    assert np.all(np.abs(np.diff(np.vstack([crouch, path]), axis=0)) <= 0.2 + 1e-12)
    np.testing.assert_allclose(path[-1], posture)
    with pytest.raises(ValueError, match="posture needs 3"):
        PostureWarmStart(posture[:2], np.ones(3), 0.04)
