"""URDF continuous joints: one angle per joint everywhere, (cos, sin) inside pinocchio, and the
learned models treat their positions as wrapping angles."""

import math
import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import pinocchio as pin
import pytest
import torch
import yaml
from robot_urdfs import QUADRUPED

from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.exploration import ExplorationConfig
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.robots.analytical import (AnalyticalConfig, AnalyticalDynamics,
                                        pinocchio_reference_step)
from mbrl_ros.robots.mujoco_builder import BuildOptions, build_mujoco_model
from mbrl_ros.robots.robot_model import (RobotModel, continuous_angle_dims,
                                         with_continuous_angles)
from mbrl_ros.robots.servo_model import JointServoModel, robot_servo_config
from mbrl_ros.robots.simulator import Simulator
from mbrl_ros.robots.urdf_resolver import resolve_urdf
from mbrl_ros.tasks.reach import (ReachCostConfig, ReachWarmStart, build_reach_cost,
                                  reach_explorer)
from mbrl_ros.tasks.stand import StandLayout
from mbrl_ros.training.config_file import load_training_setup

CONTINUOUS = ("elbow", "wrist")
"""The continuous joints of ``arm_urdf``: elbow about y (pinocchio's RUBY), wrist about a
tilted axis (its unaligned unbounded joint)."""


def _link(name: str, mass: float, com: str) -> str:
    return (f'<link name="{name}"><inertial><origin xyz="{com}" rpy="0.1 0.2 0.3"/>'
            f'<mass value="{mass}"/><inertia ixx="0.02" iyy="0.03" izz="0.015" ixy="0.001" '
            'ixz="0" iyz="0.002"/></inertial>'
            f'<collision><origin xyz="{com}"/><geometry><sphere radius="0.03"/></geometry>'
            '</collision></link>')


def _joint(name: str, kind: str, parent: str, child: str, origin: str, axis: str,
           limit: str) -> str:
    return (f'<joint name="{name}" type="{kind}"><parent link="{parent}"/>'
            f'<child link="{child}"/><origin {origin}/><axis xyz="{axis}"/>'
            f'<limit {limit}/><dynamics damping="0.3" friction="0.1"/></joint>')


def arm_urdf(continuous: bool = True) -> str:
    """A 4-joint arm: shoulder (revolute), elbow (continuous), slide (prismatic), wrist
    (continuous), ``ee_link``. ``continuous=False``: the same arm with revolute joints of
    +-100 rad in place of the continuous ones."""
    kind = "continuous" if continuous else "revolute"
    wide = 'effort="20" velocity="6"' + ("" if continuous else ' lower="-100" upper="100"')
    return "".join([
        '<robot name="wheel_arm"><link name="world"/>',
        '<joint name="base_fix" type="fixed"><parent link="world"/><child link="base"/>'
        '<origin xyz="0 0 0.2"/></joint>', _link("base", 3.0, "0 0 0.05"),
        _joint("shoulder", "revolute", "base", "upper", 'xyz="0 0 0.1"', "0 0 1",
               'lower="-2" upper="2" effort="40" velocity="3"'),
        _link("upper", 2.0, "0.1 0 0.2"),
        _joint("elbow", kind, "upper", "fore", 'xyz="0 0 0.4" rpy="0.2 0 0"', "0 1 0", wide),
        _link("fore", 1.5, "0.15 0.02 0"),
        _joint("slide", "prismatic", "fore", "carriage", 'xyz="0.3 0 0"', "1 0 0",
               'lower="0" upper="0.2" effort="50" velocity="0.5"'),
        _link("carriage", 0.8, "0.05 0 0.01"),
        _joint("wrist", kind, "carriage", "hand", 'xyz="0.1 0 0"', "0.6 0 0.8", wide),
        _link("hand", 0.5, "0.04 0.03 0.02"),
        '<joint name="ee_fix" type="fixed"><parent link="hand"/><child link="ee_link"/>'
        '<origin xyz="0.12 0.05 0"/></joint><link name="ee_link"/></robot>'])


@pytest.fixture(scope="module")
def arm() -> RobotModel:
    return RobotModel(resolve_urdf(arm_urdf()))


@pytest.fixture(scope="module")
def twin() -> RobotModel:
    """The arm with wide revolute joints in place of the continuous ones."""
    return RobotModel(resolve_urdf(arm_urdf(continuous=False)))


