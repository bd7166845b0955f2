"""The robot-config generator and the robot-derived defaults behind it (no ROS)."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from mbrl_ros.cli import main as cli_main
from mbrl_ros.robots.config_generator import (SHARED, RobotConfigRequest, generate,
                                              template_comments)
from mbrl_ros.robots.defaults import (DefaultsConfig, arm_home, servo_gains, stand_postures)
from mbrl_ros.robots.robot_model import RobotModel
from mbrl_ros.training.config_file import read_node_parameters

REPO = Path(__file__).resolve().parents[2]
ARM = str(REPO / "urdf" / "arm7.urdf")
QUADRUPED = str(REPO / "urdf" / "quadruped12.urdf")


@pytest.fixture(scope="module")
def arm_config():
    return generate(RobotConfigRequest(urdf=ARM))


@pytest.fixture(scope="module")
def legged_config():
    return generate(RobotConfigRequest(urdf=QUADRUPED))


def test_gains_give_the_same_bandwidth_on_every_joint():
    robot = RobotModel.from_urdf(ARM)
    config = DefaultsConfig(bandwidth_hz=2.0, damping_ratio=0.8)
    home = arm_home(robot, config)
    gains = servo_gains(robot, home, config)
    _, inertia = robot.gravity_and_inertia(home)
    omega = np.sqrt(gains.kp / inertia)
    np.testing.assert_allclose(omega, 2 * np.pi * 2.0, rtol=1e-9)
    np.testing.assert_allclose(gains.kd / (2 * np.sqrt(gains.kp * inertia)), 0.8, rtol=1e-9)


def test_gains_are_capped_by_the_effort_limit():
    robot = RobotModel.from_urdf(ARM)
    config = DefaultsConfig(bandwidth_hz=50.0)
    gains = servo_gains(robot, arm_home(robot), config)
    np.testing.assert_allclose(gains.kp, robot.effort_limits / config.saturation_error_rad)
    assert set(gains.limited_by) == {"effort"}


def test_arm_home_is_raised_inside_the_central_ranges_and_deterministic():
    robot = RobotModel.from_urdf(ARM)
    home = arm_home(robot)
    np.testing.assert_array_equal(home, arm_home(robot))
    centre = 0.5 * (robot.position_lower + robot.position_upper)
    assert np.all(np.abs(home - centre) <= 0.25 * (robot.position_upper - robot.position_lower))
    position, _ = robot.ee_pose(home)
    assert position[2] >= DefaultsConfig().home_min_elevation * np.linalg.norm(position)


def test_stand_puts_the_feet_under_the_legs_at_the_stated_depth():
    robot = RobotModel.from_urdf(QUADRUPED, ee_frame=None)
    config = DefaultsConfig()
    postures = stand_postures(robot, robot.foot_links, config)
    zero = robot.full_configuration(np.zeros(robot.num_joints))
    for foot, joints in postures.legs.items():
        first = robot.frame_pose(robot.joint_names[joints[0]], zero)[0]
        hanging = robot.frame_pose(foot, zero)[0]
        length = np.linalg.norm(first - hanging)
        standing = robot.frame_pose(foot, robot.full_configuration(postures.stand))[0]
        np.testing.assert_allclose(standing[:2], hanging[:2], atol=1e-3)
        assert standing[2] == pytest.approx(first[2] - config.stand_fraction * length, abs=1e-3)
        crouched = robot.frame_pose(foot, robot.full_configuration(postures.crouch))[0]
        assert crouched[2] > standing[2]  # crouched feet are higher under the body
    assert np.all(postures.stand >= robot.position_lower)
    assert np.all(postures.stand <= robot.position_upper)
    assert np.all(postures.load_torque > 0)


def test_arm_config_has_every_per_joint_list_from_the_urdf(arm_config):
    robot = RobotModel.from_urdf(ARM)
    joints = robot.num_joints
    p = arm_config.parameters
    assert arm_config.kind == "arm"
    for node, key in [("sim", "position_kp"), ("sim", "position_kv"), ("sim", "home_positions"),
                      ("planner", "servo_kp"), ("planner", "servo_kd"),
                      ("trainer", "servo_kp"), ("safety_gate", "servo_kp")]:
        assert len(p[node][key]) == joints, (node, key)
    assert p["planner"]["servo_kp"] == p["sim"]["position_kp"] == p["trainer"]["servo_kp"]
    assert p["safety_gate"]["joints"] == list(robot.joint_names)
    assert p["planner"]["ee_frame"] == "ee_link" == p["sim"]["ee_link"]
    assert len(p["planner"]["disturbance"]["max_offset"]) == 2 * joints
    assert p["trainer"]["ensemble"]["relative_action"] == list(range(joints))


def test_legged_config_derives_stand_targets_and_push_from_the_robot(legged_config):
    robot = RobotModel.from_urdf(QUADRUPED, ee_frame=None)
    p = legged_config.parameters
    assert legged_config.kind == "legged"
    low = np.array(p["planner"]["planner"]["action_low"])
    high = np.array(p["planner"]["planner"]["action_high"])
    posture, crouch = np.array(p[SHARED]["cost"]["posture"]), np.array(
        p["planner"]["stand"]["crouch"])
    assert np.all(low <= np.minimum(posture, crouch))
    assert np.all(high >= np.maximum(posture, crouch))
    assert np.all(low >= robot.position_lower) and np.all(high <= robot.position_upper)
    assert p["sim"]["home_positions"] == p["planner"]["stand"]["crouch"]
    assert p["sim"]["push_force"] == pytest.approx(0.45 * robot.total_mass() * 9.81, abs=0.1)
    assert 0.15 < p[SHARED]["cost"]["height_target"] < 0.5


def test_yaml_round_trips_and_keeps_the_template_comments(arm_config, tmp_path):
    text = arm_config.to_yaml()
    loaded = yaml.safe_load(text)
    assert loaded["/**/planner"]["ros__parameters"] == arm_config.parameters["planner"]
    template = (REPO / "config" / "arm7.yaml").read_text()
    for (node, key), lines in template_comments(template).items():
        derived = key in ("position_kp", "servo_kp", "home_positions")
        if (node, key) in arm_config.comments and not derived:
            assert f"# {lines[0]}" in text
    assert "# kp = effective inertia at home" in text


def test_command_line_writes_the_file_and_explains(tmp_path, capsys):
    out = tmp_path / "robot.yaml"
    assert cli_main(["robot-config", QUADRUPED, "--out", str(out)]) == 0
    assert "legged: 12 joints" in capsys.readouterr().err
    assert yaml.safe_load(out.read_text())["/**"]["ros__parameters"]["task"] == "stand"


def test_command_line_reports_bad_input_clearly(tmp_path, capsys):
    assert cli_main(["robot-config", str(tmp_path / "missing.urdf")]) == 2
    assert "missing.urdf" in capsys.readouterr().err


def test_arm_configs_carry_the_physical_mismatch_scaled_to_the_arm(arm_config):
    """The shipped arm config and every generated one: the same fractions (friction of the
    effort limits, lag, backlash, gain error) and 0.3 x the arm's own rated payload."""
    robot = RobotModel.from_urdf(ARM)
    shipped = yaml.safe_load((REPO / "config" / "arm7.yaml").read_text())
    shipped = shipped["/**/sim"]["ros__parameters"]
    generated = arm_config.parameters["sim"]
    expected = dict(friction_scale=1.0, damping_scale=1.0, coulomb_friction_fraction=0.05,
                    viscous_friction_fraction=0.02, actuator_lag_s=0.02,
                    backlash_rad=pytest.approx(np.deg2rad(0.5), abs=1e-4),
                    actuator_gain_scale=0.8)
    alignments = (yaml.safe_load((REPO / "config" / "arm7.yaml").read_text())[
        "/**/trainer"]["ros__parameters"]["alignment"],
        arm_config.parameters["trainer"]["alignment"])
    for alignment in alignments:  # a reset (the arm put back home) is never learned as motion
        assert alignment["reset_jump_threshold"] == pytest.approx(
            2 * np.max(robot.velocity_limits) / alignment["control_rate_hz"], abs=1e-4)
    for sim in (shipped, generated):
        assert {key: sim[key] for key in expected} == expected
        assert sim["payload_mass"] == pytest.approx(
            0.3 * DefaultsConfig().rated_payload_fraction * robot.total_mass(), abs=1e-3)


