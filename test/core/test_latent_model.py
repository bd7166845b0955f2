"""TD-MPC2-style latent world model: layers, joint training, target EMA, latent MPPI, save/load.

Toy system throughout: a 1-D integrator ``x' = x + STEP * a`` with ``a in [-1, 1]`` and reward
``-|x'|`` (stay at the origin), on random-action episodes.
"""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mbrl_ros.core.checkpoint import CheckpointError
from mbrl_ros.core.latent_config import (LatentModelConfig, LatentPlannerConfig,
                                         heuristic_discount)
from mbrl_ros.core.latent_layers import TwoHot, mish
from mbrl_ros.core.latent_model import LatentWorldModel
from mbrl_ros.core.latent_planner import LatentPlanner
from mbrl_ros.core.latent_training import LatentTrainer, SequenceSampler
from mbrl_ros.core.types import TransitionBatch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEP = 0.2
EPISODE = 20
DISCOUNT = 0.9
UPDATES = 250
TINY = LatentModelConfig(latent_dim=16, encoder_hidden=(32,), mlp_hidden=(64, 64), num_q=2,
                         q_dropout=0.0, num_bins=51, batch_size=64, learning_rate=3e-3)
PLANNER = LatentPlannerConfig(horizon=3, iterations=4, num_samples=64, num_elites=8,
                              num_policy_trajectories=4)
LOW, HIGH = np.array([-1.0], np.float32), np.array([1.0], np.float32)


def integrator_data(episodes: int = 60, seed: int = 0) -> TransitionBatch:
    rng = np.random.default_rng(seed)
    start = rng.uniform(-1.5, 1.5, (episodes, 1))
    actions = rng.uniform(-1.0, 1.0, (episodes, EPISODE, 1))
    positions = start[:, None, :] + STEP * np.cumsum(actions, axis=1)  # next states
    states = np.concatenate([start[:, None, :], positions[:, :-1]], axis=1)
    reward = -np.abs(positions[..., 0])
    episode = np.repeat(np.arange(episodes), EPISODE)
    return TransitionBatch(states.reshape(-1, 1).astype(np.float32),
                           actions.reshape(-1, 1).astype(np.float32),
                           positions.reshape(-1, 1).astype(np.float32),
                           reward=reward.reshape(-1).astype(np.float32), episode=episode)


def train(config: LatentModelConfig, updates: int = UPDATES, seed: int = 0):
    torch.manual_seed(seed)
    model = LatentWorldModel(1, 1, config, seed=seed)
    trainer = LatentTrainer(model, DISCOUNT, seed=seed)
    sampler = SequenceSampler(integrator_data(seed=seed), config.horizon, LOW, HIGH)
    rng = np.random.default_rng(seed)
    reports = [trainer.update(sampler.sample(config.batch_size, rng)) for _ in range(updates)]
    return model, trainer, sampler, reports


@pytest.fixture(scope="module")
def trained():
    return train(TINY)


@torch.no_grad()
def consistency_ratio(model: LatentWorldModel, data: TransitionBatch) -> float:
    """Squared distance of predicted next latents to the encodings of the true next states,
    over the distance to encodings of shuffled next states (1: the prediction tells nothing)."""
    state, action = torch.as_tensor(data.state), torch.as_tensor(data.action)
    predicted = model.next(model.encode(state), action)
    target = model.encode(torch.as_tensor(data.next_state))
    shuffled = target[torch.randperm(len(target), generator=torch.Generator().manual_seed(0))]
    return float(F.mse_loss(predicted, target) / F.mse_loss(predicted, shuffled))


# --------------------------------------------------------------------------- building blocks
def test_two_hot_round_trip_and_loss_minimum():
    two_hot = TwoHot(101, -10.0, 10.0)
    values = torch.tensor([-30.0, -1.0, 0.0, 0.37, 5.0, 200.0])
    target = two_hot.encode(values)
    assert torch.allclose(target.sum(-1), torch.ones(len(values)))
    decoded = two_hot.decode(torch.log(target.clamp_min(1e-12)))
    assert torch.allclose(decoded, values, rtol=1e-3, atol=1e-3)
    # the cross-entropy is smallest at the logits of the target itself
    good = two_hot.loss(torch.log(target.clamp_min(1e-12)), values)
    bad = two_hot.loss(torch.zeros_like(target), values)
    assert (good < bad).all()
    mse = TwoHot(1, -10.0, 10.0)
    assert torch.allclose(mse.decode(torch.log1p(values.abs())[:, None] * values.sign()[:, None]),
                          values, rtol=1e-4)


