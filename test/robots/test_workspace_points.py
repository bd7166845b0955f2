"""The workspace on a real arm: its checked points from the URDF, batched kinematics that
match pinocchio, plans of the 7-DoF arm that stay above the floor, and demo goals whose
configurations do."""

import numpy as np
import pinocchio as pin
import pytest
import torch

from mbrl_ros.core.nominal_only import NominalOnlyModel
from mbrl_ros.core.planning import Planner, PlannerConfig
from mbrl_ros.core.workspace import WorkspaceConfig
from mbrl_ros.demo.goals import GoalSampler
from mbrl_ros.robots.analytical import AnalyticalDynamics
from mbrl_ros.robots.robot_model import RobotModel
from mbrl_ros.robots.servo_model import JointServoModel, ServoConfig
from mbrl_ros.robots.workspace_points import (checked_points, workspace_constraint,
                                              workspace_guard, workspace_unavailable)
from mbrl_ros.tasks.reach import (ReachCostConfig, build_reach_cost, load_robot,
                                  planning_range, reach_limits)
from robot_urdfs import ARM, QUADRUPED

KP = (400.0, 500.0, 350.0, 250.0, 60.0, 40.0, 20.0)
KD = (40.0, 50.0, 35.0, 25.0, 6.0, 4.0, 2.0)
PERIOD_S = 0.04
ARM7_WORKSPACE = WorkspaceConfig(floor_height=0.0, clearance=0.05)
"""As config/arm7.yaml sets it: joint origins and the end effector 5 cm above the floor."""


@pytest.fixture(scope="module")
def arm():
    return load_robot(str(ARM))


def joint_origins_and_ee(robot: RobotModel, positions: np.ndarray) -> np.ndarray:
    """[J + 1, 3] by pinocchio's joint placements (not frames): the reference."""
    data = robot.model.createData()
    pin.forwardKinematics(robot.model, data, robot.full_configuration(positions))
    joints = [data.oMi[robot.model.getJointId(name)].translation for name in robot.joint_names]
    return np.array(joints + [robot.ee_pose(positions)[0]])


def random_configurations(robot, count, seed=0):
    low, high = planning_range(robot)
    return np.random.default_rng(seed).uniform(low, high, size=(count, robot.num_joints))


def test_default_points_are_every_joint_origin_then_the_end_effector(arm):
    points = checked_points(arm, WorkspaceConfig())
    assert points.names == tuple(arm.joint_names) + ("ee_link",)
    assert points.has_end_effector
    listed = checked_points(arm, WorkspaceConfig(frames=("arm_link4", "ee_link", "arm_hand")))
    assert listed.names == ("arm_link4", "arm_hand", "ee_link")   # the end effector last, once
    with pytest.raises(ValueError, match="not in the model"):
        checked_points(arm, WorkspaceConfig(frames=("no_such_link",)))


