"""The resolver normalises a URDF once for every model: mimic joints, inertias, limits."""

import math

import mujoco
import numpy as np
import pinocchio as pin
import pytest

from mbrl_ros.robots.mujoco_builder import build_mujoco_model
from mbrl_ros.robots.robot_model import RobotModel
from mbrl_ros.robots.urdf_resolver import (INERTIA_EIGENVALUE_FLOOR, MASSLESS_LINK_MASS,
                                           physical_inertia, resolve_urdf)

FINGER_LOCK = 0.01
"""Lower limit of the mimic finger: its locked position (0 clipped into the limits)."""
TWIST_LOCK = 0.2
"""Lower limit of the mimic revolute joint."""


def _inertial(ixx=0.01, iyy=0.01, izz=0.01, ixy=0.0, ixz=0.0, iyz=0.0, mass=1.0):
    return (f'<inertial><origin xyz="0 0 0.05" rpy="0.1 0.2 0.3"/><mass value="{mass}"/>'
            f'<inertia ixx="{ixx}" iyy="{iyy}" izz="{izz}" ixy="{ixy}" ixz="{ixz}" '
            f'iyz="{iyz}"/></inertial>')


def _robot(links: str, joints: str) -> str:
    """world - base - (revolute j1) - arm, plus ``links`` and ``joints``."""
    return (f'<robot name="t"><link name="world"/>'
            f'<joint name="fix" type="fixed"><parent link="world"/><child link="base"/>'
            f'</joint><link name="base">{_inertial()}</link>'
            f'<joint name="j1" type="revolute"><parent link="base"/><child link="arm"/>'
            f'<origin xyz="0 0 0.1"/><axis xyz="0 1 0"/>'
            f'<limit lower="-1" upper="1" velocity="2" effort="5"/></joint>'
            f'{links}{joints}</robot>')


GRIPPER = _robot(
    f'<link name="arm">{_inertial()}</link><link name="finger1">{_inertial(mass=0.1)}</link>'
    f'<link name="finger2">{_inertial(mass=0.1)}</link>'
    f'<link name="twister">{_inertial(mass=0.1)}</link>',
    '<joint name="finger_joint1" type="prismatic"><parent link="arm"/>'
    '<child link="finger1"/><origin xyz="0 0.02 0.1"/><axis xyz="0 1 0"/>'
    '<limit lower="0" upper="0.04" velocity="0.2" effort="20"/></joint>'
    '<joint name="finger_joint2" type="prismatic"><parent link="arm"/>'
    '<child link="finger2"/><origin xyz="0 -0.02 0.1" rpy="0 0 0.5"/><axis xyz="0 -1 0"/>'
    f'<limit lower="{FINGER_LOCK}" upper="0.04" velocity="0.2" effort="20"/>'
    '<mimic joint="finger_joint1"/></joint>'
    '<joint name="twist" type="revolute"><parent link="arm"/><child link="twister"/>'
    '<origin xyz="0.1 0 0" rpy="0.3 0 0"/><axis xyz="0 0 1"/>'
    f'<limit lower="{TWIST_LOCK}" upper="1" velocity="1" effort="1"/>'
    '<mimic joint="j1" multiplier="2"/></joint>')


def test_mimic_joints_are_locked_the_same_way_in_every_model():
    resolved = resolve_urdf(GRIPPER)
    assert resolved.joint_names == ("j1", "finger_joint1")
    for name in ("finger_joint2", "twist"):
        assert any(f"'{name}' mimics" in warning for warning in resolved.warnings)
    model, info = build_mujoco_model(GRIPPER)
    assert model.neq == 0 and info.joint_names == resolved.joint_names
    robot = RobotModel(resolved)
    assert robot.joint_names == resolved.joint_names and robot.model.nq == 2
    data = mujoco.MjData(model)
    for joints in ([0.0, 0.0], [0.4, 0.03]):
        for name, value in zip(info.joint_names, joints):
            data.qpos[model.joint(name).qposadr[0]] = value
        mujoco.mj_kinematics(model, data)
        q = robot.full_configuration(np.array(joints))
        for link in ("finger2", "twister"):
            position, quat = robot.frame_pose(link, q)
            np.testing.assert_allclose(data.body(link).xpos, position, atol=1e-12)
            assert abs(abs(np.dot(data.body(link).xquat, quat)) - 1.0) < 1e-12
    # the locked positions are baked into the joint origins
    q = robot.full_configuration(np.zeros(2))
    arm_z = 0.1
    finger, _ = robot.frame_pose("finger2", q)
    direction = pin.rpy.rpyToMatrix(0, 0, 0.5) @ np.array([0.0, -1.0, 0.0])
    np.testing.assert_allclose(finger, [0, -0.02, arm_z + 0.1] + FINGER_LOCK * direction,
                               atol=1e-12)
    _, twisted = robot.frame_pose("twister", q)
    expected = pin.Quaternion(pin.rpy.rpyToMatrix(0.3, 0, 0)
                              @ pin.rpy.rpyToMatrix(0, 0, TWIST_LOCK))
    assert abs(abs(np.dot(twisted, [expected.w, expected.x, expected.y, expected.z])) - 1) \
        < 1e-12


def _principal_moments(robot: RobotModel, link: str) -> np.ndarray:
    frame = robot.model.frames[robot.frame_id(link)]
    return np.linalg.eigvalsh(robot.model.inertias[frame.parentJoint].inertia)


@pytest.mark.parametrize("inertia", [
    dict(ixy=0.02),                                          # negative eigenvalue
    dict(ixx=1e-6, iyy=1e-6, izz=1e-6, ixy=1e-6, ixz=1e-6, iyz=1e-6),  # singular (go1 base)
    dict(ixx=0.01, iyy=0.01, izz=0.05),                      # triangle inequality violated
    dict(ixx=0.0, iyy=0.0, izz=0.0)])                        # massive point
