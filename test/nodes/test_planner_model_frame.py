"""The planner plans the stand task with the loaded model in its heading frame (as the trainer
trains it) and the reach task with the model as loaded."""

from __future__ import annotations

import pathlib

import pytest

pytest.importorskip("mbrl_ros.msg", reason="custom messages not built (source scripts/env.sh)")

from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble  # noqa: E402
from mbrl_ros.msg import ModelUpdate  # noqa: E402
from mbrl_ros.nodes.planner_node import PlannerNode, planning_model  # noqa: E402
from mbrl_ros.tasks.stand import HeadingFrameModel, StandLayout  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
QUADRUPED_URDF = REPO / "urdf" / "quadruped12.urdf"
QUADRUPED_CONFIG = REPO / "config" / "quadruped12.yaml"
JOINTS = 12
TINY = EnsembleConfig(num_members=2, num_elites=1, hidden_sizes=(8,))


def test_planning_model_wraps_the_stand_tasks_model_only():
    model = ProbabilisticEnsemble(StandLayout(JOINTS).state_dim, JOINTS, TINY, "cpu", 0)
    wrapped = planning_model(model, "stand", JOINTS)
    assert isinstance(wrapped, HeadingFrameModel) and wrapped.model is model
    assert planning_model(model, "reach", JOINTS) is model


def test_the_stand_planner_node_plans_with_the_announced_model_in_its_heading_frame(
        ros_context, tmp_path):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    path = model_dir / "model_000001.mbrl"
    sha = ProbabilisticEnsemble(StandLayout(JOINTS).state_dim, JOINTS, TINY, "cpu", 0).save(
        str(path))
    node = PlannerNode(context=ros_context, cli_args=[
        "--ros-args", "--params-file", str(QUADRUPED_CONFIG), "-p", f"urdf:={QUADRUPED_URDF}",
        "-p", f"model_dir:={model_dir}", "-p", "visualize_every:=0"])
    try:
        node._load_model(ModelUpdate(version=1, checkpoint_path=str(path), sha256=sha))
        assert node.refused_models == 0
        model, version = node.learned_model
        assert version == 1 and isinstance(model, HeadingFrameModel)
        node._apply_pending()
        assert node.controller.planner.dynamics is model
    finally:
        node.destroy_node()
