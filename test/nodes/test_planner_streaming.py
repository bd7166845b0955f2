"""What the planner node sends for each kind of control step (command_points): a streamed plan
of H timed points with the disagreement the controller judged, one point for exploration and
policy commands and with stream_plan off, none for a hold request; and the plan as a
trajectory_msgs/JointTrajectory."""

import math

import numpy as np
import pytest
import torch

from mbrl_ros.core.controller import ControlStep
from mbrl_ros.core.planning.planner import PlanResult
from mbrl_ros.core.recovery import MODE_RECOVERY
from mbrl_ros.core.safety_gate_config import CommandStatus
from mbrl_ros.core.value_prior import STAGE_POLICY_ONLY
from mbrl_ros.nodes.conversions import duration_to_seconds, joint_trajectory_message
from mbrl_ros.nodes.planner_node import command_points

H, A, PERIOD = 4, 3, 0.04
ORDER = np.array([2, 0, 1])
"""Command order: the controller's joints are the model's third, first and second."""


def plan_step(disagreement=(0.1, 0.4, 0.2, 0.3), actions=None, **kwargs):
    """A ControlStep as the controller makes it from a plan: the command is the first action,
    its disagreement the largest along the plan."""
    if actions is None:
        actions = np.arange(H * A, dtype=np.float64).reshape(H, A) / 10.0
    actions = torch.as_tensor(actions, dtype=torch.float32)
    spread = torch.tensor(disagreement, dtype=torch.float32)
    plan = PlanResult(action=actions[0], actions=actions, states=torch.zeros(H + 1, 2 * A),
                      disagreement=spread, cost=1.0, iterations=1, planning_time=0.0,
                      feasible=True)
    judged = float(spread.max()) if torch.isfinite(spread).all() else math.inf
    return ControlStep(actions[0].numpy().astype(np.float64), exploring=False, plan=plan,
                       disagreement=kwargs.pop("judged", judged), **kwargs)


def test_a_plan_streams_every_action_at_its_model_step():
    step = plan_step()
    points = command_points(step, ORDER, PERIOD, stream=True)
    assert points.status == CommandStatus.PLANNED and points.reason == ""
    actions = step.plan.actions.numpy().astype(np.float64)
    np.testing.assert_array_equal(points.commands, actions[:, ORDER])
    np.testing.assert_array_equal(points.commands[0], step.command[ORDER])
    np.testing.assert_allclose(points.times, [0.0, 0.04, 0.08, 0.12])
    # never less than the controller judged the plan by (its largest value, 0.4)
    np.testing.assert_allclose(points.disagreement, [0.4] * H, rtol=1e-6)


def test_every_point_carries_the_judged_value():
    # a terminal value's disagreement on the last step is the largest: every point has it
    step = plan_step(disagreement=(0.1, 0.2, 0.3, 2.5))
    np.testing.assert_allclose(command_points(step, ORDER, PERIOD, True).disagreement,
                               [2.5] * H, rtol=1e-6)
    # a judged value above every step's (e.g. another rule's): every point carries it
    step = plan_step(disagreement=(0.1, 0.2, 0.3, 0.2), judged=0.9)
    np.testing.assert_allclose(command_points(step, ORDER, PERIOD, True).disagreement,
                               [0.9] * H, rtol=1e-6)
    # an unknown step value is untrusted: infinite on every point
    step = plan_step(disagreement=(0.1, math.nan, 0.3, 0.2))
    assert np.all(np.isinf(command_points(step, ORDER, PERIOD, True).disagreement))


def test_a_plan_is_cut_before_a_non_finite_action():
    actions = np.ones((H, A))
    actions[2, 1] = math.nan
    points = command_points(plan_step(actions=actions), ORDER, PERIOD, True)
    assert points.commands.shape == (2, A) and np.isfinite(points.commands).all()
    np.testing.assert_allclose(points.times, [0.0, 0.04])


def test_one_point_without_streaming_and_for_commands_without_a_plan():
    step = plan_step()
    points = command_points(step, ORDER, PERIOD, stream=False)
    np.testing.assert_array_equal(points.commands, step.command[ORDER][None])
    np.testing.assert_array_equal(points.times, [0.0])
    np.testing.assert_allclose(points.disagreement, [0.4], rtol=1e-6)
    exploring = ControlStep(np.array([0.1, 0.2, 0.3]), exploring=True)
    points = command_points(exploring, ORDER, PERIOD, stream=True)
    assert points.status == CommandStatus.EXPLORING
    np.testing.assert_array_equal(points.commands, [[0.3, 0.1, 0.2]])
    np.testing.assert_array_equal(points.disagreement, [0.0])
    policy = ControlStep(np.array([0.1, 0.2, 0.3]), exploring=False, disagreement=0.7,
                         stage=STAGE_POLICY_ONLY)
    points = command_points(policy, ORDER, PERIOD, stream=True)
    assert points.status == CommandStatus.POLICY and points.commands.shape == (1, A)
    np.testing.assert_allclose(points.disagreement, [0.7])


def test_recovery_plans_stream_and_a_failed_step_is_a_hold_request():
    points = command_points(plan_step(mode=MODE_RECOVERY), ORDER, PERIOD, True)
    assert points.status == CommandStatus.RECOVERING and len(points.times) == H
    points = command_points(plan_step(recovering=True), ORDER, PERIOD, True)
    assert points.status == CommandStatus.RECOVERING and len(points.times) == H
    failed = ControlStep(None, exploring=False, error="planner error: boom")
    points = command_points(failed, ORDER, PERIOD, True)
    assert points.status == CommandStatus.FAILED and points.reason == "planner error: boom"
    assert points.commands.shape == (0, A) and points.times.size == 0


def test_joint_trajectory_message_carries_the_points():
    points = command_points(plan_step(), ORDER, PERIOD, True)
    msg = joint_trajectory_message(["c", "a", "b"], points.commands, points.times, "effort")
    assert list(msg.joint_names) == ["c", "a", "b"] and len(msg.points) == H
    for k, point in enumerate(msg.points):
        assert duration_to_seconds(point.time_from_start) == pytest.approx(k * PERIOD)
        np.testing.assert_array_equal(point.effort, points.commands[k])
        assert not point.positions
    with pytest.raises(ValueError, match="field"):
        joint_trajectory_message(["a"], [[1.0]], [0.0], "accelerations")
