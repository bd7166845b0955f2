"""Sampling-based planning (MPPI / CEM, TD-MPC style) over a learned dynamics ensemble."""

from mbrl_ros.core.planning.config import PlannerConfig
from mbrl_ros.core.planning.planner import PlanResult, Planner
from mbrl_ros.core.planning.rollout import ensemble_disagreement, model_disagreement

__all__ = ["PlanResult", "Planner", "PlannerConfig", "ensemble_disagreement",
           "model_disagreement"]
