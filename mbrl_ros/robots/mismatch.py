"""Model mismatch between the URDF nominal model and the simulated "real" robot.

Applied to the MjSpec before compiling: scaled joint friction and damping, a payload at the
end effector, scaled actuator gains; plus random pushes on the base of legged robots.
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
    push_rate_hz: float = 0.0
    """Mean rate of random pushes on the base (Poisson); 0 disables them."""
    push_force: float = 0.0
    """Magnitude of a push (horizontal force on the base) [N]."""
    push_duration: float = 0.1
    """How long each push lasts [s]."""

    def validate(self) -> None:
        """Raise ValueError on bad values."""
        for name in ("friction_scale", "damping_scale", "payload_mass", "push_rate_hz",
                     "push_force"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("actuator_gain_scale", "payload_radius", "push_duration"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def apply_mismatch(spec: mujoco.MjSpec, info: BuildInfo, config: MismatchConfig) -> None:
    """Edit ``spec`` (from :func:`build_mujoco_spec`) in place so it differs from nominal."""
    config.validate()
    for joint in spec.joints:
        if joint.name in info.joint_names:
            joint.frictionloss = joint.frictionloss * config.friction_scale
            joint.damping = joint.damping * config.damping_scale
    for name in info.actuator_names:
        actuator = spec.actuator(name)
        actuator.gainprm[0] *= config.actuator_gain_scale
        actuator.biasprm[1] *= config.actuator_gain_scale
        actuator.biasprm[2] *= config.actuator_gain_scale
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
