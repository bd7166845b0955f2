"""One canonical joint order (URDF file order) in MuJoCo, pinocchio and the torch model.

The robots here list their joints in an order that pinocchio (depth first, siblings by name)
and, for the interleaved quadruped, MuJoCo (link tree order) do not use inside.
"""

import mujoco
import numpy as np
import pytest
import torch
from robot_urdfs import (actuated_joints_in_file_order, quadruped_joints_interleaved,
                         quadruped_legs_reordered, two_arm_urdf)

from mbrl_ros.robots.analytical import (AnalyticalConfig, AnalyticalDynamics,
                                        pinocchio_reference_step)
from mbrl_ros.robots.mujoco_builder import build_mujoco_model
from mbrl_ros.robots.robot_model import RobotModel
from mbrl_ros.robots.urdf_resolver import resolve_urdf

QUADRUPEDS = {"legs_rf_lf_rh_lh": quadruped_legs_reordered(("rf", "lf", "rh", "lh")),
              "joints_interleaved": quadruped_joints_interleaved()}
SAMPLES = 10


def _mujoco_order(model: mujoco.MjModel) -> tuple:
    return tuple(model.joint(i).name for i in range(model.njnt)
                 if model.jnt_type[i] != mujoco.mjtJoint.mjJNT_FREE)


def _pinocchio_order(robot: RobotModel) -> tuple:
    return tuple(robot.model.names[2 if robot.floating_base else 1:])


def _set_mujoco_joints(model, data, names, positions, velocities=None):
    """Write canonical joint values into MuJoCo's qpos / qvel by joint name."""
    for i, name in enumerate(names):
        data.qpos[model.joint(name).qposadr[0]] = positions[i]
        if velocities is not None:
            data.qvel[model.joint(name).dofadr[0]] = velocities[i]


@pytest.mark.parametrize("variant", sorted(QUADRUPEDS))
def test_quadruped_joint_names_are_canonical_in_every_model(variant):
    xml = QUADRUPEDS[variant]
    canonical = actuated_joints_in_file_order(xml)
    model, info = build_mujoco_model(xml)
    robot = RobotModel(resolve_urdf(xml))
    assert robot.floating_base and info.floating_base
    assert info.urdf.joint_names == tuple(info.urdf.joint_limits) == canonical
    assert info.joint_names == robot.joint_names == canonical
    assert _pinocchio_order(robot) != canonical  # the test means something
    if variant == "joints_interleaved":
        assert _mujoco_order(model) != canonical
    for i, joint in enumerate(canonical):  # actuator i drives canonical joint i
        assert model.joint(int(model.actuator_trnid[i, 0])).name == joint
    limits = np.array([[info.urdf.joint_limits[j].lower, info.urdf.joint_limits[j].upper]
                       for j in canonical])
    np.testing.assert_array_equal(info.position_limits, limits)
    np.testing.assert_array_equal(robot.position_lower, limits[:, 0])
    np.testing.assert_array_equal(robot.position_upper, limits[:, 1])


@pytest.mark.parametrize("variant", sorted(QUADRUPEDS))
def test_same_joint_configuration_puts_the_feet_in_the_same_place(variant):
    model, info = build_mujoco_model(QUADRUPEDS[variant])
    robot = RobotModel(info.urdf)
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    for _ in range(SAMPLES):
        joints = rng.uniform(robot.position_lower, robot.position_upper)
        quat = rng.normal(size=4)
        base = np.concatenate([rng.uniform(-1, 1, 3), quat / np.linalg.norm(quat)])
        data.qpos[:7] = base
        _set_mujoco_joints(model, data, info.joint_names, joints)
        mujoco.mj_kinematics(model, data)
        q = robot.full_configuration(joints, base)
        np.testing.assert_allclose(robot.joint_positions(q), joints)
        for foot in info.foot_bodies:
            position, _ = robot.frame_pose(foot, q)
            np.testing.assert_allclose(data.body(foot).xpos, position, atol=1e-9)


