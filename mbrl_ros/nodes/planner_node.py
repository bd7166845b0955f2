"""planner_node: TD-MPC-style MPPI/CEM over the learned ensemble, at the control rate.

Task ``reach`` (arm: end-effector goals, torques) or ``stand`` (legged robot: base height and
orientation from /odom, joint position targets; the learned model is used in each state's
heading frame, as the trainer trains it: see :func:`planning_model`). Explores with smooth
random commands until the trainer announces a model, then plans with it. New models are loaded
(only from the configured ``model_dir``, hash checked, tensors only) off the control thread and
swapped in between ticks; a corrupt or foreign checkpoint is refused and the current model
kept.

Each tick publishes one ``mbrl_ros/PlannedCommand``: stamped with the joint state the plan
started from, numbered, with the model version, a status (planned / exploring / failed) and the
plan's disagreement; with ``stream_plan`` (the default) it carries the whole plan as timed
points, one per model step, which the safety gate samples at its own control rate, so the
planner may plan at a lower rate than the robot is commanded. Optionally the same plan goes out
as a ``trajectory_msgs/JointTrajectory`` (``publish_trajectory``). A failed plan asks the gate
for a hold, never for exploration. When the
task's plans become untrusted (the gate's disagreement rule, parameters ``recovery.*``), the
controller plans back toward poses where they were trusted (status recovering) until the task's
plans are trusted again; the mode and the recovery counts are in PlanStatus and /diagnostics.

A learned value/policy (TD-MPC style) announced on the same topic (``model_kind``
"value_policy", its own version counter) is loaded the same way and used as the ``value.*``
parameters say (policy-prior samples, terminal value, or the policy alone; all off by
default): only if its checkpoint's metadata matches the planner's task, task cost, sizes,
joints and model period (:func:`~mbrl_ros.core.value_prior.compatibility_error`). PlanStatus
says the stage ("mpc", "mpc+policy", "mpc+value", "mpc+policy+value", "policy") and the
value/policy version in use; a policy-only command has the status "policy".

A managed (lifecycle) node: configure reads the parameters and builds everything (robot,
model, controller, publishers, subscriptions, timers), activate starts commanding, deactivate
stops it (no PlannedCommand at all: the safety gate holds the robot by its watchdog), cleanup
releases what configure built. With ``autostart`` (default true) it configures and activates
itself; the launch files leave that to ``lifecycle_manager``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
import pathlib
from typing import Any, Dict, Optional

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import (LifecycleNode, LifecyclePublisher, LifecycleState,
                             TransitionCallbackReturn)
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from mbrl_ros.nodes.conversions import (JointNameMap, joint_trajectory_message,
                                        planned_command_message)
from mbrl_ros.core.checkpoint import CheckpointError
from mbrl_ros.core.command_limits import exploration_lead
from mbrl_ros.core.controller import ControlStep, ModelPredictiveController
from mbrl_ros.core.disturbance import DisturbanceConfig
from mbrl_ros.core.exploration import ExplorationConfig
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.core.nominal_only import NominalOnlyModel
from mbrl_ros.core.planning.config import PlannerConfig
from mbrl_ros.core.recovery import MODE_RECOVERY, RecoveryConfig
from mbrl_ros.core.safety_gate_config import CommandStatus
from mbrl_ros.core.task_reward import TaskReward, task_cost_hash
from mbrl_ros.core.value_policy import ValuePolicy
from mbrl_ros.core.value_prior import (STAGE_MPC, VALUE_POLICY_KIND, PlanningPrior,
                                       ValuePriorConfig, compatibility_error)
from mbrl_ros.core.workspace import WorkspaceConfig
from mbrl_ros.msg import ModelUpdate, PlannedCommand, PlanStatus
from mbrl_ros.nodes.managed import (CONFIGURE_ERRORS, ERROR, FAILURE, SUCCESS,
                                    declare_autostart, start_unmanaged)
from mbrl_ros.nodes.parameters import declare_config, read_config
from mbrl_ros.nodes.qos import PLANNED_COMMAND_QOS
from mbrl_ros.nodes.spin import run_node
from mbrl_ros.nodes.plan_visualization import plan_markers, plan_path
from mbrl_ros.nodes.planner_config import (LEARNED, NOMINAL, PlannerNodeConfig,
                                           model_source_error)
from mbrl_ros.tasks.reach import (ReachCostConfig, build_reach_cost, load_robot,
                                  nominal_dynamics, reach_explorer, reach_limits,
                                  reach_warm_start)
from mbrl_ros.robots.servo_model import robot_servo_config
from mbrl_ros.robots.workspace_points import (checked_points, workspace_constraint,
                                              workspace_unavailable)
from mbrl_ros.tasks.stand import (HeadingFrameModel, StandCostConfig, StandLayout,
                                  StandTaskConfig, build_stand_cost, odom_vector,
                                  stand_explorer, stand_planner_limits, stand_warm_start)
from mbrl_ros.training.value_training import GOAL_TERMS

RELIABLE = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
STATUS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # a slow reader loses none
MODEL_UPDATE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""Model announcements: the trainer keeps more than one (dynamics and value/policy share the
topic), so a planner that starts late gets the newest of each kind."""
VISUAL = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
DIAGNOSTICS_PERIOD_S = 1.0
"""Period of the planner's /diagnostics status."""
WORKSPACE_PREFIX = "workspace."
"""Parameters of the reach task's workspace (:class:`WorkspaceConfig`), read once at start."""
NOMINAL_VERSION = 0
"""Model version reported while planning with the nominal model alone."""
RECOVERY_PREFIX = "recovery."
"""Parameters of the recovery mode (:class:`RecoveryConfig`), read once at start."""
VALUE_PREFIX = "value."
"""Which parts of a learned value/policy the planner uses (:class:`ValuePriorConfig`);
settable at run time."""
READ_AT_START = ("stream_plan", "publish_trajectory")
"""Node parameters read once at start (changes at run time are refused)."""
PLANNED_TRAJECTORY_TOPIC = "mbrl/planned_trajectory"
"""The plan as a trajectory_msgs/JointTrajectory (``publish_trajectory``)."""
RATE_MISMATCH_TOLERANCE = 0.01
"""A planner timer period further than this fraction from model_period_s is logged."""


