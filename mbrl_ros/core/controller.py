"""Receding-horizon controller: explore until a model and a goal exist, then plan.

ROS-free glue between the planner, the task cost and the exploration policy, so the planner
node only converts messages. State = ``[q, qd]`` of the robot's joints, optionally followed by
task-specific base state (e.g. odometry for a legged robot); action = one command per joint,
both in the model's joint order.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from mbrl_ros.core.continuous_joints import continuous_mask, nearest_turns, wrap, wrap_positions
from mbrl_ros.core.costs import TaskCost
from mbrl_ros.core.disturbance import DisturbanceConfig, OffsetDynamics
from mbrl_ros.core.dynamics_model import set_operating_point
from mbrl_ros.core.exploration import SmoothExplorer
from mbrl_ros.core.planning.config import PlannerConfig
from mbrl_ros.core.planning.constraints import ConstraintFn
from mbrl_ros.core.planning.planner import Planner, PlanResult
from mbrl_ros.core.planning.rollout import model_disagreement
from mbrl_ros.core.recovery import (MODE_EXPLORING, MODE_RECOVERY, MODE_TASK, RecoveryConfig,
                                    RecoveryStats, TrustedPoses, recovery_cost)
from mbrl_ros.core.trust import DisagreementHysteresis, plan_disagreement
from mbrl_ros.core.value_prior import (STAGE_MPC, STAGE_POLICY_ONLY, PlanningPrior,
                                       ValuePriorConfig)

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
    mode: str = MODE_TASK
    """The controller's mode on this tick (``mbrl_ros.core.recovery``): "task", "recovery"
    (``command`` is a recovery plan's: back toward trusted poses) or "exploring"."""
    disagreement: float = 0.0
    """Disagreement of the plan behind ``command`` as the gate judges it (the largest along
    the plan, the terminal value's included; 0 without a plan)."""
    stage: str = ""
    """How the command was made: "mpc", "mpc+policy", "mpc+value", "mpc+policy+value" or
    "policy" (:mod:`mbrl_ros.core.value_prior`); empty while exploring or failed."""
    turn_origin: Optional[np.ndarray] = None
    """Position commands of a robot with continuous joints: the joint positions [J] as the
    robot reported them this tick (the plan's are wrapped to ``[-pi, pi)``); None otherwise.
    See :meth:`to_robot`."""
    continuous: Optional[np.ndarray] = None
    """[J] the continuous joints (with ``turn_origin``)."""

    def to_robot(self, actions: np.ndarray) -> np.ndarray:
        """Actions ``[T, A]`` of this step (``command`` first, then the plan's) as sent to the
        robot: with ``turn_origin``, each continuous joint's target the equal angle nearest the
        one before it, the first nearest where the joint is
        (:func:`~mbrl_ros.core.continuous_joints.nearest_turns`); else as they are."""
        actions = np.asarray(actions, dtype=np.float64)
        if self.turn_origin is None or self.continuous is None:
            return actions
        return nearest_turns(actions, self.turn_origin, self.continuous)

    @property
    def from_policy(self) -> bool:
        """True when ``command`` is the learned policy's, not a plan's."""
        return self.stage == STAGE_POLICY_ONLY

    @property
    def uses_prior(self) -> bool:
        """True when a learned value/policy went into ``command``."""
        return self.stage not in ("", STAGE_MPC)

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
    :class:`mbrl_ros.core.workspace.WorkspaceConstraint`); ``recovery`` (None: off) switches
    to planning back toward trusted poses while the task's plans are untrusted (see
    :mod:`mbrl_ros.core.recovery`), with :attr:`recovery_stats` counting it; a learned
    value/policy (:meth:`set_prior`) is used as ``prior_options`` say (policy-prior samples,
    terminal value, or the policy alone), the recovery planner never uses it;
    ``continuous_joints`` ([J] flags, the URDF's continuous joints): their angles are planned
    wrapped to ``[-pi, pi)`` (the learned models' frame) and, with ``position_commands``,
    each step carries what :meth:`ControlStep.to_robot` needs to send their targets as the
    equal angle nearest where the joint is (:mod:`mbrl_ros.core.continuous_joints`)."""

    def __init__(self, planner_config: PlannerConfig, cost: TaskCost, explorer: SmoothExplorer,
                 device: torch.device, prior_options: ValuePriorConfig = ValuePriorConfig(),
                 needs_goal: bool = True,
                 warm_start: Optional[WarmStartFn] = None,
                 disturbance: DisturbanceConfig = DisturbanceConfig(),
                 model_period_s: float = 0.0, jump_threshold: float = math.inf,
                 constraint: Optional[ConstraintFn] = None,
                 recovery: Optional[RecoveryConfig] = None,
                 continuous_joints: Optional[Sequence[bool]] = None,
                 position_commands: bool = False):
        self.planner_config = planner_config.validate()
        self.continuous = None if continuous_joints is None else \
            continuous_mask(continuous_joints, len(continuous_joints))
        """[J] continuous joints (None: none)."""
        self.position_commands = bool(position_commands)
        self.recovery = None if recovery is None or not recovery.enabled \
            else recovery.validate()
        """Recovery settings (None: recovery off)."""
        self._trust = None if self.recovery is None else DisagreementHysteresis.of(self.recovery)
        self._trusted_poses = TrustedPoses(1 if self.recovery is None
                                           else self.recovery.history_ticks)
        self._recovery_planner: Optional[Planner] = None
        self._previous_command: Optional[np.ndarray] = None
        """[A] the last command sent (None: none since the start or the last reset)."""
        self._recovering = False
        self._try_task = False
        """Recovering, and the plans sent have been trusted long enough: plan for the task
        on the next tick (recovery ends once that plan is trusted)."""
        self.recovery_stats = RecoveryStats()
        """Recoveries and times to recover."""
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
        self.prior_options = prior_options.validate()
        self.prior: Optional[PlanningPrior] = None
        """The learned value/policy (None: none deployed); used as ``prior_options`` say."""
        self.goal: Optional[np.ndarray] = None

    @property
    def mode(self) -> str:
        """"exploring", "task" or "recovery" (planning back toward trusted poses)."""
        if self.exploring:
            return MODE_EXPLORING
        return MODE_RECOVERY if self._recovering else MODE_TASK

    @property
    def plans_trusted(self) -> bool:
        """False while the disagreement hysteresis (the gate's rule, on the plans this
        controller judged) says untrusted; always True with recovery off."""
        return self._trust is None or not self._trust.tripped

    @property
    def exploring(self) -> bool:
        """True until a model and (if the task needs one) a goal exist."""
        return self.planner is None or (self.needs_goal and self.goal is None)

    def set_goal(self, position: np.ndarray) -> None:
        """New end-effector goal [3] (the cost's ``end_effector`` term)."""
        self.goal = np.asarray(position, dtype=np.float64).copy()
        self.cost.term("end_effector").set_target(self.goal.tolist())
        self._needs_seed = True
        if self.prior is not None:
            self.prior.set_goal(self.goal)
            self._apply_prior()
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
        if self.disturbance.enabled:  # continuous joints' positions (first in the state)
            model = OffsetDynamics(model, self.disturbance, () if self.continuous is None
                                   else np.flatnonzero(self.continuous).tolist())
        if self.planner is None:
            self.planner = Planner(model, self.planner_config, self.cost, None, None,
                                   self.device, self.constraint)
            self._apply_prior()
        else:
            self.planner.set_models(model)
        if self._recovery_planner is not None:
            self._recovery_planner.set_models(model)
        self.model_version = int(version)

    def set_planner_config(self, config: PlannerConfig) -> None:
        """Apply new planner settings (horizon, samples, weights) from the next tick on."""
        self.planner_config = config.validate()
        if self.planner is not None:
            self.planner = Planner(self.planner.dynamics, self.planner_config, self.cost,
                                   None, None, self.device, self.constraint)
            self._apply_prior()
        if self._recovery_planner is not None:
            self._recovery_planner = self._make_recovery_planner(self._recovery_planner.cost_fn)

    def set_prior(self, prior: Optional[PlanningPrior]) -> None:
        """Swap in a learned value/policy (between ticks; None: drop it)."""
        self.prior = prior
        if prior is not None:
            prior.set_goal(self.goal)
        self._apply_prior()

    def set_prior_options(self, options: ValuePriorConfig) -> None:
        """Which parts of the value/policy to use, from the next tick on."""
        self.prior_options = options.validate()
        self._apply_prior()

    @property
    def stage(self) -> str:
        """The stage the next task tick uses (:meth:`ValuePriorConfig.stage`)."""
        return self.prior_options.stage(self.prior is not None and self.prior.ready)

    def _apply_prior(self) -> None:
        """Hand the planner the value and policy the options and the prior allow."""
        if self.planner is None:
            return
        use = self.prior_options
        usable = self.stage not in (STAGE_MPC, STAGE_POLICY_ONLY)
        self.planner.set_prior(
            value=self.prior.value if usable and use.terminal_value else None,
            policy=self.prior.policy if usable and use.policy_prior else None)

    def reset(self) -> None:
        """New episode: forget the warm start, the exploration targets and the last command
        sent (the next plan's first action is not compared with it)."""
        self.explorer.reset()
        self._needs_seed = True
        self._set_previous_action(None)
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
        disturbance estimate (None: no update this tick). The command decided (not a failed
        plan's hold) is what the costs' smoothness terms compare the next plan's first action
        with (:meth:`_set_previous_action`). Continuous joints' positions are planned wrapped
        (see the class)."""
        measured = np.asarray(position, dtype=np.float64)
        if self.continuous is not None:
            position = wrap_positions(measured, self.continuous)
        step = self._decide(position, velocity, extra_state, stamp)
        if not step.failed:
            self._set_previous_action(step.command)
        if self.continuous is not None and self.position_commands:
            step = replace(step, turn_origin=measured, continuous=self.continuous)
        return step

    def _set_previous_action(self, command: Optional[np.ndarray]) -> None:
        """Tell the task's and the recovery's costs (their terms with a
        ``set_previous_action``, e.g. :class:`~mbrl_ros.core.costs.SmoothnessCost`) the command
        sent ``[A]``; None: forget it."""
        self._previous_command = None if command is None else np.array(command, np.float64)
        costs = [self.cost] + ([] if self._recovery_planner is None
                               else [self._recovery_planner.cost_fn])
        for cost in costs:
            setter = getattr(cost, "set_previous_action", None)
            if callable(setter):
                setter(None if command is None else self._previous_command.tolist())

    def _decide(self, position: np.ndarray, velocity: np.ndarray,
                extra_state: Optional[np.ndarray], stamp: Optional[float]) -> ControlStep:
        """This tick's command (see :meth:`step`)."""
        last, self._last_position = self._last_position, np.array(position, dtype=np.float64)
        moved = None if last is None or last.shape != self._last_position.shape \
            else self._last_position - last
        if moved is not None and self.continuous is not None:  # across +-pi is no jump
            moved = np.where(self.continuous, wrap(moved), moved)
        jumped = moved is not None and float(np.max(np.abs(moved), initial=0.0)) \
            > self.jump_threshold
        if jumped:
            logger.info("the robot jumped (reset or moved by hand): planning afresh")
            self.reset()
            if self._recovering:
                self._end_recovery(stamp, recovered=False)
        if self.exploring:
            return ControlStep(self.explorer(position, velocity), exploring=True,
                               mode=MODE_EXPLORING)
        parts = [position, velocity] + ([] if extra_state is None else [extra_state])
        state = np.concatenate(parts).astype(np.float32)
        offset = self._offset_model
        if offset is not None and stamp is not None:
            offset.update(torch.from_numpy(state), stamp, self.model_period_s)
        try:
            self._set_operating_point(position)
        except (ValueError, RuntimeError) as error:
            logger.warning("planner failed, asking for a hold this tick: %s", error)
            return ControlStep(None, exploring=False, error=f"planner error: {error}")
        step = self._recovery_step(state, position, stamp) \
            if self._recovering and not self._try_task else self._task_step(state, position, stamp)
        if offset is not None and stamp is not None and step.plan is not None \
                and not step.failed and step.plan.feasible:
            offset.expect(step.plan.states[1], stamp)
        return step

    def _plan(self, planner: Planner, state: np.ndarray, mode: str) -> ControlStep:
        """One plan with ``planner``; a failed or non-finite plan asks for a hold."""
        try:
            plan = planner.plan(state)
        except (ValueError, RuntimeError) as error:
            logger.warning("planner failed, asking for a hold this tick: %s", error)
            return ControlStep(None, exploring=False, error=f"planner error: {error}",
                               mode=mode)
        command = plan.action.detach().cpu().numpy().astype(np.float64)
        if not (np.all(np.isfinite(command)) and math.isfinite(plan.cost)):
            logger.warning("planner returned a non-finite action or cost; asking for a hold")
            return ControlStep(None, exploring=False, plan=plan, mode=mode,
                               error="planner returned a non-finite action or cost")
        if planner.value is not None and self.prior is not None:
            # the terminal value's own disagreement counts at the plan's last state
            plan.disagreement = plan.disagreement.clone()
            plan.disagreement[-1] += self.prior.disagreement(plan.states[-1])
        disagreement = plan_disagreement(plan.disagreement.detach().cpu().reshape(-1).tolist())
        # an infeasible plan is the least-violating one: it leads back toward the limits
        return ControlStep(command, exploring=False, plan=plan, recovering=not plan.feasible,
                           mode=mode, disagreement=disagreement,
                           stage=self.stage if planner is self.planner else STAGE_MPC)

    def _policy_step(self, state: np.ndarray) -> ControlStep:
        """The policy's action without planning; its disagreement is the dynamics ensemble's
        about the next state plus the value's there (what a one-step plan would report)."""
        try:
            with torch.inference_mode():
                current = torch.as_tensor(state, device=self.device).reshape(1, -1)
                # within the planner's bounds, which may be narrower than the policy's own
                scale = self.planner.scale
                action = torch.minimum(torch.maximum(self.prior.policy(current), scale.low),
                                       scale.high)
                means, _ = self.planner.dynamics.predict(current, action)
                spread = float(model_disagreement(self.planner.dynamics, means).reshape(-1)[0])
                spread += self.prior.disagreement(means.mean(dim=0)[0])
        except (ValueError, RuntimeError) as error:
            logger.warning("policy failed, asking for a hold this tick: %s", error)
            return ControlStep(None, exploring=False, error=f"policy error: {error}",
                               mode=MODE_TASK)
        command = action[0].detach().cpu().numpy().astype(np.float64)
        if not np.all(np.isfinite(command)):
            return ControlStep(None, exploring=False, mode=MODE_TASK,
                               error="policy returned a non-finite action")
        return ControlStep(command, exploring=False, mode=MODE_TASK,
                           disagreement=plan_disagreement([spread]), stage=STAGE_POLICY_ONLY)

    def _task_step(self, state: np.ndarray, position: np.ndarray,
                   stamp: Optional[float]) -> ControlStep:
        """Plan for the task. An untrusted plan is never sent: recovery begins (or, when this
        was a try to return to the task, goes on) this very tick; a trusted one ends a
        recovery."""
        try:
            self._seed_planner(position)
        except (ValueError, RuntimeError) as error:
            logger.warning("planner failed, asking for a hold this tick: %s", error)
            return ControlStep(None, exploring=False, error=f"planner error: {error}")
        step = self._policy_step(state) if self.stage == STAGE_POLICY_ONLY \
            else self._plan(self.planner, state, MODE_TASK)
        if self._trust is None or step.failed:
            return step
        if not self._trust.update(step.disagreement):
            if step.disagreement < self._trust.resume:
                self._trusted_poses.add(position)
            if self._recovering:
                self._end_recovery(stamp, recovered=True)
            return step
        if self._recovering:
            logger.debug("recovery: the task's plan is still untrusted (disagreement %.3g)",
                         step.disagreement)
        else:
            self._begin_recovery(position, step.disagreement, stamp)
        self._try_task = False
        return self._recovery_step(state, position, stamp)

    def _recovery_step(self, state: np.ndarray, position: np.ndarray,
                       stamp: Optional[float]) -> ControlStep:
        """Plan back toward the trusted pose; once the plans sent have been trusted long enough
        (the gate's resume rule), try the task again on the next tick."""
        step = self._plan(self._recovery_planner, state, MODE_RECOVERY)
        if not step.failed and not self._trust.update(step.disagreement):
            self._try_task = True
            self._needs_seed = True  # the task's last plan was made for where the robot was
            self.planner.reset()
            _hand_over(self._recovery_planner, self.planner)
        return step

    def _begin_recovery(self, position: np.ndarray, disagreement: float,
                        stamp: Optional[float]) -> None:
        anchor = self._trusted_poses.anchor(position)
        if self._recovery_planner is None:
            self._recovery_planner = self._make_recovery_planner(recovery_cost(
                self.recovery, anchor, self.planner.state_dim, self.device))
            self._set_previous_action(self._previous_command)  # the new cost's terms too
        self._recovery_planner.cost_fn.term("joint_position").set_target(anchor.tolist())
        self._recovery_planner.reset()
        _hand_over(self.planner, self._recovery_planner)  # start from the current motion
        self._recovering = True
        self.recovery_stats.begin(stamp)
        logger.info("recovery: plan disagreement %.3g > %g: planning back toward the %s "
                    "(recovery %d)", disagreement, self._trust.threshold,
                    "last trusted pose" if len(self._trusted_poses) else "current pose",
                    self.recovery_stats.recoveries)

    def _end_recovery(self, stamp: Optional[float], recovered: bool) -> None:
        self._recovering = self._try_task = False
        self._trust.reset()
        elapsed = self.recovery_stats.end(stamp, recovered)
        logger.info("recovery %s after %.3g s: planning for the task again",
                    "done: the task's plans are trusted" if recovered else "ended by a reset",
                    elapsed)

    def _make_recovery_planner(self, cost: TaskCost) -> Planner:
        """A planner with the task's settings, model and constraints, but the recovery cost
        and disagreement weight (and a propagation that measures disagreement)."""
        config = self.planner_config
        propagation = "ensemble" if config.propagation == "partition" else config.propagation
        config = replace(config, disagreement_weight=self.recovery.disagreement_weight,
                         propagation=propagation)
        return Planner(self.planner.dynamics, config, cost, None, None, self.device,
                       self.constraint)

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


def _hand_over(source: Planner, target: Planner) -> None:
    """Start ``target``'s next plan from ``source``'s (shifted) plan, when it has one."""
    actions = source.warm_start
    if actions is not None:
        target.seed(actions.detach().cpu().numpy())
