"""ROS-free simulator: commands, validation, reset, model mismatch, pushes, trajectories."""

from pathlib import Path

import numpy as np
import pytest

from mbrl_ros.robots.mismatch import MismatchConfig
from mbrl_ros.robots.mujoco_builder import BuildOptions
from mbrl_ros.robots.simulator import Simulator, SimulatorConfig
from mbrl_ros.robots.trajectory import JointTrajectory

URDF_DIR = Path(__file__).resolve().parents[2] / "urdf"
ARM = str(URDF_DIR / "arm7.urdf")
QUADRUPED = str(URDF_DIR / "quadruped12.urdf")


def test_effort_command_moves_joint_and_bad_commands_are_refused():
    sim = Simulator(ARM)
    sim.set_command(np.full(7, 5.0))
    with pytest.raises(ValueError, match="NaN"):
        sim.set_command(np.array([np.nan] * 7))
    with pytest.raises(ValueError, match="expected 7"):
        sim.set_command(np.zeros(6))
    start, _, _ = sim.joint_state()
    sim.step(10)
    positions, velocities, efforts = sim.joint_state()
    assert sim.time == pytest.approx(0.1)
    np.testing.assert_allclose(efforts, 5.0)  # the last valid command is held
    assert positions[0] > start[0] and velocities[0] > 0  # +5 Nm on the vertical axis
    sim.set_command(np.full(7, 1e3))  # clipped to the effort limits
    np.testing.assert_allclose(sim.data.ctrl, sim.info.effort_limits)
    sim.reset()
    assert sim.time == pytest.approx(0.1)  # time runs on: it is the graph's clock
    np.testing.assert_allclose(sim.joint_state()[0], start)


def test_subset_command_by_name():
    sim = Simulator(ARM)
    indices = sim.joint_indices(["arm_joint7", "arm_joint1"])
    sim.set_command(np.array([1.0, 2.0]), indices)
    assert sim.data.ctrl[6] == 1.0 and sim.data.ctrl[0] == 2.0
    with pytest.raises(ValueError, match="unknown"):
        sim.joint_indices(["arm_joint8"])


def test_mismatch_changes_mass_friction_gain():
    nominal = Simulator(ARM)
    changed = Simulator(ARM, mismatch=MismatchConfig(friction_scale=2.0, damping_scale=0.5,
                                                     payload_mass=1.5, actuator_gain_scale=0.8))
    assert changed.model.body_mass.sum() == pytest.approx(nominal.model.body_mass.sum() + 1.5)
    np.testing.assert_allclose(changed.model.dof_frictionloss, 2 * nominal.model.dof_frictionloss)
    np.testing.assert_allclose(changed.model.dof_damping, 0.5 * nominal.model.dof_damping)
    changed.set_command(np.full(7, 5.0))
    changed.step(1)
    np.testing.assert_allclose(changed.joint_state()[2], 4.0)
    with pytest.raises(ValueError, match="payload_mass"):
        MismatchConfig(payload_mass=-1.0).validate()


READY = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)  # every joint away from its limits
POSITION = BuildOptions(control_mode="position", position_kp=(400.0,), position_kv=(40.0,),
                        gravity_compensation=True,
                        home_positions=tuple((f"arm_joint{i + 1}", q)
                                             for i, q in enumerate(READY)))


def test_friction_in_proportion_to_the_effort_limits():
    nominal = Simulator(ARM)
    changed = Simulator(ARM, mismatch=MismatchConfig(friction_scale=2.0, damping_scale=0.5,
                                                     coulomb_friction_fraction=0.05,
                                                     viscous_friction_fraction=0.02))
    efforts = changed.info.effort_limits
    np.testing.assert_allclose(changed.model.dof_frictionloss,
                               2 * nominal.model.dof_frictionloss + 0.05 * efforts)
    np.testing.assert_allclose(changed.model.dof_damping,
                               0.5 * nominal.model.dof_damping + 0.02 * efforts)


