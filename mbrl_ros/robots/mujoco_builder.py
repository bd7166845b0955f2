"""Build a MuJoCo model from a URDF with MjSpec (no hand-written MJCF copies).

MuJoCo parses the resolved URDF; the spec is then edited: floor and light, free joint for
floating-base robots, actuators for the chosen control mode, an end-effector site, IMU and
foot-contact sensors for legged robots, and a ``home`` keyframe.

Joint order: MuJoCo orders joints by its body tree, which need not be the URDF's joint order.
The builder's public order is the canonical one (:attr:`ResolvedUrdf.joint_names`, URDF file
order): ``BuildInfo.joint_names``, the actuators (actuator i drives joint i) and every
per-joint option and limit array follow it. Index MuJoCo arrays by joint name
(``model.joint(name).qposadr`` / ``dofadr``), never by position.
"""

from __future__ import annotations

import logging
import math
import numbers
import xml.etree.ElementTree as ET
from pathlib import Path
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple, Union

import mujoco
import numpy as np

from mbrl_ros.robots.urdf_resolver import (DEFAULT_FOOT_PATTERN, WORLD_LINK, ResolvedUrdf,
                                           foot_links, is_floating_base, resolve_urdf)

logger = logging.getLogger(__name__)

CONTROL_MODES = ("effort", "position", "velocity")
HOME_KEY = "home"
EE_SITE = "ee_site"
DEFAULT_EE_LINK = "ee_link"
IMU_SITE = "imu_site"
IMU_SENSORS = ("imu_quat", "imu_gyro", "imu_accel")
# inertiafromgeom="false": links take their URDF inertia only, as in pinocchio (MuJoCo would
# otherwise give links without <inertial> the mass of their geoms)
_COMPILER_TAG = ('<mujoco><compiler fusestatic="false" discardvisual="false" '
                 'strippath="false" balanceinertia="true" inertiafromgeom="false"/></mujoco>')
_POSITION_GAINS = ("position_kp", "position_kv")