@dataclasses.dataclass(frozen=True)
class CommandPoints:
    """What one PlannedCommand carries (command order): status, points, times, disagreement."""

    status: CommandStatus
    commands: np.ndarray
    """[P, J] (P = 0 for a hold request)."""
    times: np.ndarray
    """[P] seconds after the source joint state's stamp."""
    disagreement: np.ndarray
    """[P] the disagreement the gate judges at each point."""
    reason: str = ""


def command_points(step: ControlStep, order: np.ndarray, model_period_s: float,
                   stream: bool) -> CommandPoints:
    """The points of the command for ``step``, in the command order ``order`` (indices into
    the model's joints).

    A failed step is a hold request (no points). An exploration or policy command (no plan) is
    one point. A plan is one point (its first action) or, with ``stream``, all its actions:
    point k is action k at ``k * model_period_s``, converted as the first action is
    (``step.command``; continuous joints' position targets as :meth:`ControlStep.to_robot`
    sends them); a plan is cut before its first non-finite action (the first one is
    finite, or the step would have failed), so a bad tail never makes the gate refuse, let
    alone latch on, the whole command.

    Disagreement: every point carries the value the controller judged the command by
    (``step.disagreement``: the largest along the plan, the terminal value's included,
    infinite if any is unknown). The gate samples one point at a time; judging a point by a
    smaller value would let it trust the plan more than the planner's recovery did, which runs
    the same hysteresis on the same number. Per-step values are in PlanStatus.disagreement."""
    joints = len(order)
    if step.failed:
        return CommandPoints(CommandStatus.FAILED, np.zeros((0, joints)), np.zeros(0),
                             np.zeros(0), step.error or "planner failed")
    status = CommandStatus.EXPLORING if step.exploring else \
        CommandStatus.RECOVERING if step.recovering or step.mode == MODE_RECOVERY \
        else CommandStatus.POLICY if step.from_policy else CommandStatus.PLANNED
    judged = float(step.disagreement)
    judged = judged if math.isfinite(judged) and judged >= 0.0 else math.inf
    first = np.asarray(step.command, dtype=np.float64)[None, :]
    if not stream or step.plan is None:
        return CommandPoints(status, step.to_robot(first)[:, order], np.zeros(1),
                             np.array([judged]))
    actions = step.plan.actions.detach().cpu().numpy().astype(np.float64)
    actions[0] = first[0]
    finite = np.all(np.isfinite(actions), axis=1)
    count = len(actions) if finite.all() else max(int(np.argmin(finite)), 1)
    return CommandPoints(status, step.to_robot(actions[:count])[:, order],
                         np.arange(count) * float(model_period_s), np.full(count, judged))


def planning_model(model, task: str, num_joints: int):
    """A loaded checkpoint's model as the planner plans with it: the stand task's in its
    heading frame (:class:`~mbrl_ros.tasks.stand.HeadingFrameModel`, as the trainer trains it
    on the stand task's states), the reach task's as it is."""
    return HeadingFrameModel(model, num_joints) if task == "stand" else model


def prior_options_text(options: ValuePriorConfig) -> str:
    """``"policy_prior on, terminal_value off, policy_only off"``."""
    return ", ".join(f"{field.name} {'on' if getattr(options, field.name) else 'off'}"
                     for field in dataclasses.fields(options))


