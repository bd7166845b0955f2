"""Receding-horizon controller: explore until a model and a goal exist, then plan.

ROS-free glue between the planner, the task cost and the exploration policy, so the planner
node only converts messages. State = ``[q, qd]`` of the robot's joints, optionally followed by
task-specific base state (e.g. odometry for a legged robot); action = one command per joint,
both in the model's joint order.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from mbrl_ros.core.costs import TaskCost
from mbrl_ros.core.disturbance import DisturbanceConfig, OffsetDynamics
from mbrl_ros.core.dynamics_model import set_operating_point
from mbrl_ros.core.exploration import SmoothExplorer
from mbrl_ros.core.planning.config import PlannerConfig
from mbrl_ros.core.planning.constraints import ConstraintFn
from mbrl_ros.core.planning.planner import Planner, PlanResult

logger = logging.getLogger(__name__)


@dataclass
class ControlStep:
    """What the controller decided on one tick."""

    command: Optional[np.ndarray]
    """[A] command to send (model joint order); None when the planner failed: the robot
    must be held, never sent an exploration command instead."""
    exploring: bool
    """True while no model exists (smooth random exploration)."""
    plan: Optional[PlanResult] = None
    """The plan behind ``command`` (None while exploring or after a planner error)."""
    error: str = ""
    """Why the planner failed on this tick (empty otherwise)."""
    recovering: bool = False
    """No plan satisfies the state limits (or the workspace): ``command`` is the first action
    of the least violating one, which leads back toward them (the gate judges it like any
    other)."""

    @property
    def failed(self) -> bool:
        """True when there is no command: the caller holds the robot."""
        return self.command is None


WarmStartFn = Callable[[np.ndarray, Optional[np.ndarray], int], Optional[np.ndarray]]
"""``(joint positions [J], goal or None, horizon H) -> [H, A]`` physical actions to start
planning from (e.g. a path toward the goal's IK solution), or None for the planner's default."""


class ModelPredictiveController:
    """Explores (collecting data) until it has a model (:meth:`set_model`) and, for tasks that
    need one (``needs_goal``), a goal (:meth:`set_goal`), then runs the planner every tick.

    Optional: ``warm_start`` seeds the planner after a reset and on every new goal; a joint
    moving more than ``jump_threshold`` between two ticks (the robot was reset or moved by
    hand) counts as a reset: the warm start (a plan for where the robot was) is dropped;
    ``disturbance`` (with ``model_period_s``) makes it offset-free (see
    :mod:`mbrl_ros.core.disturbance`): pass a time stamp to :meth:`step` for it to learn;
    ``constraint`` is an extra hard constraint of every plan (e.g. the workspace,
    :class:`mbrl_ros.core.workspace.WorkspaceConstraint`)."""

    def __init__(self, planner_config: PlannerConfig, cost: TaskCost, explorer: SmoothExplorer,
                 device: torch.device, value: Optional[Callable] = None,
                 policy: Optional[Callable] = None, needs_goal: bool = True,
                 warm_start: Optional[WarmStartFn] = None,
                 disturbance: DisturbanceConfig = DisturbanceConfig(),
                 model_period_s: float = 0.0, jump_threshold: float = math.inf,
                 constraint: Optional[ConstraintFn] = None):
        self.planner_config = planner_config.validate()
        self.constraint = constraint
        self.disturbance = disturbance.validate()
        if self.disturbance.enabled and not model_period_s > 0.0:
            raise ValueError("the disturbance estimate needs model_period_s > 0")
        self.model_period_s = float(model_period_s)
        self.warm_start = warm_start
        if not jump_threshold > 0.0:
            raise ValueError(f"jump_threshold must be > 0, got {jump_threshold}")
        self.jump_threshold = float(jump_threshold)
        self._needs_seed = True
        self._last_position: Optional[np.ndarray] = None
        self.needs_goal = bool(needs_goal)
        self.cost = cost
        self.explorer = explorer
        self.device = device
        self.planner: Optional[Planner] = None
        self.model_version = 0
        self._value, self._policy = value, policy
        self.goal: Optional[np.ndarray] = None

    @property
    def exploring(self) -> bool:
        """True until a model and (if the task needs one) a goal exist."""
        return self.planner is None or (self.needs_goal and self.goal is None)

    def set_goal(self, position: np.ndarray) -> None:
        """New end-effector goal [3] (the cost's ``end_effector`` term)."""
        self.goal = np.asarray(position, dtype=np.float64).copy()
        self.cost.term("end_effector").set_target(self.goal.tolist())
        self._needs_seed = True
        if self._offset_model is not None:
            self._offset_model.reset()  # the bias near the old goal says little of the new

    @property
    def _offset_model(self) -> Optional[OffsetDynamics]:
        """The planner's model when it carries a disturbance estimate, else None."""
        dynamics = None if self.planner is None else self.planner.dynamics
        return dynamics if isinstance(dynamics, OffsetDynamics) else None

    @property
    def offset(self) -> Optional[np.ndarray]:
        """[S] current disturbance estimate (None when the estimate is off or no model)."""
        model = self._offset_model
        return None if model is None else model.offset.detach().cpu().numpy().copy()

    def set_model(self, model, version: int) -> None:
        """Swap in a new dynamics model (between ticks); the warm start is kept, the
        disturbance estimate (which belongs to the old model) starts again from zero."""
        if self.disturbance.enabled:
            model = OffsetDynamics(model, self.disturbance)
        if self.planner is None:
            self.planner = Planner(model, self.planner_config, self.cost, self._value,
                                   self._policy, self.device, self.constraint)
        else:
            self.planner.set_models(model)
        self.model_version = int(version)

    def set_planner_config(self, config: PlannerConfig) -> None:
        """Apply new planner settings (horizon, samples, weights) from the next tick on."""
        self.planner_config = config.validate()
        if self.planner is not None:
            self.planner = Planner(self.planner.dynamics, self.planner_config, self.cost,
                                   self._value, self._policy, self.device, self.constraint)

    def reset(self) -> None:
        """New episode: forget the warm start and the exploration targets."""
        self.explorer.reset()
        self._needs_seed = True
        if self.planner is not None:
            self.planner.reset()
        if self._offset_model is not None:
            self._offset_model.reset()

    def step(self, position: np.ndarray, velocity: np.ndarray,
             extra_state: Optional[np.ndarray] = None,
             stamp: Optional[float] = None) -> ControlStep:
        """One control tick from joint positions and velocities [J] (finite); the planner's
        state is ``[position, velocity, extra_state]`` (``extra_state``: task-specific, e.g.
        the base odometry [13] of a legged robot). ``stamp``: time of the state [s], for the
        disturbance estimate (None: no update this tick)."""
        last, self._last_position = self._last_position, np.array(position, dtype=np.float64)
        jumped = (last is not None and last.shape == self._last_position.shape
                  and float(np.max(np.abs(self._last_position - last), initial=0.0))
                  > self.jump_threshold)
        if jumped:
            logger.info("the robot jumped (reset or moved by hand): planning afresh")
            self.reset()
        if self.exploring:
            return ControlStep(self.explorer(position, velocity), exploring=True)
        parts = [position, velocity] + ([] if extra_state is None else [extra_state])
        state = np.concatenate(parts).astype(np.float32)
        offset = self._offset_model
        if offset is not None and stamp is not None:
            offset.update(torch.from_numpy(state), stamp, self.model_period_s)
        try:
            self._set_operating_point(position)
            self._seed_planner(position)
            plan = self.planner.plan(state)
        except (ValueError, RuntimeError) as error:
            logger.warning("planner failed, asking for a hold this tick: %s", error)
            return ControlStep(None, exploring=False, error=f"planner error: {error}")
        command = plan.action.detach().cpu().numpy().astype(np.float64)
        if not (np.all(np.isfinite(command)) and math.isfinite(plan.cost)):
            logger.warning("planner returned a non-finite action or cost; asking for a hold")
            return ControlStep(None, exploring=False, plan=plan,
                               error="planner returned a non-finite action or cost")
        if not plan.feasible:  # the least-violating plan leads back toward the limits
            return ControlStep(command, exploring=False, plan=plan, recovering=True)
        if offset is not None and stamp is not None:
            offset.expect(plan.states[1], stamp)
        return ControlStep(command, exploring=False, plan=plan)

    def _set_operating_point(self, position: np.ndarray) -> None:
        """Tell a model that linearises about the robot's pose (a servo nominal model) where
        the robot is now; models without one ignore it."""
        set_operating_point(self.planner.dynamics, np.asarray(position, dtype=np.float64))

    def _seed_planner(self, position: np.ndarray) -> None:
        """Seed the planner from ``warm_start`` after a reset or a new goal."""
        if self.warm_start is None or not (self._needs_seed or not self.planner.has_warm_start):
            return
        self._needs_seed = False
        seed = self.warm_start(np.asarray(position, dtype=np.float64), self.goal,
                               self.planner_config.horizon)
        if seed is not None:
            self.planner.seed(seed)
