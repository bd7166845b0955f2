"""Both shipped robots load in MuJoCo and pinocchio from the same URDF and agree on kinematics."""

from pathlib import Path

import mujoco
import numpy as np
import pinocchio as pin
import pytest

from mbrl_ros.robots.mujoco_builder import (EE_SITE, BuildOptions, build_mujoco_model)
from mbrl_ros.robots.robot_model import RobotModel

URDF_DIR = Path(__file__).resolve().parents[2] / "urdf"
ROBOTS = ["arm7.urdf", "quadruped12.urdf"]


def _random_base_pose(rng: np.random.Generator) -> np.ndarray:
    quat = rng.normal(size=4)
    return np.concatenate([rng.uniform(-1, 1, 3), quat / np.linalg.norm(quat)])


@pytest.mark.parametrize("urdf", ROBOTS)
def test_pinocchio_fk_matches_mujoco_body_poses(urdf):
    model, info = build_mujoco_model(str(URDF_DIR / urdf))
    robot = RobotModel(info.urdf, floating_base=info.floating_base)
    assert robot.joint_names == info.joint_names
    np.testing.assert_allclose(robot.effort_limits, info.effort_limits)
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    body_frames = [f for f in robot.model.frames
                   if f.type == pin.FrameType.BODY and f.name != "world"]
    assert len(body_frames) == model.nbody - 1  # every link is a body (no fusing)
    for _ in range(20):
        joints = rng.uniform(robot.position_lower, robot.position_upper)
        base = _random_base_pose(rng) if robot.floating_base else None
        data.qpos[:] = 0
        if robot.floating_base:
            data.qpos[:7] = base
        for name, value in zip(info.joint_names, joints):
            data.qpos[model.joint(name).qposadr[0]] = value
        mujoco.mj_kinematics(model, data)
        pin.framesForwardKinematics(robot.model, robot.data,
                                    robot.full_configuration(joints, base))
        for frame in body_frames:
            placement = robot.data.oMf[robot.model.getFrameId(frame.name)]
            body = data.body(frame.name)
            np.testing.assert_allclose(body.xpos, placement.translation, atol=1e-6)
            np.testing.assert_allclose(body.xmat.reshape(3, 3), placement.rotation, atol=1e-6)
        if info.ee_site:
            position, quat = robot.ee_pose(joints)
            np.testing.assert_allclose(data.site(EE_SITE).xpos, position, atol=1e-6)
            expected = np.zeros(4)
            mujoco.mju_mat2Quat(expected, data.site(EE_SITE).xmat)
            assert abs(abs(np.dot(expected, quat)) - 1.0) < 1e-6


def test_arm_is_fixed_base_with_effort_motors():
    model, info = build_mujoco_model(str(URDF_DIR / "arm7.urdf"))
    assert not info.floating_base and model.nq == 7 and model.nu == 7
    assert info.joint_names == tuple(f"arm_joint{i}" for i in range(1, 8))
    np.testing.assert_allclose(model.actuator_ctrlrange[:, 1], info.effort_limits)
    assert np.all(model.dof_damping > 0) and np.all(model.dof_frictionloss > 0)
    assert 14.0 < model.body_mass.sum() < 25.0


def test_quadruped_is_floating_with_imu_and_feet():
    standing = tuple((f"{leg}_{joint}_joint", value) for leg in ("lf", "lh", "rf", "rh")
                     for joint, value in (("thigh", 0.8), ("calf", -1.6)))
    model, info = build_mujoco_model(str(URDF_DIR / "quadruped12.urdf"),
                                     BuildOptions(control_mode="position",
                                                  home_positions=standing))
    assert info.floating_base and model.nq == 19 and model.nu == 12
    assert info.foot_bodies == ("lf_foot", "lh_foot", "rf_foot", "rh_foot")
    assert 12.0 <= model.body_mass.sum() <= 15.0
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, 0)
    for _ in range(300):
        mujoco.mj_step(model, data)
    touch = [data.sensor(name).data[0] for name in info.touch_sensors]
    assert all(force > 0 for force in touch)  # standing on four feet
    accel = data.sensor("imu_accel").data
    assert abs(np.linalg.norm(accel) - 9.81) < 1.5


def test_control_modes_and_bad_options():
    urdf = str(URDF_DIR / "arm7.urdf")
    model, info = build_mujoco_model(urdf, BuildOptions(control_mode="velocity"))
    np.testing.assert_allclose(model.actuator_ctrlrange[:, 1], info.velocity_limits)
    with pytest.raises(ValueError, match="control_mode"):
        build_mujoco_model(urdf, BuildOptions(control_mode="torque"))
    with pytest.raises(ValueError, match="ee_link"):
        build_mujoco_model(urdf, BuildOptions(ee_link="no_such_link"))
    with pytest.raises(ValueError, match="floating_base"):
        build_mujoco_model(urdf, BuildOptions(floating_base=True))


def test_inverse_kinematics_reaches_reachable_pose():
    robot = RobotModel.from_urdf(str(URDF_DIR / "arm7.urdf"))
    target = np.array([0.4, -0.5, 0.3, -2.0, 0.2, 1.8, 0.4])
    position, quat = robot.ee_pose(target)
    seed = np.array([0.0, 0.0, 0.0, -1.5, 0.0, 1.5, 0.0])
    result = robot.inverse_kinematics(position, quat, initial_positions=seed)
    assert result.converged
    reached, _ = robot.ee_pose(result.joint_positions)
    np.testing.assert_allclose(reached, position, atol=1e-3)
    assert np.all(result.joint_positions >= robot.position_lower)
    assert np.all(result.joint_positions <= robot.position_upper)
    far = robot.inverse_kinematics(np.array([3.0, 0.0, 0.5]))  # out of reach
    assert not far.converged
    assert np.all(far.joint_positions <= robot.position_upper)
