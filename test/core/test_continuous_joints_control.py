"""Continuous joints between the robot and the models: planned wrapped, sent the short way.

The robot reports a continuous joint's angle as it accumulates (beyond +-pi); the models keep
it in [-pi, pi). These tests pin what keeps a joint from unwinding a turn: position targets go
out as the equal angle nearest the joint (and along a streamed plan, each nearest the one
before), crossing +-pi is no jump (no reset) and no disturbance of a turn, and the servo model,
the ensemble's relative actions and the offset estimate all take the short way round.
"""

import math

import numpy as np
import torch

from mbrl_ros.core.continuous_joints import continuous_mask, nearest_turns, wrap_positions
from mbrl_ros.core.controller import ModelPredictiveController
from mbrl_ros.core.costs import EndEffectorCost, TaskCost
from mbrl_ros.core.disturbance import DisturbanceConfig, OffsetDynamics
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.exploration import ExplorationConfig, SmoothExplorer
from mbrl_ros.core.planning import PlannerConfig

from joint_integrator import DT, JointIntegrator

TURN = 2.0 * math.pi


def test_targets_go_out_nearest_the_joint_and_each_other():
    mask = np.array([True, False])
    start = np.array([TURN + 3.0, 0.5])  # a turn and 3 rad; a plain joint
    targets = np.array([[-3.1, 0.6], [3.1, 0.7], [-3.0, 0.8]])  # planned wrapped, across pi
    sent = nearest_turns(targets, start, mask)
    np.testing.assert_allclose(sent[:, 1], targets[:, 1])  # the plain joint as planned
    steps = np.abs(np.diff(np.concatenate([start[None, :1], sent[:, :1]]), axis=0))
    assert steps.max() < 0.3  # small steps, never a turn back
    np.testing.assert_allclose(np.remainder(sent[:, 0] - targets[:, 0], TURN) % TURN, 0.0,
                               atol=1e-9)
    np.testing.assert_allclose(wrap_positions(start, mask), [3.0 - 0.0, 0.5], atol=1e-12)
    assert continuous_mask([False, False], 2) is None


class _WrappedIntegrator(JointIntegrator):
    """The one-joint stand-in with its angle wrapped, as a model with angle dims predicts."""

    def predict(self, state, action):
        mean, var = super().predict(state, action)
        mean = mean.clone()
        mean[..., 0] = torch.remainder(mean[..., 0] + math.pi, TURN) - math.pi
        return mean, var


def make_controller(continuous: bool, gain: float = 0.0) -> ModelPredictiveController:
    # cost: the angle's cos and sin toward (cos, sin) of pi (periodic, as an ee cost is)
    def fk(q):
        return torch.cat([torch.cos(q), torch.sin(q), torch.zeros_like(q)], -1)
    cost = TaskCost([EndEffectorCost(fk, [0], [-1.0, 0.0, 0.0], 10.0, 2)])
    explorer = SmoothExplorer(ExplorationConfig(), "position", np.array([-math.pi]),
                              np.array([math.pi]), np.array([2.0]), DT)
    controller = ModelPredictiveController(
        PlannerConfig(horizon=4, num_samples=64, num_iterations=2, init_std=0.2,
                      num_policy_trajectories=0, action_low=(-math.pi,),
                      action_high=(math.pi,)),
        cost, explorer, torch.device("cpu"),
        warm_start=lambda position, goal, horizon: np.repeat(position[None], horizon, 0),
        disturbance=DisturbanceConfig(gain=gain, max_offset=(0.5,), jump_threshold=1.0),
        model_period_s=DT, jump_threshold=0.5,
        continuous_joints=[True] if continuous else None, position_commands=True)
    controller.set_model(_WrappedIntegrator(), 1)
    controller.set_goal(np.array([-1.0, 0.0, 0.0]))
    return controller


def test_controller_plans_wrapped_and_sends_the_short_way():
    torch.manual_seed(0)
    controller = make_controller(continuous=True)
    measured = np.array([2 * TURN + 3.0])  # two turns and 3 rad: near pi
    step = controller.step(measured, np.array([0.0]))
    assert not step.failed and step.turn_origin is not None
    assert -math.pi <= float(step.plan.states[0, 0]) < math.pi  # planned in the models' frame
    sent = step.to_robot(np.asarray(step.command)[None])[0]
    assert abs(sent[0] - measured[0]) < 0.5, sent  # not two turns back
    streamed = step.to_robot(step.plan.actions.numpy())
    assert np.abs(np.diff(np.concatenate([measured, streamed[:, 0]]))).max() < 0.5


def test_without_the_rule_the_target_is_turns_away():
    """What the rule prevents: the same tick without it plans from 2 turns + 3 rad and its
    targets (within the action range) are turns away from the joint."""
    torch.manual_seed(0)
    controller = make_controller(continuous=False)
    measured = np.array([2 * TURN + 3.0])
    step = controller.step(measured, np.array([0.0]))
    sent = step.to_robot(np.asarray(step.command)[None])[0]
    assert abs(sent[0] - measured[0]) > TURN


def test_crossing_pi_is_no_jump(caplog):
    controller = make_controller(continuous=True)
    with caplog.at_level("INFO", logger="mbrl_ros.core.controller"):
        controller.step(np.array([math.pi - 0.05]), np.array([0.0]))
        controller.step(np.array([math.pi + 0.05]), np.array([0.0]))  # wrapped: -pi + 0.05
    assert "jumped" not in caplog.text
    with caplog.at_level("INFO", logger="mbrl_ros.core.controller"):
        controller.step(np.array([math.pi + 1.5]), np.array([0.0]))  # a real jump still is
    assert "jumped" in caplog.text


def test_offset_error_across_pi_is_wrapped():
    model = OffsetDynamics(_WrappedIntegrator(), DisturbanceConfig(
        gain=0.5, max_offset=(0.5,), jump_threshold=1.0), angle_dims=[0])
    model.expect(torch.tensor([math.pi - 0.02, 0.0]), 0.0)
    assert model.update(torch.tensor([-math.pi + 0.02, 0.0]), DT, DT)  # 0.04 rad, not 2 pi
    assert abs(float(model.offset[0]) - 0.02) < 1e-5
    plain = OffsetDynamics(_WrappedIntegrator(), DisturbanceConfig(
        gain=0.5, max_offset=(0.5,), jump_threshold=1.0))
    plain.expect(torch.tensor([math.pi - 0.02, 0.0]), 0.0)
    assert not plain.update(torch.tensor([-math.pi + 0.02, 0.0]), DT, DT)  # a "jump": reset


def test_ensemble_relative_actions_from_an_angle_are_wrapped():
    config = EnsembleConfig(hidden_sizes=(8,), num_members=2, num_elites=2,
                            angle_wrap=(0,), relative_action=(0,))
    model = ProbabilisticEnsemble(2, 1, config)
    state = torch.tensor([[3.0, 0.0]])
    inputs = model.encode_inputs(state, torch.tensor([[-3.0]]))
    assert abs(float(inputs[0, -1]) - (TURN - 6.0)) < 1e-5  # +0.28 rad, not -6 rad
    plain = ProbabilisticEnsemble(2, 1, EnsembleConfig(hidden_sizes=(8,), num_members=2,
                                                       num_elites=2, relative_action=(0,)))
    assert abs(float(plain.encode_inputs(state, torch.tensor([[-3.0]]))[0, -1]) + 6.0) < 1e-5
