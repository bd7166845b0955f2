"""Gravity compensation in the simulator and the analytical model agree: zero torque holds."""

import numpy as np
import torch

from mbrl_ros.robots.mismatch import MismatchConfig
from mbrl_ros.robots.mujoco_builder import BuildOptions
from mbrl_ros.tasks.reach import load_robot, nominal_dynamics
from mbrl_ros.robots.simulator import Simulator, SimulatorConfig

URDF = "urdf/arm7.urdf"
HOME = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)


def test_zero_torque_holds_with_compensation_and_falls_without():
    robot = load_robot(URDF)
    home = tuple(zip(robot.joint_names, HOME))
    drift = {}
    for compensated in (True, False):
        sim = Simulator(URDF, BuildOptions(gravity_compensation=compensated, home_positions=home),
                        MismatchConfig(), SimulatorConfig(control_period=0.01))
        start, _, _ = sim.joint_state()
        sim.set_command(np.zeros(7))
        sim.step(50)
        end, _, _ = sim.joint_state()
        drift[compensated] = np.abs(end - start).max()
    assert drift[True] < 1e-3 < 0.05 < drift[False]


def test_analytical_model_without_gravity_matches():
    robot = load_robot(URDF)
    state = torch.tensor([list(HOME) + [0.0] * 7], dtype=torch.float32)
    zero = torch.zeros(1, 7)
    held = nominal_dynamics(robot, 0.04, 1, torch.device("cpu"), gravity_compensated=True)
    falling = nominal_dynamics(robot, 0.04, 1, torch.device("cpu"))
    assert torch.allclose(held.step(state, zero), state, atol=1e-6)
    assert (falling.step(state, zero) - state).abs().max() > 1e-3


def test_effective_inertia_is_below_the_mass_matrix_diagonal():
    robot = load_robot(URDF)
    _, effective = robot.gravity_and_inertia(np.array(HOME))
    assert np.all(effective > 0)
    assert effective[0] < 1.416  # M_00 at home; coupling lowers what joint 1 alone sees
