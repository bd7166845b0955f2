"""The workspace (floor plane, end-effector box) in the planner and the safety gate, on small
stand-in robots whose kinematics are written here (the URDF side: test/robots/)."""

import math

import numpy as np
import pytest
import torch

from linear_model import LinearModel
from mbrl_ros.core.controller import ModelPredictiveController
from mbrl_ros.core.costs import JointPositionCost, TaskCost
from mbrl_ros.core.exploration import ExplorationConfig, SmoothExplorer
from mbrl_ros.core.planning import Planner, PlannerConfig
from mbrl_ros.core.safety_gate import Fault, GateConfig, GateState, SafetyGate
from mbrl_ros.core.workspace import (WorkspaceConfig, WorkspaceConstraint, WorkspaceGuard,
                                     box_excess, floor_depth)

DT = 0.1
STAND_IN_VARIANCE = 1e-4
"""Predicted variance of the linear stand-in's members."""
FLOOR = WorkspaceConfig(floor_height=0.0)


def height_points(positions: torch.Tensor) -> torch.Tensor:
    """A one-joint 'robot' whose joint position is the height of its only point."""
    zeros = torch.zeros_like(positions)
    return torch.stack([zeros, zeros, positions], -1)


def double_integrator():
    """State [z, vz], action: vertical acceleration."""
    return LinearModel([[1.0, DT], [0.0, 1.0]], [[0.0], [DT]], variance=STAND_IN_VARIANCE)


def plan_config(**overrides):
    settings = dict(horizon=8, num_samples=256, num_iterations=6, action_low=(-1.0,),
                    action_high=(1.0,), temperature=0.1, momentum=0.0,
                    num_policy_trajectories=0, seed=1)
    settings.update(overrides)
    return PlannerConfig(**settings)


def dive_cost():
    """Drive the height to -1 m: straight through a floor at 0."""
    return TaskCost([JointPositionCost([0], [-1.0], [1.0])])


# ---------------------------------------------------------------------------------- config
@pytest.mark.parametrize("overrides, message", [
    (dict(ee_lower=(0.0, 0.0), ee_upper=(1.0, 1.0)), "3 values"),
    (dict(ee_lower=(0.0, 0.0, 0.0)), "3 values"),
    (dict(ee_lower=(0.0, 1.0, 0.0), ee_upper=(1.0, 1.0, 1.0)), "ee_lower < ee_upper"),
    (dict(floor_height=math.nan), "finite"),
    (dict(clearance=math.inf), "finite"),
    (dict(frames=("link", "")), "names"),
])
def test_config_rejects_bad_settings(overrides, message):
    with pytest.raises(ValueError, match=message):
        WorkspaceConfig(**overrides).validate()


def test_default_is_on_with_the_floor_just_below_the_base_plane():
    config = WorkspaceConfig().validate()
    assert config.enabled and not config.bounded
    assert -0.05 < config.floor_limit < 0.0
    assert config.ee_excess([0.3, 0.0, 0.0]) == 0.0
    assert config.ee_excess([0.3, 0.0, -0.2]) == pytest.approx(0.2 + config.floor_limit)


def test_excess_is_the_same_in_numpy_and_torch():
    points = np.array([[0.0, 0.0, 0.3], [0.1, 0.0, -0.2], [1.5, -2.0, 0.1]])
    lower, upper = np.array([-1.0, -1.0, 0.0]), np.array([1.0, 1.0, 2.0])
    np.testing.assert_allclose(floor_depth(points, 0.05), [0.0, 0.25, 0.0])
    np.testing.assert_allclose(box_excess(points[-1], lower, upper), [0.5, 1.0, 0.0])
    tensor = torch.as_tensor(points)
    np.testing.assert_allclose(floor_depth(tensor, 0.05).numpy(), floor_depth(points, 0.05))
    np.testing.assert_allclose(
        box_excess(tensor[-1], torch.as_tensor(lower), torch.as_tensor(upper)).numpy(),
        box_excess(points[-1], lower, upper))


