"""Robot-derived defaults: a home pose, joint servo gains and a legged robot's stand postures.

One rule per quantity, the same for every robot, so a new URDF needs no hand-typed per-joint
list. The config generator (``mbrl-ros robot-config``) writes these values into a parameters
file, and the nodes compute the same values when a per-joint parameter is left out.

* **Home (arms)**: among configurations drawn in the central half of every joint range, the one
  farthest from singular (largest position manipulability ``sqrt(det(J J^T))``) that has the
  end effector raised above the base and no joint below it — a "ready" pose away from limits,
  singularities and the surface the arm stands on.
* **Servo gains**: the same closed-loop bandwidth on every joint of every robot. A joint of
  effective inertia ``m`` (``1 / (M^-1)_ii`` at home) under ``kp (u - q) - kd qd`` has natural
  frequency ``sqrt(kp / m)``; ``kp = m (2 pi f)^2`` and ``kd = 2 zeta sqrt(kp m)``. Legged
  robots' stance joints also carry the body: ``kp`` is raised so that a foot's share of the
  robot's weight, acting at the foot's distance from the joint, moves it at most ``max_sag_rad``.
  An arm's joints carry its payload: ``kp`` is raised so that the rated payload (a fixed
  fraction of the arm's own mass) at the end effector moves a joint at most ``max_sag_rad``.
  ``kp`` is capped so that the servo saturates the URDF effort limit only beyond
  ``saturation_error_rad`` of tracking error.
* **Stand postures (legged)**: every foot straight below where it hangs at the zero
  configuration, at a fraction of the leg's length below its first joint (``stand_fraction``
  standing, ``crouch_fraction`` crouched), solved by inverse kinematics within the joint limits
  with the knees bent backwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import pinocchio as pin

from mbrl_ros.robots.robot_model import RobotModel

logger = logging.getLogger(__name__)

GRAVITY = 9.81
"""Standard gravity [m/s^2]."""
UNBOUNDED_RANGE = 2.0 * np.pi
"""A joint range at least this wide counts as unbounded: its centre is taken as 0."""
HEIGHT_TOLERANCE = 1e-6
"""A joint this little below the base still counts as on it [m]."""
MOVING_TOLERANCE = 1e-6
"""A joint moves a foot when the foot's Jacobian column is longer than this [m/rad]."""