def _samples(count: int, seed: int = 0) -> np.ndarray:
    """[count, 4] positions, the continuous joints' well beyond +-pi."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(-2, 2, count), rng.uniform(-9, 9, count),
                            rng.uniform(0, 0.2, count), rng.uniform(-9, 9, count)])


def _wrap(angle):
    return np.remainder(np.asarray(angle) + np.pi, 2 * np.pi) - np.pi


# ------------------------------------------------------------------------- RobotModel
def test_continuous_joints_load_with_one_angle_each(arm):
    assert arm.joint_names == ("shoulder", "elbow", "slide", "wrist")
    assert arm.continuous.tolist() == [False, True, False, True]
    assert (arm.model.nq, arm.model.nv, arm.num_joints) == (6, 4, 4)
    assert arm.q_indices.tolist() == [0, 1, 3, 4] and arm.v_indices.tolist() == [0, 1, 2, 3]
    assert np.isinf(arm.position_lower[[1, 3]]).all()
    assert np.isinf(arm.position_upper[[1, 3]]).all()


def test_configuration_round_trip_wraps_angles_beyond_pi(arm):
    positions = np.array([0.5, 4.0, 0.1, -5.5])
    q = arm.full_configuration(positions)
    np.testing.assert_allclose(q, [0.5, math.cos(4.0), math.sin(4.0), 0.1, math.cos(-5.5),
                                   math.sin(-5.5)])
    assert pin.isNormalized(arm.model, q)
    back = arm.joint_positions(q)
    np.testing.assert_allclose(back, [0.5, 4.0 - 2 * np.pi, 0.1, -5.5 + 2 * np.pi])
    np.testing.assert_allclose(arm.joint_positions(q, near=positions + 0.3), positions)
    np.testing.assert_allclose(arm.joint_positions(q, near=[0, 10.0, 0, 0]),
                               [0.5, 4.0 + 2 * np.pi, 0.1, -5.5 + 2 * np.pi])
    for row in _samples(20):
        np.testing.assert_allclose(arm.joint_positions(arm.full_configuration(row)),
                                   np.where(arm.continuous, _wrap(row), row), atol=1e-12)


def test_kinematics_and_dynamics_equal_a_wide_revolute_twin(arm, twin):
    for row in _samples(10, seed=1):
        np.testing.assert_allclose(arm.ee_pose(row)[0], twin.ee_pose(row)[0], atol=1e-12)
        np.testing.assert_allclose(arm.frame_pose("hand", arm.full_configuration(row))[1],
                                   twin.frame_pose("hand", twin.full_configuration(row))[1],
                                   atol=1e-12)
        np.testing.assert_allclose(arm.mass_matrix(row), twin.mass_matrix(row), atol=1e-12)
        for mine, theirs in zip(arm.gravity_and_inertia(row), twin.gravity_and_inertia(row)):
            np.testing.assert_allclose(mine, theirs, atol=1e-10)
        velocity, torque = np.array([0.5, -2.0, 0.1, 3.0]), np.array([1.0, -2.0, 3.0, 0.5])
        a = arm.forward_dynamics(arm.full_configuration(row), arm.full_velocity(velocity),
                                 torque, friction_velocity=0.1)
        b = twin.forward_dynamics(twin.full_configuration(row), twin.full_velocity(velocity),
                                  torque, friction_velocity=0.1)
        np.testing.assert_allclose(a, b, atol=1e-9)
    start = np.array([0.3, 3.0, 0.05, -3.0])  # crosses +-pi within the step
    q, v = arm.integrate(arm.full_configuration(start), arm.full_velocity([0, 4.0, 0, -4.0]),
                         np.zeros(4), 0.05, substeps=5)
    q_twin, v_twin = twin.integrate(twin.full_configuration(start),
                                    twin.full_velocity([0, 4.0, 0, -4.0]), np.zeros(4), 0.05, 5)
    np.testing.assert_allclose(v, v_twin, atol=1e-10)
    np.testing.assert_allclose(arm.joint_positions(q, near=start), q_twin, atol=1e-10)
    assert abs(arm.joint_positions(q)[1]) > 3.0 and arm.joint_positions(q)[1] < 0  # wrapped


def test_inverse_kinematics_turns_continuous_joints_freely(arm):
    goal_positions = np.array([0.4, 3.6, 0.12, -4.0])
    goal, goal_quat = arm.ee_pose(goal_positions)
    result = arm.inverse_kinematics(goal, goal_quat, initial_positions=[0.3, 3.0, 0.1, -3.5])
    assert result.converged
    np.testing.assert_allclose(arm.ee_pose(result.joint_positions)[0], goal, atol=1e-3)


# ---------------------------------------------------------------- batched analytical model
def test_analytical_dynamics_match_pinocchio_beyond_pi(arm):
    config = AnalyticalConfig(dt=0.02, substeps=4, friction_velocity=0.05)
    model = AnalyticalDynamics(arm, config, dtype=torch.float64)
    rng = np.random.default_rng(3)
    positions = _samples(16, seed=3)
    velocities = rng.uniform(-3, 3, (16, 4))
    torques = rng.uniform(-10, 10, (16, 4))
    accelerations = model.forward_dynamics(*(torch.as_tensor(x) for x in
                                             (positions, velocities, torques))).numpy()
    states = np.hstack([positions, velocities])
    following = model.step(torch.as_tensor(states), torch.as_tensor(torques)).numpy()
    ee = model.ee_position_batch(torch.as_tensor(positions)).numpy()
    for i in range(16):
        q, v = arm.full_configuration(positions[i]), arm.full_velocity(velocities[i])
        np.testing.assert_allclose(
            accelerations[i], arm.joint_velocities(arm.forward_dynamics(q, v, torques[i], 0.05)),
            rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(following[i], pinocchio_reference_step(
            arm, states[i], torques[i], config), rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(ee[i], arm.ee_pose(positions[i])[0], atol=1e-10)


# ------------------------------------------------------------------------- MuJoCo
def test_mujoco_builds_continuous_joints_as_unlimited_hinges():
    model, info = build_mujoco_model(arm_urdf())
    for name in CONTINUOUS:
        joint = model.joint(name)
        assert joint.type[0] == mujoco.mjtJoint.mjJNT_HINGE and not model.jnt_limited[joint.id]
    assert model.jnt_limited[model.joint("shoulder").id]
    position_model, _ = build_mujoco_model(arm_urdf(), BuildOptions(control_mode="position"))
    actuator = position_model.actuator("wrist_position").id
    assert not position_model.actuator_ctrllimited[actuator]
    sim = Simulator(arm_urdf())
    sim.set_command(np.array([0.0, 0.0, 0.0, 5.0]))  # spin the wrist past half a turn
    sim.step(100)
    assert sim.joint_state()[0][3] > np.pi  # MuJoCo reports the unwrapped angle


# --------------------------------------------------------------- learned-model angle rule
def test_angle_wrap_rule_picks_the_continuous_joints_positions(arm, twin):
    assert continuous_angle_dims(arm, arm.joint_names) == (1, 3)
    assert continuous_angle_dims(arm, ("wrist", "shoulder", "elbow", "slide")) == (0, 2)
    assert continuous_angle_dims(twin, twin.joint_names) == ()
    plain = EnsembleConfig()
    assert with_continuous_angles(plain, twin, twin.joint_names) is plain
    assert with_continuous_angles(plain, arm, arm.joint_names).angle_wrap == (1, 3)
    mine = EnsembleConfig(angle_wrap=(6, 3))  # the user's dims are kept, in their order
    assert with_continuous_angles(mine, arm, arm.joint_names).angle_wrap == (6, 3, 1)
    with pytest.raises(ValueError, match="not joints of the robot"):
        continuous_angle_dims(arm, ("shoulder", "nope"))


def test_angle_wrap_rule_on_a_floating_base_robot():
    robot = ET.parse(QUADRUPED).getroot()
    changed = ("lh_hip_joint", "rf_calf_joint")
    for joint in robot.findall("joint"):
        if joint.get("name") in changed:
            joint.set("type", "continuous")
    quadruped = RobotModel(resolve_urdf(ET.tostring(robot, encoding="unicode")))
    assert quadruped.floating_base and quadruped.model.nq == 7 + 12 + 2
    dims = continuous_angle_dims(quadruped, quadruped.joint_names)
    assert [quadruped.joint_names[i] for i in dims] == list(changed)
    layout = StandLayout(quadruped.num_joints)
    assert all(i in range(layout.state_dim)[layout.positions] for i in dims)
    positions = np.linspace(-4.0, 4.0, quadruped.num_joints)
    base = np.array([0.1, -0.2, 0.4, 0.9, 0.1, 0.3, 0.2])
    base[3:] /= np.linalg.norm(base[3:])
    q = quadruped.full_configuration(positions, base)
    np.testing.assert_allclose(q[:3], base[:3])
    np.testing.assert_allclose(quadruped.joint_positions(q, near=positions), positions)


def test_trainer_setup_and_checkpoint_carry_the_angles(tmp_path):
    urdf = tmp_path / "wheel_arm.urdf"
    urdf.write_text(arm_urdf())
    parameters = {"model_period_s": 0.02, "torch_threads": 1, "model_kind": "ensemble",
                  "ensemble": {"num_members": 2, "num_elites": 1, "hidden_sizes": [8],
                               "angle_wrap": [5]},
                  "data": {"state_topic": "joint_states", "command_topic": "cmd"},
                  "alignment": {"control_rate_hz": 50.0}}
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump({"/**/trainer": {"ros__parameters": parameters}}))
    setup = load_training_setup(config, str(urdf))
    assert setup.ensemble.angle_wrap == (5, 1, 3)
    model = ProbabilisticEnsemble(8, 4, setup.ensemble)
    model.save(str(tmp_path / "model.pt"))
    loaded = load_model(str(tmp_path / "model.pt"))  # what the planner does
    assert loaded.config.angle_wrap == (5, 1, 3)
    assert loaded.angle_index.tolist() == [1, 3, 5]


# ------------------------------------------------------------------------- reach task
def test_reach_task_pieces_take_unlimited_joints(arm):
    cost = build_reach_cost(arm, lambda q: torch.zeros(q.shape[0], 3),
                            ReachCostConfig(posture_weight=1.0), None, torch.device("cpu"))
    states = torch.zeros(3, 5, 8)
    states[..., 1] = 7.0  # elbow far beyond a turn: no limit cost, finite total
    total = cost(states, torch.zeros(3, 4, 4))
    assert torch.isfinite(total).all()
    explorer = reach_explorer(ExplorationConfig(), arm, "effort", 0.02)
    for _ in range(50):
        assert np.isfinite(explorer(np.array([0.0, 7.0, 0.1, -7.0]), np.zeros(4))).all()
    warm = ReachWarmStart(arm, 0.02)
    path = warm(np.array([0.0, 3.0, 0.1, -3.0]), arm.ee_pose(np.array([0.3, -3.0, 0.1, 3.0]))[0],
                10)
    assert np.isfinite(path).all() and path.shape == (10, 4)


def test_servo_turns_a_continuous_joint_the_short_way(arm):
    """A target across +-pi from a continuous joint (as the controller sends it: the equal
    angle nearest the joint) moves the joint the short way in the servo model too."""
    servo = JointServoModel(arm, robot_servo_config(arm, [50.0] * 4, [5.0] * 4), 0.02)
    elbow = arm.joint_names.index("elbow")
    state = torch.zeros(1, 2 * arm.num_joints)
    state[0, elbow] = math.pi - 0.1
    target = state[:, :arm.num_joints].clone()
    target[0, elbow] = -math.pi + 0.1  # 0.2 rad ahead across pi, not 6.1 rad back
    moved = float(servo.step(state, target)[0, arm.num_joints + elbow])
    assert moved > 0.0, moved


def test_robot_config_names_the_continuous_joints_and_writes_finite_values(tmp_path):
    from mbrl_ros.robots.config_generator import RobotConfigRequest, generate
    urdf = tmp_path / "wheel_arm.urdf"
    urdf.write_text(arm_urdf())
    generated = generate(RobotConfigRequest(urdf=str(urdf)))
    assert any(d.startswith("continuous joints elbow, wrist") for d in generated.decisions)
    values = yaml.safe_load(generated.to_yaml())

    def numbers(node):
        if isinstance(node, dict):
            return [x for v in node.values() for x in numbers(v)]
        if isinstance(node, list):
            return [x for v in node for x in numbers(v)]
        return [node] if isinstance(node, float) else []
    assert all(math.isfinite(x) for x in numbers(values))
