"""ValuePolicy with ``policy_kind="sac"``: the stochastic policy, SAC's automatic temperature,
MBPO's model rollouts (horizon schedule, model buffer) and checkpoints."""

import dataclasses

import numpy as np
import pytest
import torch

from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.core.value_policy import ValuePolicy, ValuePolicyConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 1-step bandit: reward 1 - (a - 0.3)^2 whatever the state, every transition terminal, so
# Q(s, a) = r(a) and the best action is 0.3 (SAC's entropy bonus barely moves the mean).
OPTIMUM = 0.3
SAC = ValuePolicyConfig(hidden_sizes=(32, 32), discount=0.0, batch_size=64,
                        q_learning_rate=3e-3, policy_learning_rate=3e-3,
                        behaviour_cloning_weight=0.0, rollout_horizon=0, policy_kind="sac",
                        init_temperature=1.0, temperature_learning_rate=2e-2)
STATES = torch.linspace(-0.9, 0.9, 7)[:, None]


def reward_fn(state, action, next_state):
    return 1 - (action[:, 0] - OPTIMUM) ** 2


def bandit_batch(num: int, seed: int, logged_action=None, terminal: bool = True
                 ) -> TransitionBatch:
    """Uniform random states and actions (or all actions ``logged_action``)."""
    rng = np.random.default_rng(seed)
    state = rng.uniform(-1, 1, (num, 1))
    action = rng.uniform(-1, 1, (num, 1)) if logged_action is None \
        else np.full((num, 1), logged_action)
    reward = reward_fn(None, torch.as_tensor(action), None).numpy()
    return TransitionBatch(state, action, state, reward=reward,
                           terminal=np.full(num, terminal))


class StaticModel:
    """A perfect 2-member DynamicsModel of the bandit's states (next_state = state)."""

    num_members = 2

    def predict(self, state, action):
        mean = state.unsqueeze(0).expand(2, -1, -1)
        return mean, torch.full_like(mean, 1e-6)


@pytest.mark.parametrize("target_entropy", [-0.5, -1.5])
def test_sac_bandit_finds_the_optimum_and_the_target_entropy(target_entropy):
    config = dataclasses.replace(SAC, target_entropy_per_dim=target_entropy)
    agent = ValuePolicy(1, 1, [-1.0], [1.0], config, seed=0)
    report = agent.fit(bandit_batch(1000, seed=0), num_steps=400, seed=0)
    mean_action = agent.policy(STATES)[:, 0]
    np.testing.assert_allclose(mean_action.numpy(), OPTIMUM, atol=0.07)
    # the entropy starts far above either target (temperature 1) and is driven to it
    assert report.entropy[0] > target_entropy + 1.0
    assert abs(np.mean(report.entropy[-50:]) - target_entropy) < 0.35
    assert report.temperature[-1] < 0.5 * config.init_temperature
    # samples spread around the mean as the entropy says, within the bounds
    samples = agent.sample_policy(STATES.repeat(200, 1), generator=torch.Generator()
                                  .manual_seed(1))
    assert bool((samples.abs() <= 1).all()) and float(samples.std()) > 0.02
    assert abs(float(samples.mean()) - OPTIMUM) < 0.1


def test_temperature_adapts_toward_the_target_entropy():
    """A lower target entropy ends at a lower temperature; without auto-temperature it stays
    put and the entropy stays far from the target."""
    finals, entropies = {}, {}
    for target, auto in ((-0.5, True), (-1.5, True), (-1.5, False)):
        config = dataclasses.replace(SAC, target_entropy_per_dim=target, auto_temperature=auto)
        agent = ValuePolicy(1, 1, [-1.0], [1.0], config, seed=1)
        report = agent.fit(bandit_batch(300, seed=1), num_steps=200, seed=1)
        finals[target, auto] = report.temperature[-1]
        entropies[target, auto] = np.mean(report.entropy[-30:])
    assert finals[-1.5, True] < finals[-0.5, True] < SAC.init_temperature
    assert finals[-1.5, False] == pytest.approx(SAC.init_temperature)
    assert entropies[-1.5, True] < entropies[-0.5, True] < entropies[-1.5, False]
    assert entropies[-1.5, False] > 0.0  # far above -1.5: the temperature did not follow