def _as_gains(value: Union[float, Sequence[float]]) -> Tuple[float, ...]:
    """One gain (a plain number) or a sequence of gains -> tuple of floats."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return (float(value),)
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class BuildOptions:
    """How to turn a URDF into a MuJoCo model."""

    control_mode: str = "effort"
    """Actuator type: 'effort' (motor), 'position' (PD servo) or 'velocity'."""
    position_kp: Tuple[float, ...] = (100.0,)
    """Position actuator stiffness [Nm/rad]: one value for all joints or one per joint
    (joint order of BuildInfo.joint_names). A plain number is accepted as one value."""
    position_kv: Tuple[float, ...] = (5.0,)
    """Position actuator damping [Nm s/rad]: one value for all joints or one per joint
    (joint order of BuildInfo.joint_names). A plain number is accepted as one value."""
    velocity_kv: float = 10.0
    """Velocity actuator gain [Nm s/rad]."""
    floating_base: Optional[bool] = None
    """Add a free joint at the root; None: yes iff the root is not 'world' and feet exist
    (see :func:`~mbrl_ros.robots.urdf_resolver.is_floating_base`)."""
    timestep: float = 0.002
    """Physics time step [s]."""
    add_floor: bool = True
    """Add a ground plane at z = 0 and a light."""
    floor_half_size: float = 5.0
    """Half side length of the floor plane [m]."""
    ee_link: Optional[str] = None
    """Link carrying the end-effector site; None: 'ee_link' if present; '' for none."""
    imu_link: str = "imu_link"
    """Link of the IMU site for floating-base robots (root link when absent)."""
    foot_link_pattern: Optional[str] = DEFAULT_FOOT_PATTERN
    """Regex (full match, case-insensitive) selecting foot links, which get touch sensors;
    when it matches none, the contact rule of
    :func:`~mbrl_ros.robots.urdf_resolver.foot_links` applies."""
    foot_site_margin: float = 0.005
    """Touch sites are this much larger than the foot's collision sphere [m]."""
    self_collision: bool = False
    """Let robot geoms collide with each other (they always collide with the floor)."""
    home_positions: Tuple[Tuple[str, float], ...] = ()
    """(joint name, position) pairs of the 'home' keyframe; other joints: 0 clipped to limits."""
    home_clearance: float = 0.002
    """Floating base: height of the lowest collision geom above the floor at home [m]."""
    search_paths: Tuple[str, ...] = ()
    """Extra directories for package:// lookups."""
    gravity_compensation: bool = False
    """Compensate the robot links' weight (MuJoCo ``gravcomp``), as torque-controlled arm
    drivers do (e.g. Franka): commands are torques on top of gravity compensation. Bodies
    added later (a payload) are not compensated. Fixed-base robots only."""

    def __post_init__(self) -> None:
        for name in _POSITION_GAINS:  # backward compatibility: a plain number is one value
            object.__setattr__(self, name, _as_gains(getattr(self, name)))

    def validate(self) -> None:
        """Raise ValueError on inconsistent options."""
        if self.control_mode not in CONTROL_MODES:
            raise ValueError(f"control_mode must be one of {CONTROL_MODES}, "
                             f"got '{self.control_mode}'")
        if self.timestep <= 0:
            raise ValueError(f"timestep must be > 0, got {self.timestep}")
        for name in ("velocity_kv", "foot_site_margin", "home_clearance", "floor_half_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in _POSITION_GAINS:
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{name} must hold one value or one per joint, got none")
            if not all(math.isfinite(v) and v >= 0 for v in values):
                raise ValueError(f"{name} must be finite and >= 0, got {list(values)}")

    def per_joint(self, name: str, joints: Sequence[str]) -> Tuple[float, ...]:
        """The per-joint gain ``name`` (e.g. 'position_kp') for ``joints``, in their order.

        Raises:
            ValueError: when it holds neither one value nor one per joint.
        """
        values = getattr(self, name)
        if len(values) == 1:
            return values * len(joints)
        if len(values) != len(joints):
            raise ValueError(f"{name} has {len(values)} values for {len(joints)} joints "
                             f"{list(joints)}; give one value (all joints) or one per joint")
        return values


@dataclass(frozen=True)
class BuildInfo:
    """What the builder made, by name, so callers never hard-code indices."""

    joint_names: Tuple[str, ...]
    """Actuated joints in canonical (URDF file) order; actuator i drives joint i."""
    actuator_names: Tuple[str, ...]
    """Actuator names, same order as joint_names."""
    control_mode: str
    """Actuator type used."""
    floating_base: bool
    """Whether the root body has a free joint."""
    root_body: str
    """Root link / body name."""
    ee_site: Optional[str]
    """End-effector site name (None when no ee link)."""
    imu_site: Optional[str]
    """IMU site name (floating-base robots)."""
    foot_bodies: Tuple[str, ...]
    """Foot link names (legged robots)."""
    touch_sensors: Tuple[str, ...]
    """Touch sensor per foot, same order as foot_bodies."""
    position_limits: np.ndarray
    """[num_joints, 2] position limits."""
    velocity_limits: np.ndarray
    """[num_joints] velocity limits."""
    effort_limits: np.ndarray
    """[num_joints] effort limits."""
    urdf: ResolvedUrdf = field(repr=False)
    """The resolved URDF the model was built from (feed the same text to pinocchio)."""


def _mesh_assets(urdf_xml: str) -> Tuple[str, Dict[str, bytes]]:
    """Rename every mesh file to a unique asset name and load its bytes.

    MuJoCo's URDF importer names meshes by file stem, so ``visual/link.obj`` and
    ``collision/link.stl`` would silently become one mesh; unique names prevent that.
    """
    robot = ET.fromstring(urdf_xml)
    names: Dict[str, str] = {}
    assets: Dict[str, bytes] = {}
    for mesh in robot.iter("mesh"):
        path = mesh.get("filename", "")
        if path not in names:
            names[path] = f"mesh{len(names)}_{Path(path).name}"
            assets[names[path]] = Path(path).read_bytes()
        mesh.set("filename", names[path])
    return ET.tostring(robot, encoding="unicode"), assets


def _check_collision_meshes(urdf: ResolvedUrdf) -> None:
    """A floating-base robot needs all its collision geometry: refuse dropped meshes."""
    if urdf.dropped_collision_meshes:
        lines = "; ".join(f"link '{mesh.link}': '{mesh.uri}': {mesh.reason}"
                          for mesh in urdf.dropped_collision_meshes)
        raise ValueError(f"floating-base robot: collision meshes could not be used (it would "
                         f"sink through the floor or fall over): {lines}")


def _add_actuators(spec: mujoco.MjSpec, joints: Sequence[str], urdf: ResolvedUrdf,
                   options: BuildOptions) -> Tuple[str, ...]:
    names = []
    if options.control_mode == "position":  # gains of the other modes are unused: not checked
        kps = options.per_joint("position_kp", joints)
        kvs = options.per_joint("position_kv", joints)
    for i, joint in enumerate(joints):
        limits = urdf.joint_limits[joint]
        actuator = spec.add_actuator(name=f"{joint}_{options.control_mode}", target=joint,
                                     trntype=mujoco.mjtTrn.mjTRN_JOINT)
        if options.control_mode == "effort":
            actuator.set_to_motor()
            ctrl = (-limits.effort, limits.effort)
        elif options.control_mode == "position":
            actuator.set_to_position(kp=kps[i], kv=kvs[i])
            ctrl = (limits.lower, limits.upper)
        else:
            actuator.set_to_velocity(kv=options.velocity_kv)
            ctrl = (-limits.velocity, limits.velocity)
        if np.all(np.isfinite(ctrl)):
            actuator.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
            actuator.ctrlrange = ctrl
        if np.isfinite(limits.effort):
            actuator.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
            actuator.forcerange = (-limits.effort, limits.effort)
        names.append(actuator.name)
    return tuple(names)


def _add_legged_sensors(spec: mujoco.MjSpec, root: str, feet: Sequence[str],
                        options: BuildOptions) -> Tuple[str, Tuple[str, ...]]:
    imu_body = spec.body(options.imu_link) or spec.body(root)
    imu_body.add_site(name=IMU_SITE, size=[0.01, 0.01, 0.01])
    for name, kind in zip(IMU_SENSORS, (mujoco.mjtSensor.mjSENS_FRAMEQUAT,
                                        mujoco.mjtSensor.mjSENS_GYRO,
                                        mujoco.mjtSensor.mjSENS_ACCELEROMETER)):
        sensor = spec.add_sensor(name=name, type=kind, objname=IMU_SITE)
        sensor.objtype = mujoco.mjtObj.mjOBJ_SITE
    touch = []
    for foot in feet:
        radius = max((g.size[0] for g in spec.body(foot).geoms
                      if g.type == mujoco.mjtGeom.mjGEOM_SPHERE and g.contype), default=0.02)
        spec.body(foot).add_site(name=f"{foot}_site",
                                 size=[radius + options.foot_site_margin, 0, 0])
        spec.add_sensor(name=f"{foot}_touch", type=mujoco.mjtSensor.mjSENS_TOUCH,
                        objtype=mujoco.mjtObj.mjOBJ_SITE, objname=f"{foot}_site")
        touch.append(f"{foot}_touch")
    return IMU_SITE, tuple(touch)


def _home_qpos(model: mujoco.MjModel, info: "BuildInfo", options: BuildOptions) -> np.ndarray:
    info_joints, urdf = info.joint_names, info.urdf
    overrides: Dict[str, float] = dict(options.home_positions)
    unknown = set(overrides) - set(info_joints)
    if unknown:
        raise ValueError(f"home_positions name unknown joints {sorted(unknown)}")
    qpos = model.qpos0.copy()
    for joint in info_joints:
        limits = urdf.joint_limits[joint]
        qpos[model.joint(joint).qposadr[0]] = np.clip(overrides.get(joint, 0.0),
                                                      limits.lower, limits.upper)
    if info.floating_base:
        data = mujoco.MjData(model)
        data.qpos[:] = qpos
        data.qpos[2] = 0.0
        mujoco.mj_kinematics(model, data)
        robot = (model.geom_bodyid > 0) & (model.geom_contype > 0)
        if not np.any(robot):
            raise ValueError(f"floating-base robot '{info.root_body}' has no collision "
                             "geometry: it cannot stand on the floor (add <collision> "
                             "elements, or build it with floating_base=False)")
        feet = np.isin(model.geom_bodyid, [model.body(foot).id for foot in info.foot_bodies])
        if np.any(robot & feet):  # feet touch the ground first; bounding spheres are coarse
            robot &= feet
        lowest = np.min(data.geom_xpos[robot, 2] - model.geom_rbound[robot])
        qpos[2] = -lowest + options.home_clearance
    return qpos


def build_mujoco_spec(urdf_source: str, options: BuildOptions = BuildOptions()
                      ) -> Tuple[mujoco.MjSpec, BuildInfo]:
    """Build (but do not compile) the MjSpec of a URDF; edit it further, then ``compile()``.

    ``urdf_source``: URDF path, ``package://`` URI or XML text. See :func:`build_mujoco_model`.
    """
    options.validate()
    urdf = resolve_urdf(urdf_source, options.search_paths)
    xml, assets = _mesh_assets(urdf.xml)
    spec = mujoco.MjSpec.from_string(xml.replace("</robot>", _COMPILER_TAG + "</robot>"),
                                     assets=assets)
    spec.option.timestep = options.timestep
    # implicit in joint damping and actuator kv: stiff PD servos on light links stay stable
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    feet = foot_links(urdf, options.foot_link_pattern)
    floating = is_floating_base(urdf, feet, options.floating_base)
    if floating:
        _check_collision_meshes(urdf)
    joints = urdf.joint_names  # canonical order; MuJoCo's own order may differ
    parsed = sorted(joint.name for joint in spec.joints)
    if parsed != sorted(joints):
        raise ValueError(f"MuJoCo and the URDF disagree on the joints: {parsed} vs "
                         f"{sorted(joints)}")
    root = urdf.root_link if urdf.root_link != WORLD_LINK else spec.worldbody.first_body().name
    if floating:
        spec.body(root).add_freejoint(name="root")
    if options.gravity_compensation:
        if floating:
            raise ValueError("gravity_compensation is for fixed-base robots only")
        for body in spec.bodies:
            if body.name != spec.worldbody.name:
                body.gravcomp = 1.0
    for geom in spec.geoms:
        if geom.contype and not options.self_collision:
            geom.conaffinity = 0  # robot geoms collide with the floor only
    if options.add_floor:
        spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE,
                                size=[options.floor_half_size, options.floor_half_size, 0.05],
                                rgba=[0.55, 0.6, 0.65, 1], contype=1, conaffinity=1)
        spec.worldbody.add_light(name="sun", pos=[0, 0, 4], dir=[0, 0, -1],
                                 type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL)
    ee_site = None
    ee_link = options.ee_link
    if ee_link is None:
        ee_link = DEFAULT_EE_LINK if spec.body(DEFAULT_EE_LINK) is not None else ""
    if ee_link:
        if spec.body(ee_link) is None:
            raise ValueError(f"ee_link '{ee_link}' is not a link of the URDF "
                             f"(links: {list(urdf.link_names)}); set ee_link='' for none")
        spec.body(ee_link).add_site(name=EE_SITE, size=[0.01, 0.01, 0.01])
        ee_site = EE_SITE
    actuators = _add_actuators(spec, joints, urdf, options)
    imu_site, touch = (_add_legged_sensors(spec, root, feet, options) if floating
                       else (None, ()))
    info = BuildInfo(
        joint_names=joints, actuator_names=actuators, control_mode=options.control_mode,
        floating_base=floating, root_body=root, ee_site=ee_site, imu_site=imu_site,
        foot_bodies=feet if floating else (), touch_sensors=touch,
        position_limits=np.array([[urdf.joint_limits[j].lower, urdf.joint_limits[j].upper]
                                  for j in joints]).reshape(-1, 2),
        velocity_limits=np.array([urdf.joint_limits[j].velocity for j in joints]),
        effort_limits=np.array([urdf.joint_limits[j].effort for j in joints]), urdf=urdf)
    return spec, info


