"""The trainer's value/policy rounds (ROS-free): a round on synthetic arm data and a tiny
dynamics ensemble writes a checkpoint the planner accepts (its compatibility metadata as the
planner computes its own), versions count up and continue warm, a restart continues from the
newest compatible version, and a cancelled round writes nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.model_training import TrainingCancelled
from mbrl_ros.core.task_reward import task_cost_hash
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.core.value_policy import ValuePolicy
from mbrl_ros.core.value_prior import compatibility_error
from mbrl_ros.tasks.reach import ReachCostConfig, load_robot, nominal_dynamics, planning_range
from mbrl_ros.tasks.stand import HeadingFrameModel, StandCostConfig, StandLayout
from mbrl_ros.training.value_training import (VALUE_POLICY_FOLDER, ValueTrainer,
                                              ValueTrainingConfig, value_data, value_task,
                                              value_trainer_for)

REPO = Path(__file__).resolve().parents[2]
ARM_URDF = str(REPO / "urdf" / "arm7.urdf")
QUADRUPED_URDF = str(REPO / "urdf" / "quadruped12.urdf")
PERIOD_S = 0.04
STEPS = 40
CONFIG = ValueTrainingConfig(steps_per_round=STEPS, min_transitions=100, hidden_sizes=(16, 16),
                             batch_size=32, goal_future_s=0.4)
COST = ReachCostConfig(end_effector_weight=500.0, velocity_weight=0.05, effort_weight=0.0)
TINY = EnsembleConfig(num_members=2, num_elites=2, hidden_sizes=(16,))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def arm():
    robot = load_robot(ARM_URDF, "ee_link")
    fk = nominal_dynamics(robot, PERIOD_S, 2, torch.device("cpu")).ee_position_batch
    return robot, fk


def arm_task(arm, cost: ReachCostConfig = COST):
    robot, fk = arm
    return value_task("reach", robot, cost, "position", fk)


def arm_data(robot, episodes: int = 3, rows: int = 60, seed: int = 0) -> TransitionBatch:
    """Consecutive transitions of smooth random joint motions (position targets as actions),
    ``episodes`` runs of ``rows`` each."""
    rng = np.random.default_rng(seed)
    low, high = planning_range(robot)
    parts = []
    for _ in range(episodes):
        q = np.empty((rows + 1, robot.num_joints))
        q[0] = rng.uniform(0.3 * low + 0.7 * (low + high) / 2, 0.3 * high + 0.7 * (low + high) / 2)
        for t in range(rows):
            q[t + 1] = np.clip(q[t] + rng.normal(0.0, 0.02, robot.num_joints), low, high)
        qd = np.gradient(q, PERIOD_S, axis=0)
        state = np.concatenate([q, qd], axis=1)
        action = np.clip(q[1:] + rng.normal(0.0, 0.05, q[1:].shape), low, high)
        parts.append(TransitionBatch(state[:-1], action, state[1:]))
    return value_data(*parts)


def trainer(folder: Path, task, config: ValueTrainingConfig = CONFIG,
            robot=None) -> ValueTrainer:
    joints = (robot.joint_names if robot is not None
              else [f"j{i}" for i in range(task.action_dim)])
    return ValueTrainer(config, folder, task, joints, PERIOD_S)


def planner_expectation(robot, cost: ReachCostConfig = COST) -> dict:
    """What the planner node compares a value/policy's metadata with (reach task)."""
    return dict(task="reach", task_cost_hash=task_cost_hash("reach", dataclasses.asdict(cost)),
                state_dim=2 * robot.num_joints, action_dim=robot.num_joints, goal_dim=3,
                joints=list(robot.joint_names), model_period_s=PERIOD_S)


def weights(agent: ValuePolicy) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).clone() for p in agent.parameters()])