def test_model_rollouts_teach_actions_the_logs_never_took():
    """All logged actions are -0.8: only model rollouts (their actions sampled from the SAC
    policy, rewarded by reward_fn) show the Q ensemble that 0.3 is better."""
    config = dataclasses.replace(SAC, discount=0.5, real_ratio=0.25, rollout_horizon=1,
                                 rollout_horizon_max=3, rollout_schedule_start=0,
                                 rollout_schedule_end=1000, model_buffer_size=4000,
                                 model_rollouts_per_update=8.0)
    data = bandit_batch(500, seed=2, logged_action=-0.8, terminal=False)
    mean_action = {}
    for horizon in (0, 1):
        agent = ValuePolicy(1, 1, [-1.0], [1.0],
                            dataclasses.replace(config, rollout_horizon=horizon,
                                                rollout_horizon_max=3 * horizon), seed=2)
        report = agent.fit(data, num_steps=300, model=StaticModel(), reward_fn=reward_fn,
                           seed=2)
        mean_action[horizon] = float(agent.policy(STATES)[:, 0].mean())
        if horizon:
            # the schedule at 500 of 1000 rows: halfway from 1 to 3; 8 starts per update
            assert report.rollout_horizon == 2
            assert report.model_transitions == 300 * (64 - 16)
            assert len(agent._model_buffer[0]) == min(4000, 8 * 300 * 2)
        else:
            assert report.rollout_horizon == 0 and report.model_transitions == 0
    assert abs(mean_action[1] - OPTIMUM) < 0.1
    assert abs(mean_action[0] - OPTIMUM) > 0.3


def test_rollout_horizon_schedule_and_validation():
    config = ValuePolicyConfig(rollout_horizon=1, rollout_horizon_max=5,
                               rollout_schedule_start=1000, rollout_schedule_end=5000)
    assert [config.rollout_horizon_at(n) for n in (0, 1000, 2000, 4999, 5000, 10 ** 6)] == \
        [1, 1, 2, 4, 5, 5]
    assert ValuePolicyConfig(rollout_horizon=2).rollout_horizon_at(10 ** 6) == 2
    for bad in ({"policy_kind": "ppo"}, {"init_temperature": 0.0},
                {"rollout_horizon": 3, "rollout_horizon_max": 2},
                {"rollout_schedule_start": 5, "rollout_schedule_end": 1},
                {"model_buffer_size": -1}):
        with pytest.raises(ValueError):
            ValuePolicyConfig(**bad).validate()


def test_sac_checkpoint_round_trip(tmp_path):
    config = dataclasses.replace(SAC, rollout_horizon=1, model_buffer_size=100)
    agent = ValuePolicy(1, 1, [-1.0], [1.0], config, seed=3)
    agent.fit(bandit_batch(200, seed=3), num_steps=20, model=StaticModel(),
              reward_fn=reward_fn, seed=3)
    assert float(agent.temperature) != pytest.approx(config.init_temperature)
    path = str(tmp_path / "sac.ckpt")
    sha = agent.save(path)
    loaded = ValuePolicy.load(path, expected_sha256=sha)
    assert loaded.config == config and loaded.stochastic
    assert torch.equal(loaded.temperature, agent.temperature)
    assert torch.equal(loaded.policy(STATES), agent.policy(STATES))
    assert torch.equal(loaded.value(STATES), agent.value(STATES))
    draw = [model.sample_policy(STATES, generator=torch.Generator().manual_seed(0))
            for model in (agent, loaded)]
    assert torch.equal(draw[0], draw[1])
    assert not torch.equal(draw[0], agent.policy(STATES))  # sampled, not the mean
