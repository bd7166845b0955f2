"""The robot-side pieces the planner and the trainer share: robot, nominal model and task cost.

State = ``[q, qd]`` of the robot's joints in URDF order; action = one command per joint: a
torque (``command_mode`` "effort") or a position target for the driver's joint servo
("position", as a ros2_control position controller or a joint impedance controller takes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from mbrl_ros.core.command_limits import exploration_lead
from mbrl_ros.core.exploration import ExplorationConfig, SmoothExplorer
from mbrl_ros.core.costs import (EffortCost, EndEffectorCost, JointLimitCost,
                                 JointPositionCost, SmoothnessCost, TaskCost, VelocityCost)
from mbrl_ros.robots.analytical import AnalyticalConfig, AnalyticalDynamics
from mbrl_ros.robots.defaults import UNBOUNDED_RANGE as FULL_TURN
from mbrl_ros.robots.defaults import range_centre, range_half_width
from mbrl_ros.robots.robot_model import RobotModel
from mbrl_ros.robots.servo_model import JointServoModel, ServoConfig
from mbrl_ros.robots.trajectory import joint_path

COMMAND_MODES = ("effort", "position")
"""What the reaching task commands: joint torques or joint position targets."""


@dataclass(frozen=True)
class ReachCostConfig:
    """Weights of the end-effector reaching cost; a weight of 0 leaves its term out."""

    end_effector_weight: float = 200.0
    """Cost per squared metre of end-effector distance to the goal, per step."""
    velocity_weight: float = 0.05
    """Cost per squared rad/s of joint velocity, per step."""
    effort_weight: float = 1.0e-5
    """Cost per squared N m of joint torque, per step."""
    joint_limit_weight: float = 100.0
    """Soft barrier weight near joint limits (the planner's hard limits are separate)."""
    joint_limit_margin: float = 0.1
    """Distance to a position limit [rad] below which the barrier grows."""
    velocity_limit_weight: float = 100.0
    """Soft barrier weight near the joint velocity limits."""
    velocity_limit_fraction: float = 0.6
    """The velocity barrier starts at this fraction of each URDF velocity limit."""
    posture_weight: float = 0.0
    """Cost per squared rad of distance to ``posture``: settles the arm's null space (a 7-DoF
    arm reaching a 3-D goal would otherwise drift toward its joint limits)."""
    posture: Tuple[float, ...] = ()
    """Preferred joint positions for the posture term; empty: the middle of each range."""
    smoothness_weight: float = 0.0
    """Cost per squared N m of change between consecutive torques."""
    discount: float = 1.0
    """Per-step discount of the task cost over the horizon."""

    def validate(self) -> "ReachCostConfig":
        """Raise ValueError on negative weights or a discount outside (0, 1]."""
        if not 0.0 < self.velocity_limit_fraction <= 1.0:
            raise ValueError("ReachCostConfig.velocity_limit_fraction must be in (0, 1], "
                             f"got {self.velocity_limit_fraction}")
        for name in ("end_effector_weight", "velocity_weight", "effort_weight",
                     "joint_limit_weight", "joint_limit_margin", "smoothness_weight",
                     "velocity_limit_weight", "posture_weight"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"ReachCostConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.discount <= 1.0:
            raise ValueError(f"ReachCostConfig.discount must be in (0, 1], got {self.discount}")
        return self


def load_robot(urdf: str, ee_frame: str = "ee_link", search_paths: Sequence[str] = ()
               ) -> RobotModel:
    """The pinocchio model of a fixed-base robot from a URDF path, package:// URI or XML."""
    return RobotModel.from_urdf(urdf, search_paths, ee_frame=ee_frame or None)


def nominal_dynamics(robot: RobotModel, period_s: float, substeps: int,
                     device: torch.device, gravity_compensated: bool = False,
                     command_mode: str = "effort", servo: Optional[ServoConfig] = None):
    """The nominal model under the residual, batched in torch, one model period per step.

    "effort": the URDF's rigid-body model (``substeps`` semi-implicit Euler steps;
    ``gravity_compensated``: the driver cancels the links' weight, so the model has no
    gravity). "position": the driver's joint servo with gains ``servo``
    (:class:`~mbrl_ros.robots.servo_model.JointServoModel`). Both provide
    ``ee_position_batch`` (URDF forward kinematics) for the task cost."""
    if command_mode not in COMMAND_MODES:
        raise ValueError(f"command_mode must be one of {COMMAND_MODES}, got {command_mode!r}")
    if command_mode == "position":
        if servo is None:
            raise ValueError("command_mode 'position' needs the servo gains (servo_kp, servo_kd)")
        return JointServoModel(robot, servo, period_s, device)
    return AnalyticalDynamics(robot, AnalyticalConfig(dt=period_s, substeps=substeps,
                                                      gravity_compensated=gravity_compensated),
                              device=device)


def planning_range(robot: RobotModel) -> Tuple[np.ndarray, np.ndarray]:
    """([J], [J]) position targets the reach task plans within: the joint limits, except that a
    joint allowed more than a turn is used within one turn around its range centre (every
    angle is there once, so no pose is lost, and sampling noise and exploration scale with a
    turn rather than with several)."""
    centre, half = range_centre(robot), range_half_width(robot)
    return (np.maximum(robot.position_lower, centre - half),
            np.minimum(robot.position_upper, centre + half))


def reach_limits(robot: RobotModel, command_mode: str, velocity_limit_fraction: float) -> dict:
    """The planner's hard limits: actions within the effort limits or the planning range
    (:func:`planning_range`), predicted states within the position limits and
    ``velocity_limit_fraction`` x the velocity limits."""
    velocity = velocity_limit_fraction * robot.velocity_limits
    if command_mode == "position":
        low, high = planning_range(robot)
    else:
        low, high = -robot.effort_limits, robot.effort_limits
    return dict(action_low=tuple(low), action_high=tuple(high),
                state_low=tuple(np.concatenate([robot.position_lower, -velocity])),
                state_high=tuple(np.concatenate([robot.position_upper, velocity])))


def reach_explorer(config: ExplorationConfig, robot: RobotModel, command_mode: str,
                   period_s: float, gravity_compensated: bool = False,
                   servo_kp=0.0) -> SmoothExplorer:
    """Smooth random exploration in the task's command mode (effort: inertia-aware; position:
    targets within what the safety gate passes for exploration, from ``servo_kp``)."""
    if command_mode == "position":
        low, high = planning_range(robot)
        return SmoothExplorer(config, "position", low, high, high, period_s,
                              velocity_limit=robot.velocity_limits,
                              position_lead=exploration_lead(robot.effort_limits, servo_kp))

    def gravity_and_inertia(positions: np.ndarray):
        gravity, inertia = robot.gravity_and_inertia(positions)
        return (0.0 * gravity if gravity_compensated else gravity), inertia

    # joints without position limits (continuous joints) explore within one turn
    plan_low, plan_high = planning_range(robot)
    low = np.where(np.isfinite(robot.position_lower), robot.position_lower, plan_low)
    high = np.where(np.isfinite(robot.position_upper), robot.position_upper, plan_high)
    return SmoothExplorer(config, "effort", low, high, robot.effort_limits, period_s,
                          gravity_and_inertia, robot.velocity_limits)


def reach_warm_start(robot: RobotModel, command_mode: str, period_s: float,
                     speed_fraction: float) -> Optional["ReachWarmStart"]:
    """The reach task's goal seed: position targets only, ``speed_fraction`` 0 disables it."""
    if command_mode != "position" or speed_fraction <= 0:
        return None
    return ReachWarmStart(robot, period_s, speed_fraction)


class ReachWarmStart:
    """Position mode: seeds the planner with a joint path to the goal's inverse kinematics.

    Sampling-based MPC over a short horizon finds the way to a far goal slowly and can stall
    in a local minimum of a 7-DoF arm's cost; the URDF's kinematics (accurate on any robot,
    unlike its dynamics) give the planner a good first guess: a straight joint-space path from
    the current position to the IK solution, at ``speed_fraction`` of the velocity limits,
    then held. The learned model and the sampling refine it. Without a goal: hold position.
    """

    def __init__(self, robot: RobotModel, period_s: float, speed_fraction: float = 0.5) -> None:
        if not 0.0 < speed_fraction <= 1.0:
            raise ValueError(f"speed_fraction must be in (0, 1], got {speed_fraction}")
        self.robot = robot
        self.max_step = speed_fraction * robot.velocity_limits * period_s
        self.low, self.high = planning_range(robot)
        self.wraps = (robot.position_upper - robot.position_lower) > FULL_TURN

    def __call__(self, position: np.ndarray, goal: Optional[np.ndarray],
                 horizon: int) -> np.ndarray:
        """[horizon, J] position targets."""
        start = np.clip(position, self.robot.position_lower, self.robot.position_upper)
        if goal is None:
            return np.repeat(start[None], horizon, 0)
        target = self.robot.inverse_kinematics(goal, initial_positions=start).joint_positions
        # a joint of more than a turn: the same angle nearest to where the joint is
        nearest = start + np.remainder(target - start + np.pi, FULL_TURN) - np.pi
        target = np.clip(np.where(self.wraps, nearest, target), self.low, self.high)
        return joint_path(start, target, horizon, self.max_step)


def build_reach_cost(robot: RobotModel, fk, config: ReachCostConfig,
                     target: Optional[np.ndarray], device: torch.device) -> TaskCost:
    """End-effector reaching cost over ``[q, qd]`` states and torque actions.

    Args:
        robot: joint limits come from here.
        fk: batched forward kinematics ``[M, J] -> [M, 3]``.
        target: initial end-effector goal [3] (None: the current end-effector pose is set
            later with ``cost.term("end_effector").set_target``).
    """
    config.validate()
    joints = robot.num_joints
    positions, velocities = list(range(joints)), list(range(joints, 2 * joints))
    state_dim = 2 * joints
    goal = np.zeros(3) if target is None else np.asarray(target, dtype=float)
    terms = [EndEffectorCost(fk, positions, goal.tolist(), config.end_effector_weight,
                             state_dim, device)]
    if config.velocity_weight > 0:
        terms.append(VelocityCost(velocities, config.velocity_weight, state_dim, device))
    if config.effort_weight > 0:
        terms.append(EffortCost(config.effort_weight, joints, device))
    # joints without position limits (continuous joints) have no barrier
    finite = np.isfinite(robot.position_lower) & np.isfinite(robot.position_upper)
    bounded = np.flatnonzero(finite)
    if config.joint_limit_weight > 0 and bounded.size:
        terms.append(JointLimitCost(bounded.tolist(), robot.position_lower[bounded].tolist(),
                                    robot.position_upper[bounded].tolist(),
                                    config.joint_limit_margin, config.joint_limit_weight,
                                    state_dim, device))
    if config.posture_weight > 0:
        middle = 0.5 * (np.where(finite, robot.position_lower, 0.0)
                        + np.where(finite, robot.position_upper, 0.0))
        posture = (np.asarray(config.posture, dtype=float) if config.posture else
                   np.where(finite, middle, range_centre(robot)))
        if posture.shape != (joints,):
            raise ValueError(f"posture needs {joints} values, got {len(config.posture)}")
        terms.append(JointPositionCost(positions, posture.tolist(), config.posture_weight,
                                       state_dim, device))
    if config.velocity_limit_weight > 0:
        limit = robot.velocity_limits
        margin = (1.0 - config.velocity_limit_fraction) * limit
        terms.append(JointLimitCost(velocities, (-limit).tolist(), limit.tolist(),
                                    margin.tolist(), config.velocity_limit_weight, state_dim,
                                    device))
    if config.smoothness_weight > 0:
        terms.append(SmoothnessCost(config.smoothness_weight, joints, device))
    return TaskCost(terms, config.discount)
