"""The joint servo nominal model (position-controlled arm) against its ODE and MuJoCo."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl_ros.robots.mujoco_builder import BuildOptions
from mbrl_ros.tasks.reach import ReachWarmStart, load_robot, nominal_dynamics
from mbrl_ros.robots.servo_model import JointServoModel, ServoConfig
from mbrl_ros.robots.simulator import Simulator, SimulatorConfig

ARM = Path(__file__).resolve().parents[2] / "urdf" / "arm7.urdf"
KP = (400.0, 500.0, 350.0, 250.0, 60.0, 40.0, 20.0)
KD = (40.0, 50.0, 35.0, 25.0, 6.0, 4.0, 2.0)
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
PERIOD = 0.04


@pytest.fixture(scope="module")
def robot():
    return load_robot(str(ARM))


def _integrate_servo_ode(robot, q, v, target, steps=20000):
    """Semi-implicit Euler of ``M(q) qdd = Kp (u - q) - (Kd + B) qd`` in tiny steps, with ``M``
    at the start pose (what the model linearises)."""
    mass_inverse = np.linalg.inv(robot.mass_matrix(q))
    h = PERIOD / steps
    for _ in range(steps):
        torque = np.array(KP) * (target - q) - (np.array(KD) + robot.damping) * v
        v = v + h * mass_inverse @ torque
        q = q + h * v
    return np.concatenate([q, v])


def test_one_step_matches_a_fine_integration_of_the_coupled_servo_ode(robot):
    """Each sample linearised at its own pose; the operating point shares one pose."""
    model = JointServoModel(robot, ServoConfig(KP, KD), PERIOD)
    rng = np.random.default_rng(0)
    starts = [(HOME + rng.uniform(-0.6, 0.6, 7), rng.uniform(-0.5, 0.5, 7)) for _ in range(2)]
    targets = [q + rng.uniform(-0.3, 0.3, 7) for q, _ in starts]
    state = torch.tensor(np.array([np.concatenate(s) for s in starts]), dtype=torch.float32)
    action = torch.tensor(np.array(targets), dtype=torch.float32)
    expected = [_integrate_servo_ode(robot, q, v, u) for (q, v), u in zip(starts, targets)]
    np.testing.assert_allclose(model.step(state, action).numpy(), np.array(expected),
                               atol=2e-3)
    model.set_operating_point(starts[0][0])  # both samples now use the first pose's M
    shared = model.step(state, action).numpy()
    np.testing.assert_allclose(shared[0], expected[0], atol=2e-3)
    assert np.abs(shared[1] - expected[1]).max() > 1e-2  # M(pose 0) is not M(pose 1)
    model.set_operating_point(None)
    np.testing.assert_allclose(model.step(state, action).numpy(), np.array(expected),
                               atol=2e-3)


def test_targets_are_clipped_and_bad_inputs_refused(robot):
    model = JointServoModel(robot, ServoConfig((100.0,), (5.0,)), PERIOD)
    state = torch.zeros(2, 14)
    far = model.step(state, torch.full((2, 7), 50.0))
    at_limit = model.step(state, torch.tensor(robot.position_upper, dtype=torch.float32)
                          .expand(2, 7))
    torch.testing.assert_close(far, at_limit)
    with pytest.raises(ValueError, match="action"):
        model.step(state, torch.zeros(2, 6))
    with pytest.raises(ValueError, match="1 or 7"):
        JointServoModel(robot, ServoConfig((1.0, 2.0), (5.0,)), PERIOD)
    with pytest.raises(ValueError, match="kp must be > 0"):
        JointServoModel(robot, ServoConfig((0.0,), (5.0,)), PERIOD)
    with pytest.raises(ValueError, match="servo gains"):
        nominal_dynamics(robot, PERIOD, 1, torch.device("cpu"), command_mode="position")


def test_servo_model_predicts_the_simulated_position_controlled_arm(robot):
    """The coupled model predicts MuJoCo's servoed arm to a small fraction of the motion, and
    far better than the same servos on each joint's effective inertia alone (what the
    coupling through the mass matrix adds)."""
    sim = Simulator(str(ARM), BuildOptions(control_mode="position", position_kp=KP,
                                           position_kv=KD, gravity_compensation=True,
                                           home_positions=tuple(zip(robot.joint_names, HOME))),
                    config=SimulatorConfig(control_period=0.01))
    model = nominal_dynamics(robot, PERIOD, 1, torch.device("cpu"), command_mode="position",
                             servo=ServoConfig(KP, KD))
    rng = np.random.default_rng(1)
    errors, decoupled_errors, moves = [], [], []
    for _ in range(5):
        sim.reset()
        q0, v0, _ = sim.joint_state()
        target = q0 + rng.uniform(-0.15, 0.15, 7)
        sim.set_command(target)
        sim.step(4)
        q1, v1, _ = sim.joint_state()
        state = torch.tensor(np.concatenate([q0, v0])[None], dtype=torch.float32)
        predicted = model.step(state, torch.tensor(target[None], dtype=torch.float32))[0]
        errors.append(np.linalg.norm(predicted[:7].numpy() - q1))
        moves.append(np.linalg.norm(q1 - q0))
        inertia = robot.gravity_and_inertia(q0)[1]
        decoupled = _integrate_decoupled(robot, inertia, q0, v0, target)
        decoupled_errors.append(np.linalg.norm(decoupled[:7] - q1))
    assert np.sum(errors) < 0.1 * np.sum(moves)
    assert np.sum(errors) < 0.5 * np.sum(decoupled_errors)


def _integrate_decoupled(robot, inertia, q, v, target, steps=2000):
    h = PERIOD / steps
    for _ in range(steps):
        v = v + h * (np.array(KP) * (target - q) - (np.array(KD) + robot.damping) * v) / inertia
        q = q + h * v
    return np.concatenate([q, v])


def test_goal_seed_is_a_speed_limited_path_to_the_goal(robot):
    seed = ReachWarmStart(robot, PERIOD, speed_fraction=0.5)
    goal = robot.ee_pose(HOME + np.array([0.6, 0.3, 0.0, 0.3, 0.0, -0.2, 0.0]))[0]
    path = seed(HOME, goal, 60)
    assert path.shape == (60, 7)
    steps = np.abs(np.diff(np.vstack([HOME, path]), axis=0))
    assert np.all(steps <= 0.5 * robot.velocity_limits * PERIOD + 1e-9)
    assert np.linalg.norm(robot.ee_pose(path[-1])[0] - goal) < 1e-3
    np.testing.assert_allclose(seed(HOME, None, 4), np.repeat(HOME[None], 4, 0))


def test_residual_checkpoint_refuses_a_different_nominal(robot, tmp_path):
    from mbrl_ros.core.checkpoint import CheckpointError
    from mbrl_ros.core.ensemble import EnsembleConfig
    from mbrl_ros.core.residual import ResidualDynamics
    trained_on = JointServoModel(robot, ServoConfig(KP, KD), PERIOD)
    model = ResidualDynamics.create(trained_on, 14, 7, EnsembleConfig(num_members=2, num_elites=2,
                                                                      hidden_sizes=(8,)))
    path = tmp_path / "model.ckpt"
    model.save(str(path))
    ResidualDynamics.load(str(path), nominal=JointServoModel(robot, ServoConfig(KP, KD), PERIOD))
    with pytest.raises(CheckpointError, match="same model settings"):
        ResidualDynamics.load(str(path), nominal=JointServoModel(robot, ServoConfig((50.0,), KD),
                                                                 PERIOD))
    with pytest.raises(CheckpointError, match="same model settings"):
        ResidualDynamics.load(str(path), nominal=nominal_dynamics(robot, PERIOD, 1,
                                                                  torch.device("cpu")))


def test_step_is_differentiable_for_gradient_planners(robot):
    """iLQR and the gradient refinement differentiate the nominal model: its Jacobian in the
    targets matches finite differences (it is zero if the step runs without autograd)."""
    model = JointServoModel(robot, ServoConfig(KP, KD), PERIOD)
    state = torch.tensor(np.concatenate([HOME, np.zeros(7)]), dtype=torch.float64)[None]
    target = torch.tensor(HOME + 0.05, dtype=torch.float64)[None].requires_grad_(True)
    (jacobian,) = torch.autograd.grad(model.step(state.float(), target.float())[0, 0], target)
    step = 1e-3
    bumped = target.detach().clone()
    bumped[0, 0] += step
    with torch.no_grad():
        difference = (model.step(state.float(), bumped.float())[0, 0]
                      - model.step(state.float(), target.detach().float())[0, 0]) / step
    assert float(jacobian[0, 0]) > 0.0
    assert float(jacobian[0, 0]) == pytest.approx(float(difference), rel=0.05)
