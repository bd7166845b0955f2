"""The planner node takes an announced GP dynamics checkpoint (``model_kind: gp``), plans with
it, and the plan's disagreement (the GP's posterior spread) is what the safety gate judges; a
GP checkpoint of the wrong sizes is refused."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

pytest.importorskip("mbrl_ros.msg", reason="custom messages not built (source scripts/env.sh)")

from mbrl_ros.core.gp_dynamics import GPDynamics, GPDynamicsConfig  # noqa: E402
from mbrl_ros.core.types import TransitionBatch  # noqa: E402
from mbrl_ros.msg import ModelUpdate  # noqa: E402
from mbrl_ros.nodes.planner_node import PlannerNode  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = pathlib.Path(__file__).resolve().parents[2]
ARM_URDF = REPO / "urdf" / "arm7.urdf"
ARM_CONFIG = REPO / "config" / "arm7.yaml"
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
SMALL_GP = GPDynamicsConfig(num_members=3, iterations=10, num_random_features=32)


def gp_checkpoint(path: pathlib.Path, state_dim: int = 14, action_dim: int = 7) -> str:
    """A GP fitted on a few transitions around the arm's home pose (position targets that
    pull the joints toward them); returns the checkpoint's sha256."""
    rng = np.random.default_rng(0)
    joints = action_dim
    state = np.zeros((60, state_dim), np.float32)
    state[:, :joints] = HOME[:joints] + rng.normal(0.0, 0.05, (60, joints))
    state[:, joints:2 * joints] = rng.normal(0.0, 0.1, (60, joints))
    action = (state[:, :joints] + rng.normal(0.0, 0.05, (60, joints))).astype(np.float32)
    next_state = state.copy()
    next_state[:, :joints] += 0.04 * state[:, joints:2 * joints]
    next_state[:, joints:2 * joints] += 0.5 * (action - state[:, :joints])
    model = GPDynamics(state_dim, action_dim, SMALL_GP)
    model.fit(TransitionBatch(state, action, next_state), seed=0)
    return model.save(str(path), {"model_kind": "gp"})


def test_the_planner_node_plans_with_an_announced_gp_and_the_gate_sees_its_spread(
        ros_context, tmp_path):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    good, wrong = model_dir / "model_000001.mbrl", model_dir / "model_000002.mbrl"
    good_sha, wrong_sha = gp_checkpoint(good), gp_checkpoint(wrong, state_dim=12, action_dim=6)
    node = PlannerNode(context=ros_context, cli_args=[
        "--ros-args", "--params-file", str(ARM_CONFIG), "-p", f"urdf:={ARM_URDF}",
        "-p", f"model_dir:={model_dir}", "-p", "visualize_every:=0",
        "-p", "planner.num_samples:=32", "-p", "planner.horizon:=5",
        "-p", "planner.num_iterations:=1"])
    try:
        node._load_model(ModelUpdate(version=1, checkpoint_path=str(good), sha256=good_sha,
                                     model_kind="gp"))
        assert node.refused_models == 0
        model, version = node.learned_model
        assert version == 1 and isinstance(model, GPDynamics) and model.fitted
        node._load_model(ModelUpdate(version=2, checkpoint_path=str(wrong), sha256=wrong_sha,
                                     model_kind="gp"))
        assert node.refused_models == 1 and node.learned_model[1] == 1
        node._apply_pending()
        dynamics = node.controller.planner.dynamics  # the disturbance offset wraps it
        assert getattr(dynamics, "model", dynamics) is model
        node.controller.set_goal(np.array([0.4, 0.1, 0.5]))
        step = node.controller.step(HOME, np.zeros(7))
        assert not step.exploring and step.plan is not None and not step.failed
        spread = step.plan.disagreement.detach().cpu().numpy()
        assert spread.size > 0 and (spread > 0.0).all()  # the GP's posterior spread
        assert step.disagreement >= float(spread.max()) > 0.0  # what the gate judges
    finally:
        node.destroy_node()