def test_batched_and_single_kinematics_match_pinocchio(arm):
    configurations = random_configurations(arm, 50)
    expected = np.stack([joint_origins_and_ee(arm, q) for q in configurations])
    constraint = workspace_constraint(arm, WorkspaceConfig(), "effort", torch.device("cpu"))
    batched = constraint.points(torch.as_tensor(configurations, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(batched, expected, atol=1e-5)
    guard = workspace_guard(arm, WorkspaceConfig())
    np.testing.assert_allclose(guard.points(configurations[0]), expected[0], atol=1e-9)
    # frames fixed to the base and frames offset from their joint
    kinematics = AnalyticalDynamics(arm)
    frames = [arm.frame_id(name) for name in ("world", "arm_link0", "arm_hand", "ee_link")]
    batched = kinematics.frame_positions_batch(
        torch.as_tensor(configurations, dtype=torch.float32), frames).numpy()
    for q, points in zip(configurations[:5], batched):
        full = arm.full_configuration(q)
        for frame, point in zip(("world", "arm_link0", "arm_hand", "ee_link"), points):
            np.testing.assert_allclose(point, arm.frame_pose(frame, full)[0], atol=1e-5)


def test_a_guard_takes_the_callers_joint_order(arm):
    order = list(reversed(arm.joint_names))
    guard = workspace_guard(arm, WorkspaceConfig(), order)
    canonical = workspace_guard(arm, WorkspaceConfig())
    q = random_configurations(arm, 1)[0]
    np.testing.assert_allclose(guard.points(q[::-1]), canonical.points(q))


def test_the_workspace_applies_to_fixed_base_arms_only(arm):
    assert workspace_unavailable(arm, WorkspaceConfig()) == ""
    assert "switched off" in workspace_unavailable(arm, WorkspaceConfig(enabled=False))
    assert "not all the URDF's joints" in workspace_unavailable(
        arm, WorkspaceConfig(), arm.joint_names[:2])
    quadruped = RobotModel.from_urdf(str(QUADRUPED), ee_frame=None)
    assert "floating base" in workspace_unavailable(quadruped, WorkspaceConfig())
    assert workspace_guard(quadruped, WorkspaceConfig()) is None
    assert workspace_constraint(arm, WorkspaceConfig(enabled=False), "position",
                                torch.device("cpu")) is None


def arm_planner(arm, constraint):
    """The arm's position-mode planner as config/arm7.yaml sets it up (servo model only)."""
    torch.manual_seed(0)
    servo = JointServoModel(arm, ServoConfig(KP, KD), PERIOD_S)
    config = PlannerConfig(method="mppi", num_samples=128, horizon=10, num_iterations=3,
                           propagation="mean", temperature=1.0, init_std=0.1, min_std=0.02,
                           num_policy_trajectories=0, seed=0,
                           **reach_limits(arm, "position", 1.5))
    cost = build_reach_cost(arm, servo.ee_position_batch, ReachCostConfig(
        end_effector_weight=500.0, effort_weight=0.0), np.array([0.55, 0.0, -0.2]),
        torch.device("cpu"))
    model = NominalOnlyModel(servo, 2 * arm.num_joints, arm.num_joints)
    return servo, Planner(model, config, cost,
                          constraint=constraint)


def plan_low_points(arm, constraint, start):
    """Lowest checked point [m] along the plan toward a goal under the floor, and the plan."""
    servo, planner = arm_planner(arm, constraint)
    servo.set_operating_point(start)
    planner.seed(np.repeat(start[None], planner.config.horizon, 0))
    state = np.concatenate([start, np.zeros(arm.num_joints)])
    for _ in range(5):                     # a few ticks from the same state: warm started
        result = planner.plan(state)
    guard = workspace_guard(arm, ARM7_WORKSPACE)
    positions = np.concatenate([result.states[1:, :arm.num_joints].numpy(),
                                result.actions.numpy()])
    return min(float(guard.points(q)[:, 2].min()) for q in positions), result


def test_arm_plans_toward_a_goal_under_the_floor_stay_above_it(arm):
    start = arm.inverse_kinematics(np.array([0.55, 0.0, 0.1]),
                                   initial_positions=np.array(
                                       [0.0, 0.3, 0.0, -2.0, 0.0, 2.3, 0.785])).joint_positions
    guard = workspace_guard(arm, ARM7_WORKSPACE)
    assert guard.allows(start)
    lowest, _ = plan_low_points(arm, None, start)
    assert lowest < ARM7_WORKSPACE.floor_limit - 0.03, "without the workspace the arm dives"
    constraint = workspace_constraint(arm, ARM7_WORKSPACE, "position", torch.device("cpu"))
    lowest, result = plan_low_points(arm, constraint, start)
    assert result.feasible
    assert lowest >= ARM7_WORKSPACE.floor_limit - 1e-4


def test_goal_configurations_keep_every_link_above_the_floor(arm):
    table = WorkspaceConfig(floor_height=0.3, ee_lower=(-0.7, -0.7, 0.35),
                            ee_upper=(0.7, 0.7, 1.0))
    sampler = GoalSampler()
    goals, configurations = sampler.sample_with_configurations(
        arm, 25, np.random.default_rng(0), table)
    for goal, q in zip(goals, configurations):
        points = joint_origins_and_ee(arm, q)
        moving = points[2:]                # joints 1 and 2 sit at 0.333 m whatever the pose
        assert moving[:, 2].min() >= table.floor_limit
        assert np.all(goal >= np.array(table.ee_lower)) and np.all(goal <= table.ee_upper)
    _, free = sampler.sample_with_configurations(arm, 25, np.random.default_rng(0),
                                                 WorkspaceConfig(enabled=False))
    assert min(joint_origins_and_ee(arm, q)[2:, 2].min() for q in free) < table.floor_limit, \
        "without the workspace some goal's arm dips under the table"
    np.testing.assert_allclose(sampler.sample(arm, 25, np.random.default_rng(0), table), goals)
