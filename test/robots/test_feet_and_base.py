"""Feet, floating base and collision geometry: one rule for MuJoCo and pinocchio."""

import logging
import xml.etree.ElementTree as ET

import pytest
from robot_urdfs import ARM, LEGS, QUADRUPED, quadruped_legs_reordered, two_arm_urdf

from mbrl_ros.robots.mujoco_builder import BuildOptions, build_mujoco_model
from mbrl_ros.robots.robot_model import RobotModel
from mbrl_ros.robots.urdf_resolver import foot_links, longest_chain_tip, resolve_urdf

FEET = tuple(f"{leg}_foot" for leg in LEGS)
MISSING_MESH = "package://no_such_mesh_pkg/meshes/foot.stl"


def _quadruped_text() -> str:
    return QUADRUPED.read_text()


def _without(path, tags=(), names=()) -> str:
    """URDF text of ``path`` without the elements ``tags`` (anywhere) and the top-level
    links / joints named ``names``."""
    robot = ET.parse(path).getroot()
    for parent in list(robot.iter()):
        for child in list(parent):
            if child.tag in tags or (parent is robot and child.get("name") in names):
                parent.remove(child)
    return ET.tostring(robot, encoding="unicode")


def _both(xml: str, **options):
    """(MuJoCo build info, RobotModel) of one URDF text with the same foot options."""
    _, info = build_mujoco_model(xml, BuildOptions(**options))
    robot = RobotModel(resolve_urdf(xml), **options)
    assert robot.floating_base == info.floating_base
    if info.floating_base:
        assert robot.foot_links == info.foot_bodies
    return info, robot


def test_foot_pattern_is_case_insensitive():
    upper = _quadruped_text().replace('_foot"', '_FOOT"')
    info, robot = _both(upper)
    shouting = tuple(f"{leg}_FOOT" for leg in LEGS)
    assert info.floating_base and info.foot_bodies == shouting == robot.foot_links
    assert len(info.touch_sensors) == len(LEGS)
    case_sensitive = foot_links(resolve_urdf(upper), r"(?-i:.*_foot)")
    assert case_sensitive == shouting  # found by the contact rule instead


def test_unmatched_pattern_falls_back_to_the_lowest_contact_tips():
    toes = _quadruped_text().replace('_foot"', '_toe"')
    info, robot = _both(toes)
    expected = tuple(f"{leg}_toe" for leg in LEGS)
    assert info.floating_base and info.foot_bodies == expected == robot.foot_links
    assert info.touch_sensors == tuple(f"{foot}_touch" for foot in expected)
    assert foot_links(resolve_urdf(toes), None) == expected
    _, custom = _both(toes, foot_link_pattern=r"(lf|rh)_TOE")
    assert custom.foot_links == ("lf_toe", "rh_toe")


def test_arm_without_world_link_stays_fixed_and_says_why(caplog):
    loose = _without(ARM, names=("world", "arm_base_joint"))
    with caplog.at_level(logging.INFO, logger="mbrl_ros.robots.urdf_resolver"):
        info, robot = _both(loose)
    assert not info.floating_base and robot.foot_links == ()
    assert any("fixed base: root link 'arm_link0' is not 'world' but the robot has no feet"
               in record.getMessage() and record.levelno == logging.WARNING
               for record in caplog.records)
    info, robot = _both(loose, floating_base=True)  # still configurable
    assert info.floating_base and robot.model.nq == 7 + 7


def test_floating_robot_without_collision_geometry_is_refused():
    bare = _without(QUADRUPED, tags=("collision",))
    with pytest.raises(ValueError, match="has no collision geometry"):
        build_mujoco_model(bare)
    build_mujoco_model(bare, BuildOptions(floating_base=False))


def test_dropped_collision_mesh_is_an_error_for_a_floating_base(tmp_path, monkeypatch):
    monkeypatch.delenv("ROS_PACKAGE_PATH", raising=False)
    robot = ET.parse(QUADRUPED).getroot()
    foot = next(link for link in robot.iter("link") if link.get("name") == "lf_foot")
    geometry = foot.find("collision/geometry")
    geometry.remove(geometry.find("sphere"))
    ET.SubElement(geometry, "mesh", filename=MISSING_MESH)
    xml = ET.tostring(robot, encoding="unicode")
    resolved = resolve_urdf(xml)
    assert [(m.link, m.uri) for m in resolved.dropped_collision_meshes] == [
        ("lf_foot", MISSING_MESH)]
    assert foot_links(resolved, None) == FEET  # the foot stays contact-capable
    with pytest.raises(ValueError) as error:
        build_mujoco_model(xml, BuildOptions(search_paths=(str(tmp_path),)))
    message = str(error.value)
    assert "link 'lf_foot'" in message and MISSING_MESH in message
    assert "not found in search paths" in message and str(tmp_path) in message
    _, info = build_mujoco_model(xml, BuildOptions(floating_base=False))  # a warning only
    assert any(MISSING_MESH in warning for warning in info.urdf.warnings)


def test_total_mass_matches_mujoco():
    for path in (ARM, QUADRUPED):
        model, info = build_mujoco_model(str(path))
        robot = RobotModel(info.urdf)
        assert robot.total_mass() == pytest.approx(model.body_mass.sum(), rel=1e-12)
    assert RobotModel.from_urdf(str(ARM)).total_mass() == pytest.approx(19.23)


def test_longest_chain_tip_and_ties_in_file_order():
    assert RobotModel.from_urdf(str(ARM)).longest_chain_tip() == "ee_link"
    assert longest_chain_tip(resolve_urdf(str(QUADRUPED))) == "lf_foot"
    reordered = quadruped_legs_reordered(("rh", "lf", "lh", "rf"))
    assert longest_chain_tip(resolve_urdf(reordered)) == "rh_foot"
    assert longest_chain_tip(resolve_urdf(two_arm_urdf())) == "ee_link"


def test_missing_ee_frame_lists_the_frames():
    with pytest.raises(ValueError, match=r"ee frame 'gripper' is not in the URDF.*arm_link7"):
        RobotModel.from_urdf(str(ARM), ee_frame="gripper")
    assert RobotModel.from_urdf(str(QUADRUPED)).ee_frame_id is None  # default is optional