def files(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_round_writes_a_checkpoint_the_planner_accepts(arm, tmp_path):
    robot, _ = arm
    data = arm_data(robot)
    dynamics = ProbabilisticEnsemble(14, 7, TINY, seed=0)
    values = value_trainer_for(CONFIG, tmp_path, arm_task(arm),
                               dict(joints=list(robot.joint_names), model_period_s=PERIOD_S))
    deployment = values.run_round(data, dynamics, dynamics_version=4)
    assert deployment.version == 1 and deployment.steps == STEPS
    assert deployment.dynamics_version == 4 and deployment.num_transitions == len(data)
    assert np.isfinite(deployment.q_loss) and deployment.train_seconds > 0
    assert Path(deployment.path).parent == tmp_path / VALUE_POLICY_FOLDER
    agent = ValuePolicy.load(deployment.path, expected_sha256=deployment.sha256)
    assert compatibility_error(agent.metadata, planner_expectation(robot)) is None
    assert agent.metadata["dynamics_version"] == 4 and agent.metadata["version"] == 1
    # another cost, another robot's joints, another period: refused by the planner
    other = planner_expectation(robot, dataclasses.replace(COST, velocity_weight=0.1))
    assert "task_cost_hash" in compatibility_error(agent.metadata, other)
    assert "model_period_s" in compatibility_error(
        agent.metadata, dict(planner_expectation(robot), model_period_s=0.02))
    # the planner's use: a goal-conditioned value and a policy within the action box
    goal = torch.tensor([0.3, 0.2, 0.6])
    states = torch.as_tensor(data.state[:5])
    assert agent.value(states, goal).shape == (5,)
    low, high = planning_range(robot)
    action = agent.policy(states, goal).numpy()
    assert np.all(action >= low - 1e-5) and np.all(action <= high + 1e-5)


def test_versions_count_up_warm_and_a_restart_continues_from_the_newest(arm, tmp_path):
    robot, _ = arm
    data = arm_data(robot)
    dynamics = ProbabilisticEnsemble(14, 7, TINY, seed=0)
    values = trainer(tmp_path, arm_task(arm), robot=robot)
    first = values.run_round(data, dynamics, 1)
    agent = values.agent
    before = weights(agent)
    second = values.run_round(data, dynamics, 2)
    assert (first.version, second.version) == (1, 2)
    assert values.agent is agent and not torch.equal(weights(agent), before)  # trained on
    assert ValuePolicy.load(second.path).metadata["total_steps"] == 2 * STEPS

    restarted = trainer(tmp_path, arm_task(arm), robot=robot)
    warm = restarted.warm_start()
    assert (warm.version, warm.sha256, warm.dynamics_version) == (2, second.sha256, 2)
    assert torch.equal(weights(restarted.agent), weights(agent))
    assert restarted.run_round(data, dynamics, 3).version == 3

    # another cost: the versions of this one are not continued, and not overwritten
    other = trainer(tmp_path, arm_task(arm, dataclasses.replace(COST, end_effector_weight=9.0)),
                    robot=robot)
    assert other.warm_start() is None
    fresh = other.run_round(data, dynamics, 3)
    assert fresh.version == 4
    assert ValuePolicy.load(fresh.path).metadata["total_steps"] == STEPS
    assert files(tmp_path) == [f"model_{v:06d}.mbrl" for v in (1, 2, 3, 4)]


def test_a_cancelled_round_writes_nothing_and_the_next_starts_from_the_deployed(arm, tmp_path,
                                                                                monkeypatch):
    robot, _ = arm
    data = arm_data(robot)
    dynamics = ProbabilisticEnsemble(14, 7, TINY, seed=0)
    values = trainer(tmp_path, arm_task(arm), robot=robot)
    deployed = values.run_round(data, dynamics, 1)
    saved = weights(ValuePolicy.load(deployed.path))
    polls = []

    def stop_after_five() -> bool:
        polls.append(1)
        return len(polls) > 5

    with pytest.raises(TrainingCancelled):
        values.run_round(data, dynamics, 2, should_stop=stop_after_five)
    assert files(tmp_path) == ["model_000001.mbrl"] and values.deployed_version == 1
    assert values.agent is None and not values.training
    starts = []
    original = ValuePolicy.fit

    def recording_fit(agent, *args, **kwargs):
        starts.append(weights(agent))
        return original(agent, *args, **kwargs)

    monkeypatch.setattr(ValuePolicy, "fit", recording_fit)
    assert values.run_round(data, dynamics, 2).version == 2
    assert torch.equal(starts[0], saved)


def test_nothing_is_trained_when_disabled_or_short_of_data(arm, tmp_path):
    robot, _ = arm
    data = arm_data(robot)
    dynamics = ProbabilisticEnsemble(14, 7, TINY, seed=0)
    off = trainer(tmp_path / "off", arm_task(arm), dataclasses.replace(CONFIG, enabled=False))
    assert off.run_round(data, dynamics, 1) is None
    short = trainer(tmp_path / "short", arm_task(arm),
                    dataclasses.replace(CONFIG, min_transitions=len(data) + 1))
    assert short.run_round(data, dynamics, 1) is None and short.run_round(None, dynamics, 1) \
        is None
    wrong = trainer(tmp_path / "wrong", arm_task(arm))
    with pytest.raises(ValueError, match="states of 14"):
        wrong.run_round(TransitionBatch(np.zeros((200, 4)), np.zeros((200, 7)),
                                        np.zeros((200, 4))), dynamics, 1)
    assert files(tmp_path / "off") == files(tmp_path / "short") == files(tmp_path / "wrong") \
        == []


def test_the_stand_task_learns_on_raw_states_through_the_heading_frame_model(tmp_path):
    robot = load_robot(QUADRUPED_URDF, "")
    layout = StandLayout(robot.num_joints)
    posture = (0.0, 0.8, -1.6) * 4
    cost = StandCostConfig(posture=posture)
    task = value_task("stand", robot, cost)
    assert (task.state_dim, task.action_dim, task.goal_dim) == (layout.state_dim, 12, 0)
    rng = np.random.default_rng(0)
    state = rng.normal(size=(150, layout.state_dim))
    state[:, layout.quaternion] /= np.linalg.norm(state[:, layout.quaternion], axis=1,
                                                  keepdims=True)
    action = rng.uniform(robot.position_lower, robot.position_upper, (150, 12))
    data = value_data(TransitionBatch(state[:-1], action[:-1], state[1:]))
    calls = []
    model = HeadingFrameModel(ProbabilisticEnsemble(layout.state_dim, 12, TINY, seed=0), 12)
    original = model.model.predict

    def recording_predict(state, action, **kwargs):
        calls.append(state.shape)
        return original(state, action, **kwargs)

    model.model.predict = recording_predict
    deployment = trainer(tmp_path, task, robot=robot).run_round(data, model, 1)
    assert calls, "no rollouts through the model"
    metadata = ValuePolicy.load(deployment.path, deployment.sha256).metadata
    assert {k: metadata[k] for k in ("task", "task_cost_hash", "state_dim", "goal_dim")} == {
        "task": "stand", "task_cost_hash": task_cost_hash("stand", dataclasses.asdict(cost)),
        "state_dim": layout.state_dim, "goal_dim": 0}


def test_value_data_numbers_the_runs_of_consecutive_transitions(arm):
    robot, _ = arm
    one, two = arm_data(robot, episodes=2, rows=5), arm_data(robot, episodes=1, rows=4, seed=1)
    joined = value_data(one, None, two)
    assert joined.episode.tolist() == [0] * 5 + [1] * 5 + [2] * 4
    assert value_data(None) is None


def test_value_task_checks_the_cost_and_the_goal_source(arm):
    robot, fk = arm
    with pytest.raises(ValueError, match="ReachCostConfig"):
        value_task("reach", robot, StandCostConfig(), "position", fk)
    with pytest.raises(ValueError, match="forward kinematics"):
        value_task("reach", robot, COST, "position", None)
    with pytest.raises(ValueError, match="task must be"):
        value_task("walk", robot, COST, "position", fk)


def test_discount_and_hindsight_reach_follow_the_model_period():
    config = ValueTrainingConfig(horizon_s=0.5, goal_future_s=2.0)
    fast, slow = config.policy_config(0.01), config.policy_config(0.04)
    assert fast.discount == pytest.approx(np.exp(-0.02)) and fast.goal_future_steps == 200
    assert slow.discount == pytest.approx(np.exp(-0.08)) and slow.goal_future_steps == 50
    with pytest.raises(ValueError, match="horizon_s"):
        ValueTrainingConfig(horizon_s=0.0).validate()