def test_fast_mish_matches_torch():
    x = torch.linspace(-30.0, 30.0, 601, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(mish(x), F.mish(x), atol=1e-9)
    assert torch.autograd.gradcheck(mish, (torch.randn(5, 3, dtype=torch.float64,
                                                       requires_grad=True),))


def test_configs_validate():
    with pytest.raises(ValueError):
        LatentModelConfig(latent_dim=12, simnorm_dim=8).validate()
    with pytest.raises(ValueError):
        LatentModelConfig(num_q=1).validate()
    with pytest.raises(ValueError):
        LatentModelConfig(activation="relu").validate()
    with pytest.raises(ValueError):
        LatentPlannerConfig(num_samples=8, num_elites=16).validate()
    with pytest.raises(ValueError):
        LatentPlannerConfig(num_samples=8, num_policy_trajectories=8).validate()
    assert heuristic_discount(250) == pytest.approx(0.98)
    assert heuristic_discount(10) == 0.95 and heuristic_discount(10 ** 6) == 0.995


def test_latents_are_simplicial_and_shapes_batched():
    model = LatentWorldModel(3, 2, TINY)
    z = model.encode(torch.randn(4, 5, 3))
    assert z.shape == (4, 5, TINY.latent_dim)
    groups = z.reshape(4, 5, -1, TINY.simnorm_dim).sum(-1)
    assert torch.allclose(groups, torch.ones_like(groups), atol=1e-5)
    action = torch.rand(4, 5, 2) * 2 - 1
    assert model.next(z, action).shape == z.shape
    assert model.reward(z, action).shape == (4, 5)
    assert model.q(z, action, "all").shape == (TINY.num_q, 4, 5)
    assert model.q(z, action, "min").shape == (4, 5)
    sample = model.pi(z)
    assert sample.action.shape == (4, 5, 2) and sample.action.abs().max() <= 1.0
    assert sample.log_prob.shape == (4, 5)


def test_sampler_windows_stay_inside_episodes():
    data = integrator_data(episodes=3)
    sampler = SequenceSampler(data, 4, LOW, HIGH)
    assert len(sampler) == 3 * (EPISODE - 3)
    batch = sampler.sample(200, np.random.default_rng(0))
    assert batch.states.shape == (5, 200, 1) and batch.actions.shape == (4, 200, 1)
    # every window is a chain of the true dynamics
    assert torch.allclose(batch.states[1:], batch.states[:-1] + STEP * batch.actions, atol=1e-5)
    assert torch.allclose(batch.rewards, -batch.states[1:, :, 0].abs(), atol=1e-6)


# --------------------------------------------------------------------------------- training
def test_training_reduces_reward_value_and_relative_consistency_errors(trained):
    model, _, _, reports = trained
    head = slice(0, 10)
    tail = slice(UPDATES - 10, UPDATES)

    def mean(field, part):
        return float(np.mean([getattr(r, field) for r in reports[part]]))

    assert mean("reward", tail) < 0.3 * mean("reward", head)
    assert mean("value", tail) < 0.5 * mean("value", head)
    assert mean("consistency", tail) < 0.1 * mean("consistency", head)
    # absolute consistency starts near 0 (all latents near uniform): judge it relative to how
    # different the encodings of different states are
    assert consistency_ratio(model, integrator_data(seed=5)) < 0.1
    # the reward head predicts the reward of held-out transitions
    data = integrator_data(seed=5)
    with torch.no_grad():
        z = model.encode(torch.as_tensor(data.state))
        predicted = model.reward(z, torch.as_tensor(data.action)).numpy()
    assert np.mean(np.abs(predicted - data.reward)) < 0.1


def test_consistency_loss_ties_predicted_latents_to_encodings(trained):
    """Without the consistency term the latent predictions drift away from the encodings."""
    without = train(dataclasses.replace(TINY, consistency_coef=0.0))[0]
    data = integrator_data(seed=5)
    ratio_with, ratio_without = consistency_ratio(trained[0], data), consistency_ratio(
        without, data)
    assert ratio_with < 0.25 * ratio_without


def test_target_qs_follow_by_ema_and_give_the_td_targets():
    model = LatentWorldModel(1, 1, TINY)
    trainer = LatentTrainer(model, DISCOUNT)
    sampler = SequenceSampler(integrator_data(), TINY.horizon, LOW, HIGH)
    rng = np.random.default_rng(0)
    trainer.update(sampler.sample(TINY.batch_size, rng))  # online heads move away from init
    before = [p.detach().clone() for p in model.target_qs.parameters()]
    trainer.update(sampler.sample(TINY.batch_size, rng))
    for old, target, online in zip(before, model.target_qs.parameters(),
                                   model.qs.parameters()):
        assert not torch.equal(target, online)
        assert torch.allclose(target, old + TINY.tau * (online - old), atol=1e-6)
    # TD targets come from the target heads: zero their output layer -> Q = 0 -> target = r
    batch = sampler.sample(8, rng)
    with torch.no_grad():
        next_z = model.encode(batch.states[1:])
        model.target_qs.weights[-1].zero_()
        model.target_qs.biases[-1].zero_()
        assert torch.allclose(trainer.td_targets(next_z, batch.rewards), batch.rewards,
                              atol=1e-5)
        model.target_qs.biases[-1][:, :, -1] = 5.0  # mass on the top bin
        assert (trainer.td_targets(next_z, batch.rewards) > batch.rewards + 1.0).all()


def test_policy_update_moves_only_the_policy():
    model = LatentWorldModel(1, 1, TINY)
    trainer = LatentTrainer(model, DISCOUNT)
    zs = model.encode(torch.randn(TINY.horizon + 1, 16, 1)).detach()
    others = {n: p.detach().clone() for n, p in model.named_parameters()
              if not n.startswith("policy.")}
    policy = [p.detach().clone() for p in model.policy.parameters()]
    trainer.update_policy(zs)
    for name, param in model.named_parameters():
        if name in others:
            assert torch.equal(param, others[name]), name
            assert param.grad is None, name
    assert any(not torch.equal(a, b) for a, b in zip(policy, model.policy.parameters()))


# --------------------------------------------------------------------------------- planning
def test_latent_mppi_moves_toward_the_rewarded_state(trained):
    model = trained[0]
    planner = LatentPlanner(model, PLANNER, DISCOUNT, LOW, HIGH)
    for start, sign in ((1.0, -1.0), (-1.0, 1.0), (0.6, -1.0), (-0.6, 1.0)):
        planner.reset()
        action = planner.plan(np.array([start], np.float32))
        assert action.shape == (1,)
        assert sign * action[0] > 0.3, (start, action)


def test_planner_warm_starts_from_the_shifted_mean(trained):
    planner = LatentPlanner(trained[0], PLANNER, DISCOUNT, LOW, HIGH)
    planner.plan(np.array([1.0], np.float32))
    assert planner.warm and planner.mean[0, 0] < 0.0
    planner.reset()
    assert not planner.warm


def test_planner_is_deterministic_for_a_seed(trained):
    actions = []
    for _ in range(2):
        planner = LatentPlanner(trained[0], PLANNER, DISCOUNT, LOW, HIGH)
        actions.append([planner.plan(np.array([x], np.float32)) for x in (0.5, 0.3)])
    np.testing.assert_array_equal(np.array(actions[0]), np.array(actions[1]))


# ------------------------------------------------------------------------------- checkpoint
def test_save_load_round_trip(trained, tmp_path):
    model = trained[0]
    path = str(tmp_path / "latent.mbrl")
    sha = model.save(path, metadata={"task": "integrator"})
    loaded = LatentWorldModel.load(path, expected_sha256=sha)
    assert loaded.config == model.config
    state = torch.linspace(-1, 1, 7)[:, None]
    action = torch.linspace(-1, 1, 7)[:, None]
    with torch.no_grad():
        z, z2 = model.encode(state), loaded.encode(state)
        assert torch.equal(z, z2)
        assert torch.equal(model.next(z, action), loaded.next(z2, action))
        assert torch.equal(model.reward(z, action), loaded.reward(z2, action))
        assert torch.equal(model.q(z, action, "all", target=True),
                           loaded.q(z2, action, "all", target=True))
    with open(path, "r+b") as f:
        f.seek(-3, 2)
        f.write(b"xyz")
    with pytest.raises(CheckpointError):
        LatentWorldModel.load(path)