@pytest.fixture(scope="module")
def two_arms():
    robot = RobotModel(resolve_urdf(two_arm_urdf()))
    assert robot.joint_names == actuated_joints_in_file_order(two_arm_urdf())
    assert _pinocchio_order(robot) != robot.joint_names  # the test means something
    return robot


def _samples(robot, num, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.uniform(robot.position_lower, robot.position_upper, (num, robot.num_joints))
    v = rng.normal(0.0, 1.0, (num, robot.num_joints))
    tau = rng.uniform(-1.2, 1.2, (num, robot.num_joints)) * robot.effort_limits
    return np.concatenate([q, v], 1), tau


@pytest.mark.parametrize("friction_velocity", [0.0, 0.05])
def test_branched_analytical_step_matches_pinocchio(two_arms, friction_velocity):
    config = AnalyticalConfig(dt=0.01, substeps=3, friction_velocity=friction_velocity)
    dynamics = AnalyticalDynamics(two_arms, config, dtype=torch.float64)
    state, action = _samples(two_arms, SAMPLES)
    batched = dynamics.step(torch.from_numpy(state), torch.from_numpy(action)).numpy()
    reference = np.stack([pinocchio_reference_step(two_arms, s, a, config)
                          for s, a in zip(state, action)])
    np.testing.assert_allclose(batched, reference, atol=1e-9, rtol=0)


def test_branched_forward_dynamics_and_fk_are_canonical(two_arms):
    dynamics = AnalyticalDynamics(two_arms, dtype=torch.float64)
    state, action = _samples(two_arms, SAMPLES, seed=1)
    joints = two_arms.num_joints
    q, v = state[:, :joints], state[:, joints:]
    expected = np.stack([two_arms.joint_velocities(two_arms.forward_dynamics(
        two_arms.full_configuration(qi), two_arms.full_velocity(vi), ti))
        for qi, vi, ti in zip(q, v, action)])
    accel = dynamics.forward_dynamics(*(torch.from_numpy(x) for x in (q, v, action)))
    np.testing.assert_allclose(accel.numpy(), expected, atol=1e-9 * np.abs(expected).max())
    positions = dynamics.ee_position_batch(torch.from_numpy(q)).numpy()
    np.testing.assert_allclose(positions, np.stack([two_arms.ee_pose(qi)[0] for qi in q]),
                               atol=1e-12)


def test_branched_gravity_and_inertia_match_mujoco(two_arms):
    model, info = build_mujoco_model(two_arm_urdf())
    assert info.joint_names == two_arms.joint_names
    data = mujoco.MjData(model)
    dofs = [model.joint(name).dofadr[0] for name in info.joint_names]
    state, _ = _samples(two_arms, SAMPLES, seed=2)
    for joints in state[:, :two_arms.num_joints]:
        _set_mujoco_joints(model, data, info.joint_names, joints)
        mujoco.mj_forward(model, data)
        full = np.zeros((model.nv, model.nv))
        mujoco.mj_fullM(model, data, full)
        gravity, inertia = two_arms.gravity_and_inertia(joints)
        np.testing.assert_allclose(gravity, data.qfrc_bias[dofs], atol=1e-9)
        np.testing.assert_allclose(inertia, 1.0 / np.diag(np.linalg.inv(full))[dofs],
                                   rtol=1e-9)
        np.testing.assert_allclose(two_arms.mass_matrix(joints), full[np.ix_(dofs, dofs)],
                                   rtol=1e-9, atol=1e-12)


def test_branched_inverse_kinematics_returns_canonical_positions(two_arms):
    target = np.array([0.5, -0.3, 0.4, 0.2, -0.6, 0.05])
    position, _ = two_arms.ee_pose(target)
    result = two_arms.inverse_kinematics(position, initial_positions=0.9 * target)
    assert result.converged
    np.testing.assert_allclose(two_arms.ee_pose(result.joint_positions)[0], position,
                               atol=1e-3)
    left = [i for i, name in enumerate(two_arms.joint_names) if name.startswith("left")]
    np.testing.assert_allclose(result.joint_positions[left], 0.9 * target[left])  # untouched
