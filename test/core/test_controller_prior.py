"""ModelPredictiveController with a learned value/policy: the options decide what the planner
gets, the terminal value's disagreement counts at the plan's last step, policy-only steps send
the policy's action; the safety gate judges a policy's command like a planned one."""

import numpy as np
import pytest
import torch

from mbrl_ros.core.controller import ModelPredictiveController
from mbrl_ros.core.costs import EndEffectorCost, TaskCost
from mbrl_ros.core.exploration import ExplorationConfig, SmoothExplorer
from mbrl_ros.core.planning import PlannerConfig
from mbrl_ros.core.safety_gate import (CommandStatus, GateConfig, GateState, SafetyGate)
from mbrl_ros.core.value_policy import ValuePolicy, ValuePolicyConfig
from mbrl_ros.core.value_prior import (STAGE_FULL, STAGE_MPC, STAGE_POLICY_ONLY,
                                       STAGE_POLICY_PRIOR, STAGE_VALUE, PlanningPrior,
                                       ValuePriorConfig)

from joint_integrator import DT, JointIntegrator

GOAL = np.array([0.5, 0.0, 0.0])


def make_controller(options: ValuePriorConfig = ValuePriorConfig()) -> ModelPredictiveController:
    cost = TaskCost([EndEffectorCost(
        lambda q: torch.cat([q, torch.zeros_like(q), torch.zeros_like(q)], -1), [0],
        [0.0, 0.0, 0.0], 10.0, 2)])
    explorer = SmoothExplorer(ExplorationConfig(), "position", np.array([-2.0]),
                              np.array([2.0]), np.array([2.0]), DT)
    controller = ModelPredictiveController(
        PlannerConfig(horizon=4, num_samples=32, num_iterations=2, init_std=0.2,
                      num_policy_trajectories=4, action_low=(-2.0,), action_high=(2.0,),
                      seed=0),
        cost, explorer, torch.device("cpu"), prior_options=options)
    controller.set_model(JointIntegrator(), 1)
    return controller


def make_prior(version: int = 2) -> PlanningPrior:
    """An untrained goal-conditioned value/policy: its two Q members disagree."""
    agent = ValuePolicy(2, 1, [-1.0], [1.0], ValuePolicyConfig(hidden_sizes=(8,)), seed=3,
                        goal_dim=3)
    return PlanningPrior(agent, version)


STATE = (np.array([0.1]), np.array([0.0]))


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. a scratch buffer of the wrong size
def test_the_options_decide_what_the_planner_gets():
    controller = make_controller()
    prior = make_prior()
    controller.set_prior(prior)
    assert controller.stage == STAGE_MPC  # no goal yet: a goal-conditioned prior is not ready
    controller.set_goal(GOAL)
    # all off (the default): pure MPC even with a value/policy deployed
    assert controller.stage == STAGE_MPC
    assert controller.planner.value is None and controller.planner.policy is None
    controller.step(*STATE)  # a plan without the prior first: the swap must not break the next
    expected = {ValuePriorConfig(policy_prior=True): (STAGE_POLICY_PRIOR, False, True),
                ValuePriorConfig(terminal_value=True): (STAGE_VALUE, True, False),
                ValuePriorConfig(True, True): (STAGE_FULL, True, True),
                ValuePriorConfig(True, True, policy_only=True): (STAGE_POLICY_ONLY, False,
                                                                 False),
                ValuePriorConfig(): (STAGE_MPC, False, False)}
    for options, (stage, value, policy) in expected.items():
        controller.set_prior_options(options)
        assert controller.stage == stage, options
        assert (controller.planner.value is not None) == value, options
        assert (controller.planner.policy is not None) == policy, options
        step = controller.step(*STATE)
        assert not step.failed and step.stage == stage, (options, step.error)
    controller.set_prior_options(ValuePriorConfig(True, True))
    controller.set_prior(None)  # dropped: pure MPC whatever the options say
    assert controller.stage == STAGE_MPC
    assert controller.planner.value is None and controller.planner.policy is None
    assert controller.step(*STATE).stage == STAGE_MPC


def test_a_new_model_or_planner_settings_keep_the_prior():
    controller = make_controller(ValuePriorConfig(True, True))
    controller.set_goal(GOAL)
    controller.set_prior(make_prior())
    controller.set_planner_config(PlannerConfig(
        horizon=3, num_samples=16, num_iterations=1, num_policy_trajectories=2,
        action_low=(-2.0,), action_high=(2.0,)))
    controller.set_model(JointIntegrator(), 2)
    assert controller.planner.value is not None and controller.planner.policy is not None
    assert controller.step(*STATE).stage == STAGE_FULL