def test_constraint_sums_predicted_states_and_position_targets():
    constraint = WorkspaceConstraint(FLOOR, height_points, num_joints=1, check_actions=True)
    states = torch.tensor([[[[-5.0, 0.0], [0.2, 0.0], [-0.1, 0.0]],
                            [[0.0, 0.0], [0.3, 0.0], [0.4, 0.0]]]])      # [1, 2, 3, 2]
    actions = torch.tensor([[[0.1], [0.1]], [[-0.5], [0.2]]])              # [2, 2, 1]
    # sample 0: step 0 (the current state, -5) does not count, step 2 is 0.1 below;
    # sample 1: every state above, its first target 0.5 below
    np.testing.assert_allclose(constraint(states, actions).numpy(), [0.1, 0.5], atol=1e-6)
    states_only = WorkspaceConstraint(FLOOR, height_points, 1, check_actions=False)
    np.testing.assert_allclose(states_only(states, actions).numpy(), [0.1, 0.0], atol=1e-6)
    nan = states.clone()
    nan[0, 0, 1, 0] = math.nan
    assert math.isinf(float(constraint(nan, actions)[0]))
    with pytest.raises(ValueError, match="end-effector"):
        WorkspaceConstraint(WorkspaceConfig(ee_lower=(0, 0, 0), ee_upper=(1, 1, 1)),
                            height_points, 1, False, has_end_effector=False)


# ---------------------------------------------------------------------------------- planner
def test_plan_through_the_floor_is_rejected_and_the_best_stays_above_it():
    constraint = WorkspaceConstraint(FLOOR, height_points, num_joints=1, check_actions=False)
    config = plan_config(horizon=10)
    free = Planner(double_integrator(), config, dive_cost()).plan([0.15, 0.0])
    assert float(free.states[:, 0].min()) < -0.1, "without the workspace the plan dives"
    planner = Planner(double_integrator(), config, dive_cost(), constraint=constraint)
    result = planner.plan([0.15, 0.0])
    assert result.feasible
    assert float(result.states[:, 0].min()) >= -1e-5
    assert float(result.states[-1, 0]) < 0.1, "it still goes down as far as it may"


def test_without_a_feasible_plan_the_least_violating_one_leads_back_up():
    constraint = WorkspaceConstraint(FLOOR, height_points, num_joints=1, check_actions=False)
    planner = Planner(double_integrator(), plan_config(), dive_cost(), constraint=constraint)
    result = planner.plan([-0.3, -0.5])          # below the floor, still sinking
    assert not result.feasible
    assert float(result.action[0]) > 0.9, "the least-violating plan pushes up as hard as it can"
    free = Planner(double_integrator(), plan_config(), dive_cost()).plan([-0.3, -0.5])
    assert float(free.action[0]) < 0.0


def test_position_targets_are_kept_above_the_floor_too():
    # the height moves halfway to its target
    servo = LinearModel([[0.5]], [[0.5]], variance=STAND_IN_VARIANCE)
    config = plan_config(action_low=(-2.0,), action_high=(2.0,), horizon=4)
    loose = Planner(servo, config, dive_cost(), constraint=WorkspaceConstraint(
        FLOOR, height_points, 1, check_actions=False)).plan([0.4])
    assert float(loose.actions.min()) < -0.05, "states alone let a target below the floor"
    planner = Planner(servo, config, dive_cost(), constraint=WorkspaceConstraint(
        FLOOR, height_points, 1, check_actions=True))
    result = planner.plan([0.4])
    assert result.feasible and float(result.actions.min()) >= -1e-5


def test_the_controller_gives_every_planner_it_builds_the_constraint():
    constraint = WorkspaceConstraint(FLOOR, height_points, num_joints=1, check_actions=False)
    explorer = SmoothExplorer(ExplorationConfig(), "effort", [-1.0], [1.0], [1.0], DT)
    controller = ModelPredictiveController(plan_config(), dive_cost(), explorer,
                                           torch.device("cpu"), needs_goal=False,
                                           constraint=constraint)
    controller.set_model(double_integrator(), 1)
    assert controller.planner.constraint is constraint
    controller.set_planner_config(plan_config(horizon=5))
    assert controller.planner.constraint is constraint
    step = controller.step(np.array([0.05]), np.array([0.0]))
    assert step.plan.feasible and float(step.plan.states[:, 0].min()) >= -1e-5


# ---------------------------------------------------------------------------------- gate
JOINTS = ("shoulder", "elbow")
SHOULDER_HEIGHT, LINK = 0.5, 0.4