def test_actuator_lag_delays_the_command_and_reset_starts_settled():
    step_size = -0.1

    def moved(lag):
        sim = Simulator(ARM, POSITION, MismatchConfig(actuator_lag_s=lag))
        start = sim.joint_state()[0]
        sim.step(20)  # a lagged actuator starts on its home command: nothing moves
        np.testing.assert_allclose(sim.joint_state()[0], start, atol=1e-3)
        sim.set_command(start + step_size)
        sim.step(3)
        early = sim.joint_state()[0] - start
        sim.step(100)
        return early, sim.joint_state()[0] - start

    early_now, late_now = moved(0.0)
    early_lag, late_lag = moved(0.05)
    assert abs(early_lag[0]) < 0.5 * abs(early_now[0])  # 30 ms after the step: well behind
    np.testing.assert_allclose(late_lag, late_now, atol=2e-3)  # the same end point


def test_backlash_leaves_the_joint_short_by_half_the_play_after_a_reversal():
    play = 0.02
    sim = Simulator(ARM, POSITION, MismatchConfig(backlash_rad=play))
    start = sim.joint_state()[0]
    np.testing.assert_allclose(sim.data.ctrl, start)  # no offset from the reset
    sim.set_command(start - 0.1)  # down: the target trails the command by half the play
    np.testing.assert_allclose(sim.data.ctrl, start - 0.1 + play / 2)
    sim.set_command(start - 0.1 + play / 2)  # back within the play: nothing moves
    np.testing.assert_allclose(sim.data.ctrl, start - 0.1 + play / 2)
    sim.set_command(start - 0.2)  # on down, then back up past the play
    sim.set_command(start - 0.1)
    np.testing.assert_allclose(sim.data.ctrl, start - 0.1 - play / 2)
    sim.step(100)
    np.testing.assert_allclose(sim.joint_state()[0][:4], (start - 0.1 - play / 2)[:4],
                               atol=5e-3)
    sim.reset()
    np.testing.assert_allclose(sim.data.ctrl, start)
    effort = Simulator(ARM, mismatch=MismatchConfig(backlash_rad=play))  # torque: no play
    effort.set_command(np.full(7, 1.0))
    np.testing.assert_allclose(effort.data.ctrl, 1.0)


def test_position_trajectory_is_tracked():
    sim = Simulator(ARM, BuildOptions(control_mode="position", position_kp=(400.0,),
                                      position_kv=(40.0,)))
    start = sim.joint_state()[0]
    lower, upper = sim.info.position_limits.T
    goal = np.clip(start + 0.2, lower, upper - 0.1)
    sim.set_trajectory(JointTrajectory(sim.time, np.array([0.0, 0.5]), np.stack([start, goal])))
    sim.step(150)
    np.testing.assert_allclose(sim.joint_state()[0], goal, atol=0.05)
    with pytest.raises(ValueError, match="increasing"):
        JointTrajectory(0.0, np.array([0.5, 0.5]), np.zeros((2, 7)))


def test_quadruped_stands_reports_imu_odom_and_gets_pushed():
    standing = tuple((f"{leg}_{joint}_joint", value) for leg in ("lf", "lh", "rf", "rh")
                     for joint, value in (("thigh", 0.8), ("calf", -1.6)))
    build = BuildOptions(control_mode="position", home_positions=standing)
    quiet = Simulator(QUADRUPED, build)
    pushed = Simulator(QUADRUPED, build, MismatchConfig(push_rate_hz=20.0, push_force=80.0),
                       SimulatorConfig(seed=3))
    for sim in (quiet, pushed):
        sim.set_command(sim.joint_state()[0])
        sim.step(50)
    position, quat, linear, angular = quiet.base_state()
    assert 0.2 < position[2] < 0.4 and abs(quat[0]) > 0.99
    assert np.all(quiet.foot_contacts() > 0)
    imu_quat, gyro, accel = quiet.imu()
    np.testing.assert_allclose(imu_quat, quat, atol=1e-3)  # sensors lag one step
    assert abs(accel[2] - 9.81) < 1.0
    drift = np.linalg.norm(pushed.base_state()[0][:2] - quiet.base_state()[0][:2])
    assert drift > 0.01
    with pytest.raises(ValueError, match="floating"):
        Simulator(ARM).base_state()