def test_unphysical_inertia_is_repaired_for_mujoco_and_pinocchio_alike(inertia):
    urdf = _robot(f'<link name="arm">{_inertial(**inertia)}</link>', "")
    resolved = resolve_urdf(urdf)
    assert any("link 'arm': inertia is not physical" in w for w in resolved.warnings)
    model, info = build_mujoco_model(urdf)  # MuJoCo refused the original
    robot = RobotModel(info.urdf)
    moments = _principal_moments(robot, "arm")
    assert moments[0] >= INERTIA_EIGENVALUE_FLOOR * moments[2] * (1 - 1e-9)
    assert moments[0] + moments[1] >= moments[2] * (1 - 1e-9)
    np.testing.assert_allclose(np.sort(model.body("arm").inertia), moments, rtol=1e-6)
    assert not resolve_urdf(resolved.xml).warnings  # repaired once and for all


def test_physical_inertia_keeps_physical_and_repairs_minimally():
    assert physical_inertia(np.diag([0.01, 0.02, 0.025]), 1.0) is None
    repaired = physical_inertia(np.diag([0.01, 0.01, 0.05]), 1.0)
    np.testing.assert_allclose(np.linalg.eigvalsh(repaired), [0.01 + 0.01, 0.01 + 0.01, 0.04])
    rotation = pin.rpy.rpyToMatrix(0.3, -0.2, 0.9)
    rotated = physical_inertia(rotation @ np.diag([0.01, 0.01, 0.05]) @ rotation.T, 1.0)
    np.testing.assert_allclose(rotated, rotation @ repaired @ rotation.T, atol=1e-15)


def test_moving_link_without_mass_gets_a_small_one():
    urdf = _robot('<link name="arm"/><link name="tip"/>',
                  '<joint name="tip_fix" type="fixed"><parent link="arm"/><child link="tip"/>'
                  "</joint>")
    resolved = resolve_urdf(urdf)
    assert any("link 'arm' moves but has no mass" in w for w in resolved.warnings)
    model, info = build_mujoco_model(urdf)
    assert model.body("arm").mass[0] == pytest.approx(MASSLESS_LINK_MASS)
    assert RobotModel(info.urdf).total_mass() == pytest.approx(1.0 + MASSLESS_LINK_MASS)
    # a massless link on a massive rigid group is left alone (MuJoCo accepts it)
    carried = _robot(f'<link name="arm"/><link name="tip">{_inertial()}</link>',
                     '<joint name="tip_fix" type="fixed"><parent link="arm"/>'
                     '<child link="tip"/></joint>')
    assert not resolve_urdf(carried).warnings
    build_mujoco_model(carried)


def test_negative_mass_is_refused():
    with pytest.raises(ValueError, match="link 'arm' has mass -1"):
        resolve_urdf(_robot(f'<link name="arm">{_inertial(mass=-1.0)}</link>', ""))


def test_limits_come_from_pinocchio_and_missing_bounds_are_infinite():
    urdf = _robot(
        f'<link name="arm">{_inertial()}</link><link name="slider">{_inertial()}</link>'
        f'<link name="wheel">{_inertial()}</link>',
        '<joint name="slide" type="prismatic"><parent link="arm"/><child link="slider"/>'
        '<axis xyz="0 0 1"/><limit effort="30" velocity="0.5"/>'
        '<dynamics damping="0.7" friction="0.3"/></joint>'
        '<joint name="spin" type="continuous"><parent link="slider"/><child link="wheel"/>'
        '<axis xyz="0 0 1"/><limit effort="3" velocity="9"/></joint>')
    limits = resolve_urdf(urdf).joint_limits
    assert list(limits) == ["j1", "slide", "spin"]
    assert (limits["j1"].lower, limits["j1"].upper) == (-1.0, 1.0)
    assert (limits["j1"].velocity, limits["j1"].effort) == (2.0, 5.0)
    slide = limits["slide"]  # pinocchio reads the missing lower / upper as 0
    assert (slide.lower, slide.upper) == (-math.inf, math.inf)
    assert (slide.velocity, slide.effort, slide.damping, slide.friction) == (0.5, 30, 0.7, 0.3)
    spin = limits["spin"]
    assert (spin.lower, spin.upper, spin.velocity, spin.effort) == (-math.inf, math.inf, 9, 3)
    build_mujoco_model(urdf)  # MuJoCo takes continuous joints (a hinge without limits)
    robot = RobotModel(resolve_urdf(urdf))  # pinocchio: (cos, sin), nq=2 (test_continuous_joints)
    assert robot.continuous.tolist() == [False, False, True] and robot.model.nq == 4


@pytest.mark.parametrize("kind", ["floating", "planar"])
def test_multi_dof_joints_are_refused(kind):
    urdf = _robot(f'<link name="arm">{_inertial()}</link><link name="free">{_inertial()}'
                  "</link>", f'<joint name="loose" type="{kind}"><parent link="arm"/>'
                  '<child link="free"/></joint>')
    with pytest.raises(ValueError, match=f"'loose' has unsupported type '{kind}'"):
        resolve_urdf(urdf)


def test_pinocchio_parse_errors_are_value_errors():
    urdf = _robot(f'<link name="arm">{_inertial()}</link><link name="x"/>',
                  '<joint name="bad" type="revolute"><parent link="arm"/><child link="x"/>'
                  '<limit lower="0" upper="1"/></joint>')  # no effort / velocity
    with pytest.raises(ValueError, match="pinocchio cannot read the URDF"):
        resolve_urdf(urdf)
