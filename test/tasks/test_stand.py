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


def _limits():
    return np.array([-0.8, -1.0, -2.7]), np.array([0.8, 3.5, -0.9])


def test_path_exploration_targets_stay_near_the_crouch_stand_path():
    from mbrl_ros.core.exploration import ExplorationConfig
    from mbrl_ros.tasks.stand import PathTargets, stand_explorer
    lower, upper = _limits()
    crouch = np.array([0.0, 1.4, -2.5])
    deviation = 0.05 * (upper - lower)
    targets = PathTargets(crouch, POSTURE, deviation, 0.5, lower, upper)
    rng = np.random.default_rng(0)
    drawn = np.array([targets(rng) for _ in range(2000)])
    # each target is within the deviation (per joint) of some point of the crouch-stand path
    path = crouch + np.linspace(0.0, 1.0, 401)[:, None] * (np.asarray(POSTURE) - crouch)
    near = np.all(np.abs(drawn[:, None] - path[None]) <= deviation + 2e-3, axis=-1)
    assert np.all(near.any(axis=1))
    at_stand = np.all(np.abs(drawn - POSTURE) <= deviation + 1e-9, axis=-1)
    assert at_stand.mean() > 0.5  # half drawn around the standing end, a few more near it
    assert drawn[:, 0].std() > 0.02  # every joint is explored, the hip too
    # the explorer in "path" mode commands near the path; "box" mode throws the legs wider
    task = StandTaskConfig(crouch=tuple(crouch), exploration_margin=0.4, limit_margin=0.0)
    spreads = {}
    for mode in ("path", "box"):
        explorer = stand_explorer(ExplorationConfig(seed=1, noise_fraction=0.0),
                                  StandTaskConfig(**{**task.__dict__,
                                                     "exploration_targets": mode}),
                                  POSTURE, lower, upper, 0.04, np.full(3, 10.0))
        position = crouch.copy()
        commands = []
        for _ in range(1500):
            position = explorer(position, np.zeros(3))
            commands.append(position)
        spreads[mode] = np.ptp(np.array(commands)[:, 0])
    assert spreads["path"] <= 2 * 0.05 * 1.6 + 1e-9 < spreads["box"]
    with pytest.raises(ValueError, match="exploration_targets"):
        StandTaskConfig(crouch=(0.0,), exploration_targets="cube").validate()
    with pytest.raises(ValueError, match="stand_probability"):
        StandTaskConfig(crouch=(0.0,), stand_probability=1.5).validate()


def _rotate(state, yaw, shift):
    """``state`` turned by ``yaw`` about the world z axis and shifted by ``shift`` (x, y)."""
    layout = StandLayout(JOINTS)
    out = state.copy()
    c, s = np.cos(yaw), np.sin(yaw)
    px, py = state[layout.base_position][:2]
    out[layout.base_position.start:layout.base_position.start + 2] = (
        c * px - s * py + shift[0], s * px + c * py + shift[1])
    heading = _quat_xyzw([0, 0, 1], yaw)
    x1, y1, z1, w1 = heading
    x2, y2, z2, w2 = state[layout.quaternion]
    out[layout.quaternion] = [w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                              w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                              w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
                              w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2]
    return out


def _yaw(quaternion):
    x, y, z, w = quaternion
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class _Recorder:
    """A one-member model that remembers its inputs and moves the base 1 cm forward (base x)
    and turns it by 0.1 rad of yaw."""

    state_dim, action_dim, num_members, device = 2 * JOINTS + ODOM_SIZE, JOINTS, 1, \
        torch.device("cpu")

    def __init__(self):
        self.seen = []

    def predict(self, state, action, grad=False):
        self.seen.append(state.clone())
        layout = StandLayout(JOINTS)
        forward = state.clone()
        forward[..., layout.base_position.start] += 0.01
        quaternion = forward[..., layout.quaternion]
        turn = torch.tensor(_quat_xyzw([0, 0, 1], 0.1), dtype=state.dtype)
        x1, y1, z1, w1 = (turn[i] for i in range(4))
        x2, y2, z2, w2 = (quaternion[..., i] for i in range(4))
        forward[..., layout.quaternion] = torch.stack(
            [w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2, w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
             w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2, w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2],
            dim=-1)
        return forward.unsqueeze(0), torch.zeros_like(forward).unsqueeze(0)

    def disagreement(self, mean):
        return mean.var(dim=0).sum(dim=-1)

    def fit(self, batch, seed=0, progress=None):
        self.fitted = batch


def test_heading_frame_model_ignores_position_and_yaw_and_predicts_in_the_odometry_frame():
    from mbrl_ros.core.types import TransitionBatch
    from mbrl_ros.tasks.stand import HeadingFrameModel
    layout = StandLayout(JOINTS)
    tilted = _state(0.28, _quat_xyzw([1, 0.3, 0], 0.2), linear=(0.1, -0.2, 0.05))
    moved = [_rotate(tilted, yaw, shift) for yaw, shift in ((0.0, (0, 0)), (2.0, (1.5, -3.0)),
                                                            (-2.8, (-0.4, 0.7)))]
    inner = _Recorder()
    model = HeadingFrameModel(inner, JOINTS)
    action = torch.zeros(1, JOINTS)
    means = [model.predict(torch.tensor(m[None]), action)[0][0, 0].numpy() for m in moved]
    # the network sees the same input whatever the base's x, y and yaw
    for seen in inner.seen[1:]:
        np.testing.assert_allclose(seen.numpy(), inner.seen[0].numpy(), atol=1e-5)
    assert inner.seen[0][0, layout.base_position.start] == 0.0
    np.testing.assert_allclose(inner.seen[0][0, layout.height], 0.28, atol=1e-6)
    # and its heading-frame step (1 cm forward, a 0.1 rad turn) comes back in each frame
    for start, mean in zip(moved, means):
        yaw = _yaw(start[layout.quaternion])
        step = mean[layout.base_position][:2] - start[layout.base_position][:2]
        np.testing.assert_allclose(step, 0.01 * np.array([np.cos(yaw), np.sin(yaw)]), atol=1e-5)
        assert _yaw(mean[layout.quaternion]) - yaw == pytest.approx(0.1, abs=1e-5)
        np.testing.assert_allclose(mean[layout.height], 0.28, atol=1e-6)
        np.testing.assert_allclose(mean[layout.linear_velocity],
                                   start[layout.linear_velocity], atol=1e-6)
    np.testing.assert_allclose(np.diff([tilt_angle(m[layout.quaternion]) for m in means]), 0,
                               atol=1e-5)
    # training data are moved into each state's heading frame
    batch = TransitionBatch(np.stack(moved).astype(np.float32), np.zeros((3, JOINTS), np.float32),
                            np.stack([_rotate(m, 0.0, (0.01, 0.0)) for m in moved]
                                     ).astype(np.float32))
    model.fit(batch)
    fitted = inner.fitted
    np.testing.assert_allclose(fitted.state, np.tile(fitted.state[:1], (3, 1)), atol=1e-5)
    assert fitted.state.dtype == np.float32
    with pytest.raises(ValueError, match="state_dim"):
        HeadingFrameModel(inner, JOINTS + 1)
