"""Batched torch ABA dynamics and FK against pinocchio (ABA + the same integrator)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl_ros.robots.analytical import (AnalyticalConfig, AnalyticalDynamics,
                                        pinocchio_reference_step)
from mbrl_ros.robots.robot_model import RobotModel

URDF_DIR = Path(__file__).resolve().parents[2] / "urdf"


@pytest.fixture(scope="module")
def arm():
    return RobotModel.from_urdf(str(URDF_DIR / "arm7.urdf"))


def _samples(robot, num, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.uniform(robot.position_lower, robot.position_upper, (num, robot.num_joints))
    v = rng.normal(0.0, 1.0, (num, robot.num_joints))
    tau = rng.uniform(-1.2, 1.2, (num, robot.num_joints)) * robot.effort_limits  # some clipped
    return np.concatenate([q, v], 1), tau


@pytest.mark.parametrize("friction_velocity", [0.0, 0.05])
def test_step_matches_pinocchio_float64(arm, friction_velocity):
    config = AnalyticalConfig(dt=0.01, substeps=4, friction_velocity=friction_velocity)
    dynamics = AnalyticalDynamics(arm, config, dtype=torch.float64)
    state, action = _samples(arm, 32)
    batched = dynamics.step(torch.from_numpy(state), torch.from_numpy(action)).numpy()
    reference = np.stack([pinocchio_reference_step(arm, s, a, config)
                          for s, a in zip(state, action)])
    np.testing.assert_allclose(batched, reference, atol=1e-9, rtol=0)


def test_forward_dynamics_matches_aba_and_float32_is_close(arm):
    state, action = _samples(arm, 16, seed=1)
    action = np.clip(action, -arm.effort_limits, arm.effort_limits)
    q, v = state[:, :7], state[:, 7:]
    expected = np.stack([arm.forward_dynamics(qi, vi, ti) for qi, vi, ti in zip(q, v, action)])
    for dtype, tolerance in ((torch.float64, 1e-9), (torch.float32, 2e-3)):
        dynamics = AnalyticalDynamics(arm, dtype=dtype)
        accel = dynamics.forward_dynamics(*(torch.tensor(x, dtype=dtype) for x in (q, v, action)))
        scale = np.abs(expected).max()
        np.testing.assert_allclose(accel.numpy() / scale, expected / scale, atol=tolerance)


def test_ee_position_batch_matches_pinocchio(arm):
    dynamics = AnalyticalDynamics(arm, dtype=torch.float64)
    state, _ = _samples(arm, 64, seed=2)
    q = state[:, :7]
    batched = dynamics.ee_position_batch(torch.from_numpy(q)).numpy()
    expected = np.stack([arm.ee_pose(qi)[0] for qi in q])
    np.testing.assert_allclose(batched, expected, atol=1e-12)


def test_gravity_pulls_the_arm_down(arm):
    dynamics = AnalyticalDynamics(arm, AnalyticalConfig(dt=0.05), dtype=torch.float64)
    state = torch.zeros(1, 14, dtype=torch.float64)
    state[0, 1] = 1.0  # shoulder forward: gravity increases the angle
    state[0, 3] = -1.5
    nxt = dynamics.step(state, torch.zeros(1, 7, dtype=torch.float64))
    assert nxt[0, 8] > 0.0


def test_bad_inputs_are_rejected(arm):
    dynamics = AnalyticalDynamics(arm)
    with pytest.raises(ValueError, match="state"):
        dynamics.step(torch.zeros(4, 13), torch.zeros(4, 7))
    with pytest.raises(ValueError, match="action"):
        dynamics.step(torch.zeros(4, 14), torch.zeros(3, 7))
    with pytest.raises(ValueError, match="substeps"):
        AnalyticalDynamics(arm, AnalyticalConfig(substeps=0))
    quadruped = RobotModel.from_urdf(str(URDF_DIR / "quadruped12.urdf"), floating_base=True)
    with pytest.raises(ValueError, match="fixed-base"):
        AnalyticalDynamics(quadruped)


def test_step_and_end_effector_are_differentiable(arm):
    """The end-effector cost and the torque model carry gradients for gradient planners."""
    dynamics = AnalyticalDynamics(arm, dtype=torch.float64)
    state, action = _samples(arm, 2, seed=3)
    q = torch.from_numpy(state[:, :7]).requires_grad_(True)
    (grad_q,) = torch.autograd.grad(dynamics.ee_position_batch(q).sum(), q)
    assert float(grad_q.abs().sum()) > 0.0
    torque = torch.from_numpy(action).requires_grad_(True)
    (grad_tau,) = torch.autograd.grad(dynamics.step(torch.from_numpy(state), torque)[:, 7:].sum(),
                                      torque)
    assert float(grad_tau.abs().sum()) > 0.0