class PlannerNode(LifecycleNode):
    """Plans on every tick and publishes the plan (or its first action) for the gate, while
    active."""

    def __init__(self, **kwargs):
        super().__init__("planner", **kwargs)
        self._active = False
        self._loader: Optional[ThreadPoolExecutor] = None
        self._built: list = []
        """Publishers, subscriptions and timers made by configure (released by cleanup)."""
        self._parameter_callback = None
        self._configure_error: Optional[Exception] = None
        if declare_autostart(self):
            start_unmanaged(self, lambda: self._configure_error)
        else:
            self.get_logger().info("unconfigured: waiting for a lifecycle manager")

    # -- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read the parameters and build everything; a refused configuration fails the
        transition (logged; the node stays unconfigured)."""
        self._configure_error = None
        try:
            self._build()
        except CONFIGURE_ERRORS as error:
            self._configure_error = error
            self.get_logger().error(f"configuration refused: {error}")
            self._release()
            return FAILURE
        except Exception as error:  # noqa: BLE001 - rclpy would swallow it unlogged
            self._configure_error = error
            self.get_logger().error(f"configure failed: {traceback.format_exc()}")
            return ERROR  # on_error releases what was built
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        self.get_logger().info("active: commanding")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self.get_logger().info("inactive: no commands (the safety gate holds the robot)")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._release()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._release()
        return SUCCESS

    def _keep(self, entity):
        """``entity`` (a publisher, subscription or timer made by configure), remembered for
        cleanup."""
        self._built.append(entity)
        return entity

    def _release(self) -> None:
        """Undo configure: stop the loader, destroy what it made (parameters stay declared,
        with their values, for the next configure)."""
        self._active = False
        if self._loader is not None:
            self._loader.shutdown(wait=True, cancel_futures=True)
            self._loader = None
        if self._parameter_callback is not None:
            self.remove_on_set_parameters_callback(self._parameter_callback)
            self._parameter_callback = None
        for entity in reversed(self._built):
            if isinstance(entity, LifecyclePublisher):
                self.destroy_lifecycle_publisher(entity)
            elif isinstance(entity, Publisher):
                self.destroy_publisher(entity)
            elif isinstance(entity, Subscription):
                self.destroy_subscription(entity)
            else:
                self.destroy_timer(entity)
        self._built.clear()

    def _build(self) -> None:
        """Everything the planner plans with, from its parameters (the configure
        transition)."""
        self.config = declare_config(self, PlannerNodeConfig)
        torch.set_num_threads(self.config.torch_threads)
        self.device = torch.device(self.config.device)
        self.robot = load_robot(self.config.urdf, self.config.ee_frame)
        self.stand = self.config.task == "stand"
        self.servo = (robot_servo_config(self.robot, self.config.servo_kp, self.config.servo_kd)
                      if self.stand or self.config.command_mode == "position" else None)
        """The driver's joint servo gains (position targets), derived where left out."""
        self.state_dim = (StandLayout(self.robot.num_joints).state_dim if self.stand
                          else 2 * self.robot.num_joints)
        period = 1.0 / self.config.control_rate_hz
        self.workspace: Optional[WorkspaceConfig] = None
        """The reach task's workspace (None: the stand task has none)."""
        cost, explorer, planner_config = (self._stand_task(period) if self.stand
                                          else self._reach_task(period))
        warm_start = self._warm_start()
        prior_options = declare_config(self, ValuePriorConfig, VALUE_PREFIX)
        self.value_expected = self._value_expected(cost)
        """What a value/policy checkpoint's metadata must say to be used here."""
        self.controller = ModelPredictiveController(
            planner_config, cost, explorer, self.device, prior_options=prior_options,
            needs_goal=not self.stand,
            warm_start=warm_start,
            disturbance=declare_config(self, DisturbanceConfig, "disturbance."),
            model_period_s=self.config.model_period_s,
            jump_threshold=self.config.state_jump_threshold,
            constraint=None if self.stand else self._workspace_constraint(),
            recovery=declare_config(self, RecoveryConfig, RECOVERY_PREFIX),
            continuous_joints=self.robot.continuous,
            position_commands=self.stand or self.config.command_mode == "position")
        self.mode = self.controller.mode
        """The controller's mode on the last tick (logged when it changes)."""
        self._last_recovered = 0
        self.latest_odom = None
        self.state_map = JointNameMap(self.robot.joint_names)
        command_joints = self.config.joints or self.robot.joint_names
        if sorted(command_joints) != sorted(self.robot.joint_names):
            raise ValueError(f"joints {list(command_joints)} must be the URDF joints "
                             f"{list(self.robot.joint_names)} in the controller's order")
        self.command_order = np.array([self.robot.joint_names.index(j) for j in command_joints])
        self.command_joints = tuple(command_joints)
        self.model_dir = pathlib.Path(os.path.realpath(os.path.expanduser(self.config.model_dir)))
        self.sequence = 0
        self.latest_state = None
        self.tick = 0
        self.failed_plans = 0
        self.refused_models = 0
        self.refused_values = 0
        """Value/policy checkpoints refused (counted apart from the dynamics models)."""
        self.last_step: Optional[ControlStep] = None
        self.last_planning_ms = 0.0
        self.stale = False
        self.pending_model = None
        self.model_source = self.config.model_source
        """What the planner plans with now ("learned" or "nominal"; a runtime parameter)."""
        self.learned_model = None
        """(model, version) of the last learned model accepted."""
        if self.model_source == NOMINAL:
            self.pending_model = (self._nominal_model(), NOMINAL_VERSION)
        self.pending_config: Optional[PlannerConfig] = None
        self.value_version = 0
        """Version of the last value/policy accepted (0: none); its own counter, apart from
        the dynamics models'."""
        self.pending_prior: Optional[PlanningPrior] = None
        self.pending_prior_options: Optional[ValuePriorConfig] = None
        self._announced = {True: 0, False: 0}
        """Newest version announced per kind (value/policy: True): an older one still queued
        for the loader is skipped."""
        self._model_lock = threading.Lock()

        # One executor thread runs the control loop and the (cheap) message callbacks in
        # order; checkpoints load on a worker thread. (rclpy's multi-threaded executor spins a
        # core while a callback group is busy: ~50 % of a core measured with py-spy.)
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model_loader")
        # commands: lifecycle publishers, so nothing reaches the gate unless active
        self.command_pub = self._keep(self.create_lifecycle_publisher(
            PlannedCommand, "mbrl/planned_command", PLANNED_COMMAND_QOS))
        self.trajectory_pub = self._keep(self.create_lifecycle_publisher(
            JointTrajectory, PLANNED_TRAJECTORY_TOPIC, RELIABLE)) \
            if self.config.publish_trajectory else None
        self.status_pub = self._keep(self.create_publisher(PlanStatus, "mbrl/plan/status",
                                                           STATUS))
        self.markers_pub = self._keep(self.create_publisher(MarkerArray, "mbrl/plan/markers",
                                                            VISUAL))
        self.path_pub = self._keep(self.create_publisher(Path, "mbrl/plan/path", VISUAL))
        self._keep(self.create_subscription(JointState, "joint_states", self._on_joint_states,
                                            RELIABLE))
        self._keep(self.create_subscription(PoseStamped, "mbrl/goal", self._on_goal, RELIABLE))
        if self.stand:
            self._keep(self.create_subscription(Odometry, self.config.odom_topic, self._on_odom,
                                                RELIABLE))
        self._keep(self.create_subscription(ModelUpdate, "mbrl/model_update",
                                            self._on_model_update, MODEL_UPDATE_QOS))
        if self.config.trigger == "timer":
            self._keep(self.create_timer(period, self._on_timer))
        self.diagnostics_pub = self._keep(self.create_publisher(DiagnosticArray, "/diagnostics",
                                                                10))
        self._keep(self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics))
        self._parameter_callback = self._on_set_parameters
        self.add_on_set_parameters_callback(self._parameter_callback)
        self.get_logger().info(
            f"planning for {self.robot.num_joints} joints at {self.config.control_rate_hz} Hz; "
            f"({self.config.task}); " + (
                "with the nominal model alone; exploring until a goal arrives"
                if self.model_source == NOMINAL else "exploring until a model is announced"
                + ("" if self.stand else " and a goal arrives")))
        self._check_prior_options(prior_options, None, planner_config)
        self._check_rates()

    def _check_rates(self) -> None:
        """Log how commands are sent, and warn when the planner's timer period is not the
        model period (the warm start shifts the last plan by one model step per plan)."""
        cfg = self.config
        self.get_logger().info(
            f"commands: the whole plan ({cfg.model_period_s:g} s per point), sampled by the "
            "safety gate at its control rate" if cfg.stream_plan else "commands: the first "
            "action of each plan (stream_plan false)")
        mismatch = abs(cfg.control_rate_hz * cfg.model_period_s - 1.0)
        if cfg.trigger == "timer" and mismatch > RATE_MISMATCH_TOLERANCE:
            self.get_logger().warning(
                f"planning every {1.0 / cfg.control_rate_hz:g} s with a model period of "
                f"{cfg.model_period_s:g} s: each plan starts from the last one shifted by one "
                "model step, and the offset estimate skips updates; set control_rate_hz to "
                f"{1.0 / cfg.model_period_s:g}")

    def _reach_task(self, period: float):
        """Cost, explorer and planner settings of end-effector reaching (torques or position
        targets, per ``command_mode``)."""
        cfg = self.config
        self.nominal = nominal_dynamics(self.robot, cfg.model_period_s, cfg.nominal_substeps,
                                        self.device, cfg.gravity_compensated, cfg.command_mode,
                                        self.servo)
        planner_config = declare_config(self, PlannerConfig, "planner.", overrides=reach_limits(
            self.robot, cfg.command_mode, cfg.velocity_limit_fraction))
        self.cost_config = declare_config(self, ReachCostConfig, "cost.")
        cost = build_reach_cost(self.robot, self.nominal.ee_position_batch, self.cost_config,
                                None, self.device)
        explorer = reach_explorer(declare_config(self, ExplorationConfig, "exploration."),
                                  self.robot, cfg.command_mode, period, cfg.gravity_compensated,
                                  self.servo.kp if self.servo else 0.0)
        return cost, explorer, planner_config

    def _workspace_constraint(self):
        """The reach task's workspace as a hard constraint of the plans (None, logged once,
        where it is off or cannot apply)."""
        self.workspace = declare_config(self, WorkspaceConfig, WORKSPACE_PREFIX)
        off = workspace_unavailable(self.robot, self.workspace)
        if off:
            self.get_logger().info(f"workspace check off: {off}")
            return None
        names = checked_points(self.robot, self.workspace).names
        self.get_logger().info(
            f"workspace: {list(names)} stay at z >= {self.workspace.floor_limit:g} m"
            + (f", the end effector within {list(self.workspace.ee_lower)}.."
               f"{list(self.workspace.ee_upper)}" if self.workspace.bounded else ""))
        return workspace_constraint(self.robot, self.workspace, self.config.command_mode,
                                    self.device)

    def _warm_start(self):
        """The planner's seed on a new goal / after a reset (position targets only): a joint
        path to the goal's IK solution (reach) or to the standing posture (stand)."""
        speed, period = self.config.goal_seed_speed_fraction, self.config.model_period_s
        if self.stand:
            return stand_warm_start(self.stand_posture, self.robot.velocity_limits, period, speed)
        return reach_warm_start(self.robot, self.config.command_mode, period, speed)

    def _stand_task(self, period: float):
        """Cost, explorer and planner settings of standing (position targets, network model)."""
        self.nominal = None
        robot = self.robot
        planner_config = declare_config(self, PlannerConfig, "planner.", overrides=(
            stand_planner_limits(robot.position_lower, robot.position_upper,
                                 robot.velocity_limits, self.config.velocity_limit_fraction)))
        cost_config = declare_config(self, StandCostConfig, "cost.")
        self.cost_config = cost_config
        self.stand_posture = cost_config.posture
        explorer = stand_explorer(declare_config(self, ExplorationConfig, "exploration."),
                                  declare_config(self, StandTaskConfig, "stand."),
                                  cost_config.posture, robot.position_lower, robot.position_upper,
                                  period, robot.velocity_limits,
                                  exploration_lead(robot.effort_limits, self.servo.kp))
        return build_stand_cost(robot.num_joints, cost_config, self.device), explorer, \
            planner_config

    # -- inputs ----------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        arrays = self.state_map.from_joint_state(msg)
        if arrays is None or not (np.all(np.isfinite(arrays.position))
                                  and np.all(np.isfinite(arrays.velocity))):
            self.get_logger().warning("ignoring joint state: missing joints "
                                      f"{self.state_map.missing(msg.name)} or non-finite values",
                                      throttle_duration_sec=2.0)
            return
        self.latest_state = (arrays, self.get_clock().now().nanoseconds * 1e-9, msg.header)
        if self.config.trigger == "joint_states":
            self._on_timer()

    def _on_odom(self, msg: Odometry) -> None:
        pose, twist = msg.pose.pose, msg.twist.twist
        try:
            odom = odom_vector(
                [pose.position.x, pose.position.y, pose.position.z],
                [pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w],
                [twist.linear.x, twist.linear.y, twist.linear.z],
                [twist.angular.x, twist.angular.y, twist.angular.z])
        except ValueError as error:
            self.get_logger().warning(f"ignoring odometry: {error}", throttle_duration_sec=2.0)
            return
        if np.all(np.isfinite(odom)):
            self.latest_odom = (odom, self.get_clock().now().nanoseconds * 1e-9)

    def _on_goal(self, msg: PoseStamped) -> None:
        if self.stand:
            self.get_logger().warning("the stand task takes no goals; ignoring",
                                      throttle_duration_sec=10.0)
            return
        position = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
        frame = msg.header.frame_id
        if not np.all(np.isfinite(position)) or (frame and frame != self.config.base_frame):
            self.get_logger().error(f"rejecting goal {position.tolist()} in frame '{frame}': "
                                    f"goals must be finite and in '{self.config.base_frame}'")
            return
        self.controller.set_goal(position)
        self.get_logger().info(f"new goal {np.round(position, 3).tolist()}")
        if self.workspace is not None and self.workspace.enabled \
                and self.workspace.ee_excess(position) > 0.0:
            self.get_logger().warning(f"goal {np.round(position, 3).tolist()} is outside the "
                                      "workspace: the arm stops at its boundary")

    def _value_expected(self, cost) -> Dict[str, Any]:
        """What a value/policy's checkpoint metadata must say to be used by this planner (the
        :data:`~mbrl_ros.core.value_prior.COMPATIBILITY_KEYS`): the task, its cost settings
        (hashed as the trainer hashes its own ``cost.*``), sizes (the goal's from the task
        cost's goal term, as the trainer finds it), URDF joints, model period."""
        return {"task": self.config.task,
                "task_cost_hash": task_cost_hash(self.config.task,
                                                 dataclasses.asdict(self.cost_config)),
                "state_dim": self.state_dim, "action_dim": self.robot.num_joints,
                "goal_dim": TaskReward(cost, GOAL_TERMS[self.config.task]).goal_dim,
                "joints": list(self.robot.joint_names),
                "model_period_s": self.config.model_period_s}

    def _on_model_update(self, msg: ModelUpdate) -> None:
        """Hand the checkpoint to the loader thread (a dynamics model or, ``model_kind``
        "value_policy", a value/policy: each newer than the last of its kind accepted); the
        control loop swaps it in between ticks."""
        value = msg.model_kind == VALUE_POLICY_KIND
        with self._model_lock:
            accepted = self.value_version if value else (
                self.learned_model[1] if self.learned_model is not None else 0)
        if msg.version > accepted:
            self._announced[value] = max(self._announced[value], msg.version)
            self._loader.submit(self._load_value if value else self._load_model, msg)

    def _superseded(self, msg: ModelUpdate, value: bool) -> bool:
        """True (logged) when a newer checkpoint of the same kind was announced since ``msg``
        (e.g. the announcements a late planner receives at once): only the newest is loaded."""
        newest = self._announced[value]
        if msg.version >= newest:
            return False
        self.get_logger().info(f"skipping {'value/policy' if value else 'model'} "
                               f"v{msg.version}: v{newest} was announced since")
        return True

    def _trusted_checkpoint(self, path: str) -> pathlib.Path:
        """The real path of ``path`` if it lies inside ``model_dir``; CheckpointError if not."""
        real = pathlib.Path(os.path.realpath(path))
        if not real.is_relative_to(self.model_dir):
            raise CheckpointError(f"{path} (real path {real}) is outside the model directory "
                                  f"{self.model_dir}")
        return real

    def _load_model(self, msg: ModelUpdate) -> None:
        """Load and check a checkpoint (worker thread); never raises."""
        if self._superseded(msg, value=False):
            return
        try:
            path = self._trusted_checkpoint(msg.checkpoint_path)
            model = load_model(str(path), expected_sha256=msg.sha256,
                               device=self.device, nominal=self.nominal)
            if (model.state_dim, model.action_dim) != (self.state_dim, self.robot.num_joints):
                raise CheckpointError(f"model sizes {model.state_dim}/{model.action_dim} do not "
                                      "fit this robot")
            model = planning_model(model, self.config.task, self.robot.num_joints)
        except (CheckpointError, OSError, ValueError, RuntimeError) as error:
            self.get_logger().error(f"refusing model v{msg.version}: {error}; keeping "
                                    f"v{self.controller.model_version}")
            self.refused_models += 1
            return
        self.get_logger().info(f"accepted model v{msg.version} from {path}")
        with self._model_lock:
            self.learned_model = (model, msg.version)
            if self.model_source == LEARNED:
                self.pending_model = self.learned_model

    def _load_value(self, msg: ModelUpdate) -> None:
        """Load and check a value/policy checkpoint (worker thread): from inside model_dir,
        hash checked, its metadata and sizes those of this planner's task; never raises."""
        if self._superseded(msg, value=True) or msg.version <= self.value_version:
            return
        try:
            path = self._trusted_checkpoint(msg.checkpoint_path)
            agent = ValuePolicy.load(str(path), expected_sha256=msg.sha256, device=self.device)
            why = compatibility_error(agent.metadata, self.value_expected)
            sizes = (agent.state_dim, agent.action_dim, agent.goal_dim)
            wanted = tuple(self.value_expected[key]
                           for key in ("state_dim", "action_dim", "goal_dim"))
            if why is None and sizes != wanted:
                why = (f"its networks' sizes (state, action, goal) {sizes} are not the "
                       f"planner's {wanted}")
            if why is not None:
                raise CheckpointError(why)
            agent.eval()
        except (CheckpointError, OSError, ValueError, RuntimeError, TypeError,
                KeyError) as error:
            self.get_logger().error(f"refusing value/policy v{msg.version}: {error}; keeping "
                                    f"v{self.value_version}"
                                    + (" (none)" if self.value_version == 0 else ""))
            self.refused_values += 1
            return
        with self._model_lock:
            self.value_version = msg.version
            self.pending_prior = PlanningPrior(agent, msg.version)
            options = self.pending_prior_options or self.controller.prior_options
        dynamics = agent.metadata.get("dynamics_version")
        self.get_logger().info(
            f"accepted value/policy v{msg.version} ("
            + ("" if dynamics is None else f"trained with dynamics model v{dynamics}; ")
            + f"from {path})" + ("" if options.stage(True) != STAGE_MPC
                                 else "; unused while the value.* settings are all off"))

    def _check_prior_options(self, options: ValuePriorConfig,
                             previous: Optional[ValuePriorConfig],
                             planner_config: PlannerConfig) -> None:
        """Warn when policy-only mode is switched on (or starts on) and when the policy prior
        cannot take effect."""
        if options.policy_only and (previous is None or not previous.policy_only):
            self.get_logger().warning(
                "value.policy_only is on: commands are the learned policy's actions without "
                "planning (status 'policy'; the safety gate judges them like plans). For "
                "experiments: never the default on hardware"
                + ("" if self.value_version else "; planning on until a value/policy is "
                   "accepted"))
        if options.policy_prior and not options.policy_only \
                and planner_config.num_policy_trajectories == 0:
            self.get_logger().warning("value.policy_prior has no effect while "
                                      "planner.num_policy_trajectories is 0")

    def _nominal_model(self) -> NominalOnlyModel:
        """The hand-derived model alone, as the planner's dynamics."""
        return NominalOnlyModel(self.nominal, self.state_dim, self.robot.num_joints,
                                self.device)

    def _set_model_source(self, source: str) -> None:
        """Plan with the nominal model or the last learned one from the next tick on."""
        model_source_error(source, self.config.task)
        with self._model_lock:
            self.model_source = source
            if source == NOMINAL:
                self.pending_model = (self._nominal_model(), NOMINAL_VERSION)
            elif self.learned_model is not None:
                self.pending_model = self.learned_model
        self.get_logger().info(f"model source: {source}" + (
            "" if source == NOMINAL or self.learned_model is not None
            else " (none learned yet: planning on with the current model until one arrives)"))

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        fixed = [p.name for p in parameters
                 if p.name.startswith((WORKSPACE_PREFIX, RECOVERY_PREFIX))
                 or p.name in READ_AT_START]
        if fixed:
            return SetParametersResult(successful=False, reason=f"{fixed} are read at start "
                                       "only: restart the planner with the new values")
        for parameter in parameters:
            if parameter.name == "model_source":
                try:
                    self._set_model_source(parameter.value)
                except ValueError as error:
                    return SetParametersResult(successful=False, reason=str(error))
        changes = {p.name: p.value for p in parameters if p.name.startswith("planner.")}
        value_changes = {p.name: p.value for p in parameters
                         if p.name.startswith(VALUE_PREFIX)}
        try:
            config = read_config(self, PlannerConfig, "planner.", changes) if changes else None
            options = read_config(self, ValuePriorConfig, VALUE_PREFIX, value_changes) \
                if value_changes else None
        except (ValueError, TypeError) as error:
            return SetParametersResult(successful=False, reason=str(error))
        with self._model_lock:
            if config is not None:
                self.pending_config = config
            if options is not None:
                previous = self.pending_prior_options or self.controller.prior_options
                self.pending_prior_options = options
            planner_config = self.pending_config or self.controller.planner_config
        if options is not None:
            self._check_prior_options(options, previous, planner_config)
        return SetParametersResult(successful=True)

    # -- control loop ----------------------------------------------------------------------
    def _apply_pending(self) -> None:
        with self._model_lock:
            model, self.pending_model = self.pending_model, None
            config, self.pending_config = self.pending_config, None
            prior, self.pending_prior = self.pending_prior, None
            options, self.pending_prior_options = self.pending_prior_options, None
        if config is not None:
            self.controller.set_planner_config(config)
        if model is not None:
            self.controller.set_model(*model)
            self.get_logger().info("now planning with " + (
                "the nominal model alone" if isinstance(model[0], NominalOnlyModel)
                else f"model v{model[1]}"))
        if options is not None:
            self.controller.set_prior_options(options)
        if prior is not None:
            self.controller.set_prior(prior)
        if options is not None or prior is not None:
            current = self.controller.prior
            self.get_logger().info(
                f"value/policy {'none' if current is None else f'v{current.version}'} ("
                f"{prior_options_text(self.controller.prior_options)}): stage "
                f"{self.controller.stage}")

    def _on_timer(self) -> None:
        if not self._active:
            return  # inactive: no plan, no command (the gate holds by its watchdog)
        self._apply_pending()
        if self.latest_state is None:
            return
        arrays, received, header = self.latest_state
        now = self.get_clock().now().nanoseconds * 1e-9
        odom, odom_received = self.latest_odom if self.latest_odom is not None else (None, -1e18)
        if now - received > self.config.state_timeout_s or (
                self.stand and now - odom_received > self.config.state_timeout_s):
            self.get_logger().warning("joint state or odometry is stale; not commanding",
                                      throttle_duration_sec=2.0)
            self.stale = True
            return
        self.stale = False
        start = time.perf_counter()
        try:
            step = self.controller.step(arrays.position, arrays.velocity, odom, stamp=received)
        except Exception as error:  # noqa: BLE001 - a failed tick asks for a hold, never dies
            self.get_logger().error(f"control step failed: {error!r}", throttle_duration_sec=2.0)
            step = ControlStep(None, exploring=False, error=f"control step failed: {error!r}")
        self._publish_command(step, header)
        self.tick += 1
        self.failed_plans += int(step.failed)
        self.last_step, self.last_planning_ms = step, (time.perf_counter() - start) * 1e3
        self._log_mode()
        self._publish_status(step, self.last_planning_ms)
        every = self.config.visualize_every
        if step.plan is not None and every and self.tick % every == 0:
            self._publish_plan(step.plan)

    def _log_mode(self) -> None:
        """One line per change of the controller's mode (exploring / task / recovery)."""
        mode, previous = self.controller.mode, self.mode
        if mode == previous:
            return
        self.mode = mode
        stats = self.controller.recovery_stats
        if mode == MODE_RECOVERY:
            self.get_logger().warning(
                f"plans untrusted (disagreement above "
                f"{self.controller.recovery.disagreement_threshold:g}): recovering toward the "
                f"last trusted pose (recovery {stats.recoveries})")
        elif previous == MODE_RECOVERY:
            how = (f"done in {stats.last_time_s:.2f} s"
                   if stats.recovered != self._last_recovered else "ended by a reset")
            self.get_logger().info(f"recovery {how}; mode now: {mode}")
        else:
            self.get_logger().info(f"mode now: {mode}")
        self._last_recovered = stats.recovered

    def _publish_command(self, step: ControlStep, source: Header) -> None:
        """One PlannedCommand (the plan, or its first action), stamped with its source joint
        state; the same as a JointTrajectory with ``publish_trajectory``."""
        self.sequence += 1
        points = command_points(step, self.command_order, self.config.model_period_s,
                                self.config.stream_plan)
        self.command_pub.publish(planned_command_message(
            self.command_joints, points.commands, points.times, points.disagreement,
            source.stamp, self.sequence, self.controller.model_version, int(points.status),
            points.reason, self.config.base_frame))
        if self.trajectory_pub is not None:
            field = "effort" if not self.stand and self.config.command_mode == "effort" \
                else "positions"
            self.trajectory_pub.publish(joint_trajectory_message(
                self.command_joints, points.commands, points.times, field, source.stamp,
                self.config.base_frame))

    def _publish_diagnostics(self) -> None:
        """Planner health on /diagnostics: OK planning, WARN exploring / stale input / last plan
        failed."""
        step, stats = self.last_step, self.controller.recovery_stats
        if not self._active:
            level, message = DiagnosticStatus.WARN, "inactive (lifecycle): not commanding"
        elif self.stale or step is None:
            level, message = DiagnosticStatus.WARN, "no fresh joint state: not commanding"
        elif step.failed:
            level, message = DiagnosticStatus.WARN, f"last plan failed: {step.error}"
        elif step.exploring:
            level, message = DiagnosticStatus.OK, "exploring (no model or no goal yet)"
        elif self.mode == MODE_RECOVERY:
            level = DiagnosticStatus.WARN
            message = ("recovering: the task's plans are untrusted, planning back toward the "
                       "last trusted pose")
        elif step.from_policy:
            level = DiagnosticStatus.OK
            message = (f"commanding the learned policy v{self._prior_version()} without "
                       f"planning (model v{self.controller.model_version})")
        else:
            level = DiagnosticStatus.OK
            message = f"planning with model v{self.controller.model_version}" + (
                f" and value/policy v{self._prior_version()} ({step.stage})"
                if step.uses_prior else "")
        values = [KeyValue(key=key, value=str(value)) for key, value in (
            ("model_version", self.controller.model_version), ("commands", self.sequence),
            ("failed_plans", self.failed_plans), ("refused_models", self.refused_models),
            ("stage", "" if step is None else step.stage),
            ("value_version", self._prior_version()), ("refused_values", self.refused_values),
            ("last_step_ms", round(self.last_planning_ms, 2)), ("mode", self.mode),
            ("recoveries", stats.recoveries), ("recoveries_completed", stats.recovered),
            ("last_recovery_s", round(stats.last_time_s, 3)),
            ("mean_recovery_s", round(stats.mean_time_s, 3)))]
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: planner",
                                  hardware_id="mbrl_ros", message=message, values=values)
        self.diagnostics_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

    def _prior_version(self) -> int:
        """Version of the value/policy the controller holds (0: none)."""
        prior = self.controller.prior
        return 0 if prior is None else prior.version

    def _publish_status(self, step, elapsed_ms: float) -> None:
        cfg, stats = self.controller.planner_config, self.controller.recovery_stats
        planner = "policy" if step.from_policy else \
            "explore" if step.plan is None else cfg.method
        status = PlanStatus(header=Header(stamp=self.get_clock().now().to_msg(),
                                          frame_id=self.config.base_frame),
                            model_version=self.controller.model_version,
                            exploring=step.exploring, planning_time_ms=elapsed_ms,
                            planner=planner, mode=step.mode, recoveries=stats.recoveries,
                            recoveries_completed=stats.recovered,
                            last_recovery_s=stats.last_time_s,
                            mean_recovery_s=stats.mean_time_s, stage=step.stage,
                            value_version=self._prior_version() if step.uses_prior else 0)
        if step.plan is not None:
            disagreement = step.plan.disagreement.detach().cpu().numpy().astype(float)
            status.iterations, status.num_samples = step.plan.iterations, cfg.num_samples
            status.horizon, status.best_cost = cfg.horizon, float(step.plan.cost)
            status.disagreement = disagreement.tolist()
            status.mean_disagreement = float(disagreement.mean()) if disagreement.size else 0.0
            status.max_disagreement = float(disagreement.max()) if disagreement.size else 0.0
        elif step.from_policy:  # no plan: the one-step disagreement the command carries
            status.disagreement = [float(step.disagreement)]
            status.mean_disagreement = status.max_disagreement = float(step.disagreement)
        self.status_pub.publish(status)

    def _publish_plan(self, plan) -> None:
        states = plan.states.detach()
        if self.stand:  # the base's planned path
            ee_path = states[:, StandLayout(self.robot.num_joints).base_position].cpu().numpy()
        else:
            ee_path = self.nominal.ee_position_batch(states[:, :self.robot.num_joints]
                                                     ).cpu().numpy()
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.config.base_frame)
        disagreement = plan.disagreement.detach().cpu().numpy()
        self.markers_pub.publish(plan_markers(header, ee_path, disagreement, self.controller.goal,
                                              self.config.disagreement_colour_scale))
        self.path_pub.publish(plan_path(header, ee_path))

    def destroy_node(self) -> None:
        if self._loader is not None:
            self._loader.shutdown(wait=True, cancel_futures=True)
        super().destroy_node()


def main(args=None) -> None:
    run_node(PlannerNode, SingleThreadedExecutor, args)


if __name__ == "__main__":
    main()