def planar_arm(positions: np.ndarray) -> np.ndarray:
    """Two links swinging in the x-z plane from a shoulder 0.5 m up: [elbow, hand] [2, 3];
    at (0, 0) the arm points straight up."""
    shoulder = np.array([0.0, 0.0, SHOULDER_HEIGHT])
    elbow = shoulder + LINK * np.array([np.sin(positions[0]), 0.0, np.cos(positions[0])])
    angle = positions[0] + positions[1]
    hand = elbow + LINK * np.array([np.sin(angle), 0.0, np.cos(angle)])
    return np.stack([elbow, hand])


def hand_height(positions) -> float:
    return float(planar_arm(np.asarray(positions, dtype=float))[-1, 2])


def make_gate(mode="position", workspace=FLOOR, **overrides):
    settings = dict(joints=JOINTS, control_rate_hz=100.0, control_mode=mode,
                    watchdog_timeout_s=0.05, state_timeout_s=0.05, position_lower=(-3.0, -3.0),
                    position_upper=(3.0, 3.0), velocity_limit=(100.0, 100.0),
                    max_position_step=(5.0, 5.0), effort_limit=(10.0, 10.0),
                    limit_lookahead_s=0.1, resume_ramp_s=0.0)
    settings.update(overrides)
    guard = WorkspaceGuard(workspace, planar_arm, ("elbow", "hand"))
    return SafetyGate(GateConfig.from_dict(settings), workspace=guard)


def judge(gate, now, command, positions, velocities=(0.0, 0.0)):
    gate.set_joint_state(JOINTS, positions, velocities, now)
    gate.set_command(command, now, 0.0)
    return gate.tick(now)


def test_gate_holds_a_target_below_the_floor_and_passes_one_above():
    gate = make_gate()
    measured = (1.3, 0.6)
    assert hand_height(measured) > 0.0
    ok = judge(gate, 0.0, (1.2, 0.6), measured)
    assert ok.state == GateState.PASS
    down = (2.0, 1.0)
    assert hand_height(down) < 0.0
    out = judge(gate, 0.01, down, measured)
    assert out.state == GateState.FALLBACK and out.fault == Fault.WORKSPACE
    assert "hand" in out.reason and "below the floor" in out.reason
    np.testing.assert_allclose(out.command, measured)    # held where it is
    assert judge(gate, 0.02, (1.2, 0.6), measured).state == GateState.PASS


def test_gate_lets_a_robot_below_the_floor_stay_or_move_back_up_but_not_deeper():
    gate = make_gate()
    below = (2.0, 0.8)
    depth = -hand_height(below)
    assert depth > 0.0
    assert judge(gate, 0.0, below, below).state == GateState.PASS        # stay
    up = (2.0, 0.72)
    assert 0.0 < -hand_height(up) < depth
    assert judge(gate, 0.01, up, below).state == GateState.PASS          # back toward it
    deeper = (2.0, 1.0)
    assert -hand_height(deeper) > depth
    out = judge(gate, 0.02, deeper, below)
    assert out.fault == Fault.WORKSPACE
    np.testing.assert_allclose(out.command, below)


def test_gate_keeps_the_end_effector_in_its_box():
    box = WorkspaceConfig(floor_height=0.0, ee_lower=(-1.0, -1.0, 0.0),
                          ee_upper=(0.5, 1.0, 2.0))
    gate = make_gate(workspace=box)
    measured = (0.3, 0.3)
    assert planar_arm(np.array(measured))[-1, 0] < 0.5
    assert judge(gate, 0.0, (0.4, 0.3), measured).state == GateState.PASS
    out = judge(gate, 0.01, (1.0, 0.3), measured)
    assert out.fault == Fault.WORKSPACE and "box" in out.reason


def test_gate_in_effort_mode_stops_motion_into_the_floor_not_out_of_it():
    gate = make_gate(mode="effort")
    near = (1.85, 0.85)                    # the hand a few centimetres above the floor
    assert 0.0 < hand_height(near) < 0.05
    sinking = judge(gate, 0.0, (0.0, 0.0), near, velocities=(0.5, 0.5))
    assert sinking.fault == Fault.WORKSPACE
    rising = judge(gate, 0.01, (0.0, 0.0), near, velocities=(-0.5, -0.5))
    assert rising.state == GateState.PASS
    assert judge(gate, 0.02, (1.0, 1.0), near).state == GateState.PASS   # at rest


def test_gate_without_a_workspace_passes_what_it_would_refuse():
    gate = SafetyGate(make_gate().config)
    assert judge(gate, 0.0, (2.0, 1.0), (1.3, 0.6)).state == GateState.PASS