@dataclass(frozen=True)
class DefaultsConfig:
    """Settings of the robot-derived defaults (one rule for every robot)."""

    bandwidth_hz: float = 3.0
    """Closed-loop bandwidth of every joint servo [Hz]."""
    damping_ratio: float = 1.0
    """Damping ratio of every joint servo (1: critically damped)."""
    saturation_error_rad: float = 0.1
    """Tracking error at which a servo reaches the URDF effort limit [rad or m]; caps kp."""
    max_sag_rad: float = 0.1
    """A joint gives at most this much under its design load [rad]: legged robots, the foot's
    share of the robot's weight; arms, the rated payload at the end effector."""
    rated_payload_fraction: float = 0.2
    """Arms: the payload an arm is rated for, as a fraction of its own mass (collaborative and
    industrial arms carry 15-30 %: Franka 3 of 18 kg, UR5 5 of 18 kg)."""
    home_samples: int = 2000
    """Arms: random configurations searched for the home pose."""
    home_range_fraction: float = 0.5
    """Arms: the home is drawn within this central fraction of every joint range."""
    home_min_elevation: float = 0.3
    """Arms: the end effector's height above the base at home, at least this fraction of its
    distance from the base (and no joint below the base: the floor or the table)."""
    stand_fraction: float = 0.7
    """Legged: standing foot depth below the leg's first joint, fraction of the leg length."""
    crouch_fraction: float = 0.35
    """Legged: crouched foot depth, fraction of the leg length."""
    knee_seed_rad: float = 1.0
    """Legged: knee bend the stand-pose IK starts from [rad]."""
    ik_iterations: int = 300
    """Legged: damped least-squares iterations per leg."""
    ik_damping: float = 1e-4
    """Legged: damping of the least-squares step."""
    ik_tolerance: float = 1e-4
    """Legged: foot position tolerance [m]."""
    seed: int = 0
    """Random seed of the home search (deterministic defaults)."""

    def validate(self) -> "DefaultsConfig":
        """Raise ValueError on a bad setting; return self."""
        for name in ("bandwidth_hz", "damping_ratio", "saturation_error_rad", "max_sag_rad",
                     "ik_damping", "ik_tolerance", "knee_seed_rad"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("home_range_fraction", "home_min_elevation", "stand_fraction",
                     "crouch_fraction", "rated_payload_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.home_samples < 1 or self.ik_iterations < 1:
            raise ValueError("home_samples and ik_iterations must be >= 1")
        return self


def range_centre(robot: RobotModel) -> np.ndarray:
    """[J] centre of each joint range; 0 for unbounded or at least one-turn-wide ranges."""
    lower, upper = robot.position_lower, robot.position_upper
    wide = ~np.isfinite(lower) | ~np.isfinite(upper) | (upper - lower >= UNBOUNDED_RANGE)
    return np.where(wide, np.clip(0.0, lower, upper), 0.5 * (np.nan_to_num(lower)
                                                             + np.nan_to_num(upper)))


def range_half_width(robot: RobotModel) -> np.ndarray:
    """[J] half width of each joint range, at most half a turn."""
    width = np.minimum(robot.position_upper - robot.position_lower, UNBOUNDED_RANGE)
    return 0.5 * width


def position_jacobian(robot: RobotModel, frame: str, q: np.ndarray,
                      base_pose: Optional[np.ndarray] = None) -> np.ndarray:
    """[3, J] Jacobian of a frame's world position w.r.t. the joints (base held), canonical
    joint order (pinocchio's frame Jacobian, as the IK uses)."""
    jacobian = pin.computeFrameJacobian(robot.model, robot.data,
                                        robot.full_configuration(q, base_pose),
                                        robot.frame_id(frame), pin.LOCAL_WORLD_ALIGNED)
    return jacobian[:3, robot.v_indices]


def arm_home(robot: RobotModel, config: DefaultsConfig = DefaultsConfig()) -> np.ndarray:
    """[J] home pose of a fixed-base arm: the most manipulable sampled configuration with the
    end effector above the base (see the module docstring)."""
    config.validate()
    if robot.ee_frame_id is None:
        raise ValueError("the arm home needs an end-effector frame")
    frame = robot.model.frames[robot.ee_frame_id].name
    rng = np.random.default_rng(config.seed)
    centre = range_centre(robot)
    half = range_half_width(robot) * config.home_range_fraction
    best, best_score = None, -np.inf
    for _ in range(config.home_samples):
        q = rng.uniform(centre - half, centre + half)
        full = robot.full_configuration(q)
        position = robot.frame_pose(frame, full)[0]
        if position[2] < config.home_min_elevation * np.linalg.norm(position) or any(
                robot.frame_pose(name, full)[0][2] < -HEIGHT_TOLERANCE
                for name in robot.joint_names):
            continue
        jacobian = position_jacobian(robot, frame, q)
        score = float(np.sqrt(max(np.linalg.det(jacobian @ jacobian.T), 0.0)))
        if score > best_score:
            best, best_score = q, score
    if best is None:
        raise ValueError(f"no sampled configuration has the end effector '{frame}' raised above "
                         "the base with every joint above it; set home_positions by hand")
    return best


@dataclass(frozen=True)
class ServoGains:
    """Joint servo gains and why they are what they are."""

    kp: np.ndarray
    """[J] stiffness [N m/rad or N/m]."""
    kd: np.ndarray
    """[J] damping [N m s/rad or N s/m]."""
    effective_inertia: np.ndarray
    """[J] effective inertia at home [kg m^2 or kg]."""
    load_torque: np.ndarray
    """[J] static design load at home carried by the servo [N m or N]."""
    limited_by: Tuple[str, ...]
    """Per joint: "bandwidth", "load" or "effort" (which rule set kp)."""


def servo_gains(robot: RobotModel, home: np.ndarray, config: DefaultsConfig = DefaultsConfig(),
                load_torque: Optional[np.ndarray] = None) -> ServoGains:
    """Servo gains for the same bandwidth on every joint (see the module docstring).

    ``load_torque``: [J] static torques the servos hold at home (legged stance, an arm's
    payload); None: none.
    """
    config.validate()
    _, inertia = robot.gravity_and_inertia(np.asarray(home, dtype=float))
    omega = 2.0 * np.pi * config.bandwidth_hz
    load = np.zeros(robot.num_joints) if load_torque is None else np.abs(load_torque)
    by_bandwidth = inertia * omega ** 2
    by_load = load / config.max_sag_rad
    cap = robot.effort_limits / config.saturation_error_rad
    kp = np.minimum(np.maximum(by_bandwidth, by_load), cap)
    limited = tuple("effort" if k >= c else ("load" if bl > bb else "bandwidth")
                    for k, c, bl, bb in zip(kp, cap, by_load, by_bandwidth))
    kd = 2.0 * config.damping_ratio * np.sqrt(kp * inertia)
    return ServoGains(kp, kd, inertia, load, limited)


@dataclass(frozen=True)
class StandPostures:
    """A legged robot's standing and crouched joint positions."""

    stand: np.ndarray
    """[J] standing posture."""
    crouch: np.ndarray
    """[J] crouched posture (where the robot starts)."""
    load_torque: np.ndarray
    """[J] joint torques holding the robot's weight at the standing posture."""
    legs: Dict[str, Tuple[int, ...]]
    """Foot link -> indices of the joints of its leg (root to foot)."""


def leg_joints(robot: RobotModel, feet: Sequence[str]) -> Dict[str, Tuple[int, ...]]:
    """Foot link -> indices (canonical order) of the joints between the root and that foot.

    Found kinematically: a joint belongs to a leg when moving it moves the foot."""
    q = range_centre(robot)
    legs = {}
    for foot in feet:
        jacobian = position_jacobian(robot, foot, q)
        moving = np.flatnonzero(np.linalg.norm(jacobian, axis=0) > MOVING_TOLERANCE)
        if moving.size == 0:
            raise ValueError(f"no joint moves foot '{foot}'")
        legs[foot] = tuple(int(i) for i in moving)
    return legs


def _leg_ik(robot: RobotModel, foot: str, joints: Tuple[int, ...], target: np.ndarray,
            q: np.ndarray, config: DefaultsConfig) -> Tuple[np.ndarray, float]:
    """Damped least squares on one leg's joints; returns (q, final error [m])."""
    q = q.copy()
    lower, upper = robot.position_lower[list(joints)], robot.position_upper[list(joints)]
    error = np.inf
    for _ in range(config.ik_iterations):
        position = robot.frame_pose(foot, robot.full_configuration(q))[0]
        residual = target - position
        error = float(np.linalg.norm(residual))
        if error < config.ik_tolerance:
            break
        jacobian = position_jacobian(robot, foot, q)[:, list(joints)]
        gram = jacobian @ jacobian.T + config.ik_damping * np.eye(3)
        step = jacobian.T @ np.linalg.solve(gram, residual)
        q[list(joints)] = np.clip(q[list(joints)] + step, lower, upper)
    return q, error


def _knee_behind(robot: RobotModel, joints: Tuple[int, ...], q: np.ndarray) -> float:
    """How far the leg's last joint (its knee) lies behind its first joint along x [m]."""
    full = robot.full_configuration(q)
    first = robot.frame_pose(robot.joint_names[joints[0]], full)[0]
    knee = robot.frame_pose(robot.joint_names[joints[-1]], full)[0]
    return float(first[0] - knee[0])


def stand_postures(robot: RobotModel, feet: Sequence[str],
                   config: DefaultsConfig = DefaultsConfig()) -> StandPostures:
    """Standing and crouched postures of a legged robot (see the module docstring)."""
    config.validate()
    if not robot.floating_base or not feet:
        raise ValueError("stand postures need a floating-base robot with feet")
    legs = leg_joints(robot, feet)
    zero = np.zeros(robot.num_joints)  # the URDF's zero: geometry only, may be outside limits
    postures = []
    for fraction in (config.stand_fraction, config.crouch_fraction):
        q = range_centre(robot) if not postures else postures[0].copy()
        for foot, joints in legs.items():
            first = robot.frame_pose(robot.joint_names[joints[0]],
                                     robot.full_configuration(zero))[0]
            hanging = robot.frame_pose(foot, robot.full_configuration(zero))[0]
            length = float(np.linalg.norm(first - hanging))
            target = np.array([hanging[0], hanging[1], first[2] - fraction * length])
            q = _best_leg_solution(robot, foot, joints, target, q, config)
        postures.append(q)
    stand, crouch = postures
    return StandPostures(stand, crouch, stance_load(robot, legs, stand), legs)


def _best_leg_solution(robot: RobotModel, foot: str, joints: Tuple[int, ...],
                       target: np.ndarray, q: np.ndarray, config: DefaultsConfig) -> np.ndarray:
    """IK from both knee bends; the converged one with the knee farther behind wins."""
    candidates = []
    for sign in (1.0, -1.0):
        seed = q.copy()
        knee = joints[-1]
        seed[knee] = np.clip(seed[knee] + sign * config.knee_seed_rad,
                             robot.position_lower[knee], robot.position_upper[knee])
        solution, error = _leg_ik(robot, foot, joints, target, seed, config)
        candidates.append((error > 10 * config.ik_tolerance,
                           -_knee_behind(robot, joints, solution), error, solution))
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    failed, _, error, solution = candidates[0]
    if failed:
        logger.warning("foot '%s': no posture within the joint limits reaches %s (best: %.3f m "
                       "away)", foot, np.round(target, 3).tolist(), error)
    return solution


def stance_load(robot: RobotModel, legs: Dict[str, Tuple[int, ...]],
                posture: np.ndarray) -> np.ndarray:
    """[J] load torque per joint: the foot's share of the robot's weight at the foot's
    distance from the joint (the lever of any force on the foot, whatever its direction)."""
    force = robot.total_mass() * GRAVITY / len(legs)
    load = np.zeros(robot.num_joints)
    for foot in legs:
        load += force * np.linalg.norm(position_jacobian(robot, foot, posture), axis=0)
    return load


def rated_payload(robot: RobotModel, config: DefaultsConfig = DefaultsConfig()) -> float:
    """An arm's rated payload [kg]: ``rated_payload_fraction`` of its own mass."""
    return config.rated_payload_fraction * robot.total_mass()


def payload_load(robot: RobotModel, home: np.ndarray,
                 config: DefaultsConfig = DefaultsConfig()) -> np.ndarray:
    """[J] an arm's load per joint: the rated payload's weight at the end effector's distance
    from the joint (the lever of any force on it, whatever its direction)."""
    if robot.ee_frame_id is None:
        raise ValueError("the payload load needs an end-effector frame")
    frame = robot.model.frames[robot.ee_frame_id].name
    weight = rated_payload(robot, config) * GRAVITY
    return weight * np.linalg.norm(position_jacobian(robot, frame, home), axis=0)


def robot_defaults(robot: RobotModel, config: DefaultsConfig = DefaultsConfig()
                   ) -> Tuple[np.ndarray, ServoGains]:
    """(home [J], servo gains) of any robot by the rules above: legged robots start crouched
    and their gains hold the standing robot; arms start at :func:`arm_home` (the range centre
    without an end effector)."""
    if robot.floating_base and robot.foot_links:
        postures = stand_postures(robot, robot.foot_links, config)
        return postures.crouch, servo_gains(robot, postures.stand, config,
                                            postures.load_torque)
    if robot.ee_frame_id is not None and not robot.floating_base:
        home = arm_home(robot, config)
        return home, servo_gains(robot, home, config, payload_load(robot, home, config))
    home = np.clip(range_centre(robot), robot.position_lower, robot.position_upper)
    return home, servo_gains(robot, home, config)