def test_the_terminal_values_disagreement_is_added_at_the_plans_last_step():
    controller = make_controller(ValuePriorConfig(terminal_value=True))
    controller.set_goal(GOAL)
    prior = make_prior()
    controller.set_prior(prior)
    step = controller.step(*STATE)
    plan = step.plan
    value_spread = prior.disagreement(plan.states[-1])
    assert value_spread > 1e-6
    disagreement = plan.disagreement.numpy()
    # the one-member model agrees with itself: all of the disagreement is the value's
    np.testing.assert_allclose(disagreement[:-1], 0.0, atol=1e-9)
    assert disagreement[-1] == pytest.approx(value_spread, rel=1e-5)
    assert step.disagreement == pytest.approx(value_spread, rel=1e-5)
    # without the terminal value, nothing is added
    controller.set_prior_options(ValuePriorConfig(policy_prior=True))
    step = controller.step(*STATE)
    np.testing.assert_allclose(step.plan.disagreement.numpy(), 0.0, atol=1e-9)
    assert step.disagreement == pytest.approx(0.0, abs=1e-9)


def test_policy_only_sends_the_policys_action_without_planning():
    controller = make_controller(ValuePriorConfig(policy_only=True))
    controller.set_goal(GOAL)
    prior = make_prior()
    controller.set_prior(prior)
    step = controller.step(*STATE)
    assert not step.failed and step.plan is None and not step.exploring
    assert step.stage == STAGE_POLICY_ONLY and step.from_policy
    state = torch.tensor([[0.1, 0.0]])
    expected = prior.policy(state)[0].numpy()
    np.testing.assert_allclose(step.command, expected, rtol=1e-6)
    # its disagreement: the value's at the predicted next state (the model agrees with itself)
    next_state = JointIntegrator().predict(state, prior.policy(state))[0][0, 0]
    assert step.disagreement == pytest.approx(prior.disagreement(next_state), rel=1e-5)
    # without a value/policy, policy-only plans as before
    controller.set_prior(None)
    step = controller.step(*STATE)
    assert step.stage == STAGE_MPC and not step.from_policy and step.plan is not None


@pytest.mark.parametrize("mode", ["position", "effort"])
def test_the_gate_judges_a_policys_command_like_a_planned_one(mode):
    """Same limits (not the exploration's tighter ones), same disagreement rule."""
    config = GateConfig.from_dict(dict(
        joints=("a", "b"), control_rate_hz=100.0, watchdog_timeout_s=0.01,
        state_timeout_s=0.05, effort_limit=(5.0, 3.0), position_lower=(-2.0, -1.0),
        position_upper=(2.0, 1.0), velocity_limit=(100.0, 100.0),
        max_position_step=(0.2, 0.2), disagreement_threshold=1.0, disagreement_resume=0.5,
        resume_ticks=3, hold_kp=(10.0, 20.0), hold_kd=2.0, clamp_margin=0.5,
        resume_ramp_s=0.0, control_mode=mode, exploration_limit_fraction=0.5))
    outputs = {}
    for status in (CommandStatus.PLANNED, CommandStatus.POLICY, CommandStatus.EXPLORING):
        gate, runs = SafetyGate(config), []
        # within limits, beyond the step (position) or effort bound, then an untrusted command
        beyond = (0.25, 0.0) if mode == "position" else (0.25, 3.2)
        for tick, (command, disagreement) in enumerate([((0.1, 0.0), 0.1), (beyond, 0.1),
                                                        ((0.1, 0.0), 5.0)]):
            now = tick * 0.01
            gate.set_joint_state(("a", "b"), (0.0, 0.0), (0.0, 0.0), now)
            gate.set_command(command, now, disagreement, status)
            out = gate.tick(now)
            runs.append((out.state, None if out.command is None else out.command.tolist(),
                         out.fault))
        outputs[status] = runs
    assert outputs[CommandStatus.POLICY] == outputs[CommandStatus.PLANNED]
    assert outputs[CommandStatus.POLICY][0][0] == GateState.PASS
    assert outputs[CommandStatus.POLICY][1][0] == GateState.CLAMPED
    assert outputs[CommandStatus.POLICY][2][0] == GateState.FALLBACK
    if mode == "position":  # the exploration's tighter step bound is not applied to a policy
        assert outputs[CommandStatus.EXPLORING] != outputs[CommandStatus.POLICY]
