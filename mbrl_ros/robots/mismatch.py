"""Model mismatch between the URDF nominal model and the simulated "real" robot.

Applied to the MjSpec before compiling: scaled joint friction and damping, extra Coulomb and
viscous friction in proportion to each joint's effort limit, a payload at the end effector,
scaled actuator gains, a first-order actuator lag; plus random pushes on the base of legged
robots. Backlash (play between a position command and the servo's target) is stateful and
applied by the simulator with :class:`Backlash`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import mujoco
import numpy as np

from mbrl_ros.robots.mujoco_builder import BuildInfo

logger = logging.getLogger(__name__)

PAYLOAD_BODY = "payload"


@dataclass(frozen=True)
class MismatchConfig:
    """How the simulated robot differs from its URDF (all neutral by default)."""

    friction_scale: float = 1.0
    """Multiplier on every joint's dry friction (frictionloss)."""
    damping_scale: float = 1.0
    """Multiplier on every joint's viscous damping."""
    payload_mass: float = 0.0
    """Extra point-like mass at the end effector [kg]."""
    payload_radius: float = 0.03
    """Radius of the payload sphere (inertia and visual) [m]."""
    actuator_gain_scale: float = 1.0
    """Multiplier on actuator gains (motor torque per command, PD gains)."""
    coulomb_friction_fraction: float = 0.0
    """Extra dry friction on every joint, as a fraction of its effort limit (on top of the
    scaled URDF friction) [Nm per Nm]."""
    viscous_friction_fraction: float = 0.0
    """Extra viscous friction on every joint: this fraction of its effort limit per rad/s of
    joint speed (on top of the scaled URDF damping) [Nm s/rad per Nm]."""
    actuator_lag_s: float = 0.0
    """Time constant of a first-order lag between a command and the actuator (a drive's
    current loop and filters) [s]; 0: none."""
    backlash_rad: float = 0.0
    """Position-controlled joints: play between the command and the servo's target [rad] (the
    joint stops up to half of it short of a target, depending on the side it came from);
    0: none. Torque- and velocity-controlled joints have none."""
    push_rate_hz: float = 0.0
    """Mean rate of random pushes on the base (Poisson); 0 disables them."""
    push_force: float = 0.0
    """Magnitude of a push (horizontal force on the base) [N]."""
    push_duration: float = 0.1
    """How long each push lasts [s]."""

    def validate(self) -> None:
        """Raise ValueError on bad values."""
        for name in ("friction_scale", "damping_scale", "payload_mass", "push_rate_hz",
                     "push_force", "coulomb_friction_fraction", "viscous_friction_fraction",
                     "actuator_lag_s", "backlash_rad"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("actuator_gain_scale", "payload_radius", "push_duration"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def apply_mismatch(spec: mujoco.MjSpec, info: BuildInfo, config: MismatchConfig) -> None:
    """Edit ``spec`` (from :func:`build_mujoco_spec`) in place so it differs from nominal."""
    config.validate()
    efforts = dict(zip(info.joint_names, info.effort_limits))
    for joint in spec.joints:
        if joint.name in info.joint_names:
            effort = efforts[joint.name] if np.isfinite(efforts[joint.name]) else 0.0
            joint.frictionloss = (joint.frictionloss * config.friction_scale
                                  + config.coulomb_friction_fraction * effort)
            joint.damping = (joint.damping * config.damping_scale
                             + config.viscous_friction_fraction * effort)
    for name in info.actuator_names:
        actuator = spec.actuator(name)
        actuator.gainprm[0] *= config.actuator_gain_scale
        actuator.biasprm[1] *= config.actuator_gain_scale
        actuator.biasprm[2] *= config.actuator_gain_scale
        if config.actuator_lag_s > 0:
            actuator.dyntype = mujoco.mjtDyn.mjDYN_FILTEREXACT
            actuator.dynprm[0] = config.actuator_lag_s
    if config.payload_mass > 0:
        if info.ee_site is None:
            raise ValueError("payload_mass > 0 needs an end-effector link")
        ee_body = spec.site(info.ee_site).parent
        payload = ee_body.add_body(name=PAYLOAD_BODY)
        payload.explicitinertial = True
        payload.mass = config.payload_mass
        inertia = 0.4 * config.payload_mass * config.payload_radius ** 2
        payload.inertia = [inertia, inertia, inertia]
        payload.add_geom(type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[config.payload_radius, 0, 0],
                         contype=0, conaffinity=0, group=1, rgba=[0.8, 0.2, 0.2, 1])


class Backlash:
    """Play of width ``width`` [rad] per joint between commands and what the servo receives:
    the output follows an input only once it has moved past the play (a hysteresis, or
    "play", operator)."""

    def __init__(self, width: float, initial: np.ndarray) -> None:
        self.half_width = 0.5 * width
        self.output = np.array(initial, dtype=float)

    def __call__(self, command: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """The servo targets of joints ``indices`` for the new ``command`` values."""
        held = self.output[indices]
        self.output[indices] = np.clip(held, command - self.half_width,
                                       command + self.half_width)
        return self.output[indices].copy()

    def reset(self, initial: np.ndarray) -> None:
        """Restart from ``initial`` (the servo targets after a reset)."""
        self.output = np.array(initial, dtype=float)


class RandomPusher:
    """Random horizontal pushes on one body through ``xfrc_applied`` (legged robots)."""

    def __init__(self, model: mujoco.MjModel, body: str, config: MismatchConfig,
                 rng: np.random.Generator) -> None:
        self.body_id = model.body(body).id
        self.config, self.rng = config, rng
        self.push_until = -1.0
        self.force = np.zeros(3)

    def apply(self, data: mujoco.MjData, dt: float) -> None:
        """Start a push with probability ``rate * dt``; set or clear the applied force."""
        if self.config.push_rate_hz <= 0 or self.config.push_force <= 0:
            return
        if data.time >= self.push_until and self.rng.random() < self.config.push_rate_hz * dt:
            angle = self.rng.uniform(0.0, 2.0 * np.pi)
            self.force = self.config.push_force * np.array([np.cos(angle), np.sin(angle), 0.0])
            self.push_until = data.time + self.config.push_duration
            logger.debug("push %s N on body %d", self.force, self.body_id)
        active: Optional[np.ndarray] = self.force if data.time < self.push_until else None
        data.xfrc_applied[self.body_id, :3] = 0.0 if active is None else active

    def reset(self) -> None:
        """Cancel any push in progress."""
        self.push_until = -1.0