def add_home_keyframe(spec: mujoco.MjSpec, info: BuildInfo,
                      options: BuildOptions = BuildOptions()) -> mujoco.MjModel:
    """Compile ``spec``, add the 'home' keyframe to it, and return the recompiled model."""
    model = spec.compile()
    qpos = _home_qpos(model, info, options)
    ctrl = np.zeros(model.nu)
    if options.control_mode == "position":
        ctrl = np.array([qpos[model.joint(j).qposadr[0]] for j in info.joint_names])
    act = np.zeros(model.na)  # actuators with a lag start settled on their home command
    for actuator in range(model.nu):
        if model.actuator_actadr[actuator] >= 0:
            act[model.actuator_actadr[actuator]] = ctrl[actuator]
    spec.add_key(name=HOME_KEY, qpos=qpos, ctrl=ctrl, act=act)
    return spec.compile()


def build_mujoco_model(urdf_source: str, options: BuildOptions = BuildOptions()
                       ) -> Tuple[mujoco.MjModel, BuildInfo]:
    """URDF (path, ``package://`` URI or XML text) -> compiled MuJoCo model with a 'home' key.

    Returns ``(model, info)``; ``info`` names the joints, actuators, sites and sensors made.
    Fixed joints are kept as bodies (``fusestatic=false``) so every URDF link is a body.
    """
    spec, info = build_mujoco_spec(urdf_source, options)
    return add_home_keyframe(spec, info, options), info