@pytest.mark.parametrize("name", ["arm7.yaml", "quadruped12.yaml", "generated arm",
                                  "generated legged"])
def test_planner_recovery_and_gate_trust_plans_on_the_same_numbers(name, arm_config,
                                                                   legged_config):
    if name.startswith("generated"):
        params = (arm_config if name.endswith("arm") else legged_config).parameters
    else:
        raw = yaml.safe_load((REPO / "config" / name).read_text())
        params = {key.removeprefix("/**/"): value["ros__parameters"]
                  for key, value in raw.items()}
    recovery, gate = params["planner"]["recovery"], params["safety_gate"]
    for key in ("disagreement_threshold", "disagreement_resume", "resume_ticks"):
        assert recovery[key] == gate[key], key


@pytest.mark.parametrize("name", ["arm7.yaml", "quadruped12.yaml", "generated arm",
                                  "generated legged"])
def test_planner_and_trainer_read_the_task_and_cost_from_one_shared_section(
        name, arm_config, legged_config, tmp_path):
    if name.startswith("generated"):
        path = tmp_path / "robot.yaml"
        config = arm_config if name.endswith("arm") else legged_config
        path.write_text(config.to_yaml())
    else:
        path = REPO / "config" / name
    raw = yaml.safe_load(path.read_text())
    task = "stand" if "legged" in name or "quadruped" in name else "reach"
    assert raw["/**"]["ros__parameters"]["task"] == task
    for node in ("planner", "trainer"):  # nowhere else, so they cannot differ
        assert not {"task", "cost"} & set(raw[f"/**/{node}"]["ros__parameters"]), node
    planner, trainer = (read_node_parameters(path, node) for node in ("planner", "trainer"))
    shared = {k: v for k, v in planner.items() if k == "task" or k.startswith("cost.")}
    assert shared["task"] == task and len(shared) > 3
    assert {k: trainer[k] for k in shared} == shared
    if name.startswith("generated"):
        assert '# Read by every node ("/**")' in path.read_text()
