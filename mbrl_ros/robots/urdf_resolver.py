"""Load a URDF, resolve its mesh URIs and normalise it so MuJoCo and pinocchio read one model.

The result is a URDF string that MuJoCo, pinocchio and the batched analytical model all read,
so the models are always built from the same text. On the way the text is normalised:

* mesh URIs (``package://``, ``file://``, relative) become absolute paths; meshes MuJoCo cannot
  read (e.g. ``.dae``) and missing mesh files are dropped with a logged warning (the link keeps
  its inertia); dropped *collision* meshes are also listed in
  :attr:`ResolvedUrdf.dropped_collision_meshes` (a legged robot cannot do without them);
* mimic joints become fixed joints (locked at 0 clipped into their limits), because MuJoCo
  would couple them by an equality constraint that pinocchio and the analytical model ignore;
* inertias that are not physical (not positive definite, triangle inequality violated) are
  replaced by the nearest physical one, and moving links without any mass get a small one,
  because MuJoCo refuses both;

each change is logged and listed in :attr:`ResolvedUrdf.warnings`.

Canonical joint order: the actuated (revolute, continuous, prismatic) joints in the order they
appear in the URDF file (:attr:`ResolvedUrdf.joint_names`). Every public per-joint array of
the robot models follows it, whatever order MuJoCo or pinocchio use inside.
"""

from __future__ import annotations

import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pinocchio as pin
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

logger = logging.getLogger(__name__)

MUJOCO_MESH_SUFFIXES = (".stl", ".obj", ".msh")
"""Mesh file types MuJoCo reads natively."""
WORLD_LINK = "world"
"""Name of the URDF link that stands for the fixed world (fixed-base robots attach to it)."""
FIXED_JOINT = "fixed"
"""URDF type of a rigid joint."""
CONTINUOUS_JOINT = "continuous"
"""URDF type of an unbounded revolute joint."""
PRISMATIC_JOINT = "prismatic"
"""URDF type of a sliding joint."""
ACTUATED_JOINT_TYPES = ("revolute", CONTINUOUS_JOINT, PRISMATIC_JOINT)
"""URDF joint types that become actuated 1-DoF joints; other non-fixed types are refused."""
URDF_DEFAULT_AXIS = (1.0, 0.0, 0.0)
"""Joint axis when a URDF joint has no ``<axis>`` (URDF specification)."""
DEFAULT_FOOT_PATTERN = r".*_foot"
"""Default regex (full match, case-insensitive) of foot link names."""
ROS_PACKAGE_PATH = "ROS_PACKAGE_PATH"
"""Environment variable of ROS 1 style package directories (``os.pathsep`` separated)."""
PACKAGE_MANIFEST = "package.xml"
"""File naming a ROS package in its ``<name>`` element."""
INERTIA_EIGENVALUE_FLOOR = 1e-6
"""Smallest principal moment of inertia a link may have, relative to its largest."""
INERTIA_TRIANGLE_TOLERANCE = 1e-9
"""Relative slack on the triangle inequality of principal moments (floating-point rounding)."""
MIN_GYRATION_RADIUS = 0.01
"""[m] Radius of gyration of the isotropic inertia given to a massive link without any."""
MASSLESS_LINK_MASS = 1e-3
"""[kg] Mass given to a moving link that (with its rigidly attached links) has none."""
FOOT_HEIGHT_BAND = 0.2
"""Contact rule for feet: a foot lies within this fraction of the depth of the lowest
contact-capable tip (below the root, zero joint positions) above that tip."""
_INERTIA_KEYS = ("ixx", "ixy", "ixz", "iyy", "iyz", "izz")
_INERTIA_INDEX = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
_NUMBER_FORMAT = "{:.17g}"  # round-trips a float64 exactly


@dataclass(frozen=True)
class JointLimits:
    """Limits and dynamics of one actuated URDF joint (as pinocchio reads them)."""

    lower: float
    """Lower position limit [rad or m] (-inf for continuous joints or when not given)."""
    upper: float
    """Upper position limit [rad or m] (+inf for continuous joints or when not given)."""
    velocity: float
    """Velocity limit [rad/s or m/s] (inf when not given)."""
    effort: float
    """Effort limit [Nm or N] (inf when not given)."""
    damping: float
    """Viscous damping [Nm s/rad]."""
    friction: float
    """Coulomb (dry) friction [Nm]."""


@dataclass(frozen=True)
class DroppedMesh:
    """A collision mesh that could not be used (missing file or package, unreadable type)."""

    link: str
    """Link that carried it."""
    uri: str
    """The mesh's URI as written in the URDF."""
    reason: str
    """Why it was dropped, naming the places searched."""


@dataclass(frozen=True)
class ResolvedUrdf:
    """A URDF with absolute mesh paths, normalised for MuJoCo and pinocchio alike."""

    xml: str
    """URDF text with absolute mesh paths (mimic joints fixed, inertias repaired)."""
    base_dir: str
    """Directory relative mesh paths were resolved against."""
    root_link: str
    """Name of the root link of the kinematic tree."""
    link_names: Tuple[str, ...]
    """All link names, in file order."""
    joint_names: Tuple[str, ...]
    """Actuated joints in file order: the canonical joint order of every model."""
    joint_limits: Dict[str, JointLimits] = field(default_factory=dict)
    """Actuated joints in canonical order -> limits and dynamics (read by pinocchio)."""
    warnings: Tuple[str, ...] = ()
    """What was dropped or changed while resolving, one sentence each."""
    dropped_collision_meshes: Tuple[DroppedMesh, ...] = ()
    """Collision meshes dropped while resolving (fatal for a floating-base robot)."""


@dataclass(frozen=True)
class _Tree:
    """Kinematic tree of a URDF by link name."""

    parent: Dict[str, str]
    """Child link -> parent link."""
    joint_type: Dict[str, str]
    """Child link -> type of the joint above it."""
    children: Dict[str, List[str]]
    """Link -> child links, in the file order of their joints."""


def _tree(robot: ET.Element) -> _Tree:
    parent: Dict[str, str] = {}
    joint_type: Dict[str, str] = {}
    children: Dict[str, List[str]] = {link.get("name"): [] for link in robot.findall("link")}
    for joint in robot.findall("joint"):
        child, above = joint.find("child").get("link"), joint.find("parent").get("link")
        parent[child], joint_type[child] = above, joint.get("type")
        children.setdefault(above, []).append(child)
    return _Tree(parent, joint_type, children)


def _descendants(tree: _Tree, link: str, rigid_only: bool = False) -> List[str]:
    """Links below ``link`` (through fixed joints only when ``rigid_only``)."""
    found, stack = [], list(tree.children.get(link, []))
    while stack:
        child = stack.pop()
        if rigid_only and tree.joint_type[child] != FIXED_JOINT:
            continue
        found.append(child)
        stack.extend(tree.children.get(child, []))
    return found


# ----------------------------------------------------------------------- package:// lookup
def _ament_share_dir(package: str) -> Optional[Path]:
    """Share directory of ``package`` from the ament index (``AMENT_PREFIX_PATH``), or None."""
    try:
        return Path(get_package_share_directory(package, print_warning=False))
    except (PackageNotFoundError, ValueError, OSError):  # unknown, invalid name, no index set
        return None


def _manifest_name(directory: Path) -> Optional[str]:
    """The ``<name>`` of ``directory/package.xml``, or None when there is none to read."""
    try:
        name = ET.parse(directory / PACKAGE_MANIFEST).getroot().find("name")
    except (OSError, ET.ParseError):
        return None
    return name.text.strip() if name is not None and name.text else None


def _package_in(base: Path, package: str) -> Optional[Path]:
    """``base`` itself, ``base/<package>``, ``base/share/<package>`` or a direct subdirectory
    of ``base`` whose ``package.xml`` names ``package``; None when none is."""
    if base.is_dir() and (base.name == package or _manifest_name(base) == package):
        return base
    for candidate in (base / package, base / "share" / package):
        if candidate.is_dir():
            return candidate
    if base.is_dir():
        for child in sorted(base.iterdir()):
            if child.is_dir() and _manifest_name(child) == package:
                return child
    return None


def find_package_share(package: str, search_paths: Sequence[str] = ()) -> Path:
    """Directory a ``package://<package>/...`` URI points into.

    Searched in this order: ``search_paths``, then the entries of ``ROS_PACKAGE_PATH`` (ROS 1
    style), then the ament index (``AMENT_PREFIX_PATH``, through ``ament_index_python``). A
    search path or ``ROS_PACKAGE_PATH`` entry matches when it is named ``<package>``, contains
    ``<package>/`` (or ``share/<package>/``), or it or one of its direct subdirectories has a
    ``package.xml`` whose ``<name>`` is the package. Raises FileNotFoundError naming every
    place searched when the package is nowhere.
    """
    ros_paths = [entry for entry in os.environ.get(ROS_PACKAGE_PATH, "").split(os.pathsep)
                 if entry]
    for entry in (*search_paths, *ros_paths):
        found = _package_in(Path(entry).expanduser(), package)
        if found is not None:
            return found
    share = _ament_share_dir(package)
    if share is not None and share.is_dir():
        return share
    where = (f"is in the ament index, but its share directory {share} does not exist"
             if share is not None else "is not in the ament index")
    raise FileNotFoundError(
        f"package '{package}' not found in search paths {list(search_paths)}, "
        f"in {ROS_PACKAGE_PATH} entries {ros_paths}, and {where} "
        f"(AMENT_PREFIX_PATH={os.environ.get('AMENT_PREFIX_PATH', '')!r})")


def resolve_uri(uri: str, base_dir: str, search_paths: Sequence[str] = ()) -> Path:
    """Absolute path of a URDF resource URI (``package://``, ``file://``, absolute, relative)."""
    if uri.startswith("package://"):
        rest = uri[len("package://"):]
        package, _, relative = rest.partition("/")
        return find_package_share(package, search_paths) / relative
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    path = Path(uri).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


# ----------------------------------------------------------------------- normalisation
def _float(element: Optional[ET.Element], key: str, default: float) -> float:
    if element is None or element.get(key) is None:
        return default
    return float(element.get(key))


def _vector(element: Optional[ET.Element], key: str, default: Sequence[float]) -> np.ndarray:
    if element is None or element.get(key) is None:
        return np.array(default, dtype=float)
    return np.array([float(v) for v in element.get(key).split()], dtype=float)


def _format(values: Sequence[float]) -> str:
    return " ".join(_NUMBER_FORMAT.format(float(v)) for v in values)


def _warn(message: str, warnings: List[str]) -> None:
    logger.warning(message)
    warnings.append(message)


def _check_joint_types(robot: ET.Element) -> None:
    for joint in robot.findall("joint"):
        kind = joint.get("type")
        if kind != FIXED_JOINT and kind not in ACTUATED_JOINT_TYPES:
            raise ValueError(f"joint '{joint.get('name')}' has unsupported type '{kind}' "
                             f"({', '.join(ACTUATED_JOINT_TYPES)} and fixed are supported)")


def _lock_mimic_joints(robot: ET.Element, warnings: List[str]) -> None:
    """Turn every mimic joint into a fixed joint at 0 clipped into its limits.

    A nonzero locked position is baked into the joint origin (a rotation about the axis for
    revolute joints, a shift along it for prismatic ones).
    """
    for joint in robot.findall("joint"):
        mimic = joint.find("mimic")
        if mimic is None:
            continue
        kind, limit = joint.get("type"), joint.find("limit")
        position = 0.0
        if kind != CONTINUOUS_JOINT:
            position = float(np.clip(0.0, _float(limit, "lower", -math.inf),
                                     _float(limit, "upper", math.inf)))
        if position != 0.0:
            origin = joint.find("origin")
            if origin is None:
                origin = ET.SubElement(joint, "origin")
            xyz, rpy = _vector(origin, "xyz", (0, 0, 0)), _vector(origin, "rpy", (0, 0, 0))
            axis = _vector(joint.find("axis"), "xyz", URDF_DEFAULT_AXIS)
            axis /= np.linalg.norm(axis)
            rotation = pin.rpy.rpyToMatrix(*rpy)
            if kind == PRISMATIC_JOINT:
                xyz = xyz + position * rotation @ axis
            else:
                rpy = pin.rpy.matrixToRpy(rotation @ pin.exp3(position * axis))
            origin.set("xyz", _format(xyz))
            origin.set("rpy", _format(rpy))
        joint.set("type", FIXED_JOINT)
        joint.remove(mimic)
        _warn(f"joint '{joint.get('name')}' mimics '{mimic.get('joint')}': locked as a fixed "
              f"joint at {position:g} (0 clipped into its limits); it is not actuated",
              warnings)


def _resolve_meshes(robot: ET.Element, base_dir: str, search_paths: Sequence[str],
                    warnings: List[str]) -> List[DroppedMesh]:
    """Make mesh paths absolute; drop unusable meshes; return the dropped collision ones."""
    dropped: List[DroppedMesh] = []
    for link in robot.findall("link"):
        for kind in ("visual", "collision"):
            for element in list(link.findall(kind)):
                mesh = element.find("geometry/mesh")
                if mesh is None:
                    continue
                uri = mesh.get("filename", "")
                try:
                    path = resolve_uri(uri, base_dir, search_paths)
                except FileNotFoundError as error:
                    path, reason = None, str(error)
                else:
                    reason = "" if path.is_file() else f"file {path} does not exist"
                    if not reason and path.suffix.lower() not in MUJOCO_MESH_SUFFIXES:
                        reason = (f"mesh type '{path.suffix}' is not readable by MuJoCo "
                                  f"(supported: {', '.join(MUJOCO_MESH_SUFFIXES)})")
                if reason:
                    _warn(f"link '{link.get('name')}': dropped {kind} mesh '{uri}': {reason}",
                          warnings)
                    link.remove(element)
                    if kind == "collision":
                        dropped.append(DroppedMesh(link.get("name"), uri, reason))
                    continue
                mesh.set("filename", str(path.resolve()))
    return dropped


def _link_mass(link: ET.Element) -> float:
    return _float(link.find("inertial/mass"), "value", 0.0)


def physical_inertia(matrix: np.ndarray, mass: float) -> Optional[np.ndarray]:
    """The nearest physical rotational inertia to ``matrix`` [3, 3], or None if it is one.

    Physical: principal moments (of the symmetric part) above
    :data:`INERTIA_EIGENVALUE_FLOOR` times the largest, and each moment at most the sum of the
    other two (within :data:`INERTIA_TRIANGLE_TOLERANCE`). Repair, in the principal axes:
    moments are raised to the floor, then a triangle-inequality deficit ``d`` is removed by
    the smallest change (``+d/3`` on the two small moments, ``-d/3`` on the large one). A
    matrix without any positive moment becomes ``mass * MIN_GYRATION_RADIUS**2`` isotropic.
    """
    moments, axes = np.linalg.eigh(0.5 * (matrix + matrix.T))  # ascending
    largest = moments[-1]
    if largest <= 0.0:
        return np.eye(3) * mass * MIN_GYRATION_RADIUS ** 2
    floor = INERTIA_EIGENVALUE_FLOOR * largest
    deficit = moments[2] - moments[0] - moments[1]
    if moments[0] > floor and deficit <= INERTIA_TRIANGLE_TOLERANCE * largest:
        return None
    moments = np.maximum(moments, floor)
    deficit = moments[2] - moments[0] - moments[1]
    if deficit > 0.0:
        moments = moments + deficit / 3.0 * np.array([1.0, 1.0, -1.0])
    return axes @ np.diag(moments) @ axes.T


def _repair_inertias(robot: ET.Element, tree: _Tree, root: str, warnings: List[str]) -> None:
    """Give every massive link a physical inertia and every moving rigid group some mass."""
    links = {link.get("name"): link for link in robot.findall("link")}
    for name, link in links.items():
        inertial = link.find("inertial")
        mass = _link_mass(link)
        if not math.isfinite(mass) or mass < 0.0:
            raise ValueError(f"link '{name}' has mass {mass}: it must be finite and >= 0")
        if inertial is None or mass == 0.0:
            continue
        element = inertial.find("inertia")
        if element is None:
            element = ET.SubElement(inertial, "inertia")
        matrix = np.zeros((3, 3))
        for key, (row, col) in zip(_INERTIA_KEYS, _INERTIA_INDEX):
            matrix[row, col] = matrix[col, row] = _float(element, key, 0.0)
        if not np.all(np.isfinite(matrix)):
            raise ValueError(f"link '{name}' has a non-finite inertia {matrix.tolist()}")
        repaired = physical_inertia(matrix, mass)
        if repaired is None:
            continue
        for key, (row, col) in zip(_INERTIA_KEYS, _INERTIA_INDEX):
            element.set(key, _NUMBER_FORMAT.format(repaired[row, col]))
        _warn(f"link '{name}': inertia is not physical (principal moments "
              f"{np.round(np.linalg.eigvalsh(matrix), 12).tolist()}): replaced by the nearest "
              f"physical one (moments {np.round(np.linalg.eigvalsh(repaired), 12).tolist()})",
              warnings)
    moving = [name for name in links
              if tree.joint_type.get(name, FIXED_JOINT) != FIXED_JOINT
              or (name == root and root != WORLD_LINK)]
    for name in moving:
        group = [name, *_descendants(tree, name, rigid_only=True)]
        if sum(_link_mass(links[member]) for member in group) > 0.0:
            continue
        link = links[name]
        if link.find("inertial") is not None:
            link.remove(link.find("inertial"))
        inertial = ET.SubElement(link, "inertial")
        ET.SubElement(inertial, "mass", value=_NUMBER_FORMAT.format(MASSLESS_LINK_MASS))
        moment = _NUMBER_FORMAT.format(MASSLESS_LINK_MASS * MIN_GYRATION_RADIUS ** 2)
        ET.SubElement(inertial, "inertia", ixx=moment, iyy=moment, izz=moment,
                      ixy="0", ixz="0", iyz="0")
        _warn(f"link '{name}' moves but has no mass (nor any rigidly attached link): given "
              f"{MASSLESS_LINK_MASS} kg with a {MIN_GYRATION_RADIUS} m radius of gyration",
              warnings)


def _joint_limits(robot: ET.Element, xml: str) -> Dict[str, JointLimits]:
    """Limits of the actuated joints, in file order, as pinocchio reads them.

    Bounds the URDF does not give are infinite (pinocchio would read a missing ``lower`` /
    ``upper`` as 0); continuous joints have no position limits.
    """
    try:
        model = pin.buildModelFromXML(xml)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"pinocchio cannot read the URDF: {error}") from error
    limits: Dict[str, JointLimits] = {}
    for joint in robot.findall("joint"):
        kind, name = joint.get("type"), joint.get("name")
        if kind not in ACTUATED_JOINT_TYPES:
            continue
        index = model.getJointId(name)
        if index >= model.njoints:
            raise ValueError(f"pinocchio did not load joint '{name}'")
        q, v = model.idx_qs[index], model.idx_vs[index]
        given = joint.find("limit")

        def bound(key: str, value: float, missing: float) -> float:
            return float(value) if given is not None and key in given.attrib else missing

        unbounded = kind == CONTINUOUS_JOINT
        limits[name] = JointLimits(
            lower=-math.inf if unbounded else bound("lower", model.lowerPositionLimit[q],
                                                    -math.inf),
            upper=math.inf if unbounded else bound("upper", model.upperPositionLimit[q],
                                                   math.inf),
            velocity=bound("velocity", model.velocityLimit[v], math.inf),
            effort=bound("effort", model.effortLimit[v], math.inf),
            damping=float(model.damping[v]), friction=float(model.friction[v]))
    return limits


def resolve_urdf(source: str, search_paths: Sequence[str] = (),
                 base_dir: Optional[str] = None) -> ResolvedUrdf:
    """Read a URDF (a file path, a ``package://`` URI or the XML text itself) and resolve it.

    Args:
        source: path / URI of a URDF file, or URDF XML text (starts with ``<``).
        search_paths: extra directories for ``package://`` lookups (tried first, see
            :func:`find_package_share`).
        base_dir: directory for relative mesh paths; defaults to the URDF file's directory (or
            the current directory for XML text).
    Raises:
        FileNotFoundError: the URDF file or its package cannot be found.
        ValueError: the text is not a URDF (no ``<robot>`` root, no links, bad joint type,
            negative mass, not readable by pinocchio).
    """
    text = source.strip()
    if text.startswith("<"):
        base = base_dir or os.getcwd()
    else:
        path = resolve_uri(text, os.getcwd(), search_paths)
        if not path.is_file():
            raise FileNotFoundError(f"URDF file {path} does not exist")
        text = path.read_text()
        base = base_dir or str(path.parent.resolve())
    try:
        robot = ET.fromstring(text)
    except ET.ParseError as error:
        raise ValueError(f"URDF is not valid XML: {error}") from error
    if robot.tag != "robot":
        raise ValueError(f"URDF root element is <{robot.tag}>, expected <robot>")
    links = tuple(link.get("name") for link in robot.findall("link"))
    if not links:
        raise ValueError("URDF has no links")
    children = {joint.find("child").get("link") for joint in robot.findall("joint")}
    roots = [name for name in links if name not in children]
    if len(roots) != 1:
        raise ValueError(f"URDF must have exactly one root link, found {roots}")
    _check_joint_types(robot)
    warnings: List[str] = []
    _lock_mimic_joints(robot, warnings)
    dropped = _resolve_meshes(robot, base, search_paths, warnings)
    _repair_inertias(robot, _tree(robot), roots[0], warnings)
    xml = ET.tostring(robot, encoding="unicode")
    limits = _joint_limits(robot, xml)
    return ResolvedUrdf(xml=xml, base_dir=base, root_link=roots[0], link_names=links,
                        joint_names=tuple(limits), joint_limits=limits,
                        warnings=tuple(warnings), dropped_collision_meshes=tuple(dropped))


# ----------------------------------------------------------------------- tree queries
def _contact_tips_below_root(urdf: ResolvedUrdf) -> Tuple[str, ...]:
    """Feet by the contact rule (see :func:`foot_links`), in file order."""
    robot = ET.fromstring(urdf.xml)
    tree = _tree(robot)
    origins: Dict[str, List[np.ndarray]] = {}
    for link in robot.findall("link"):
        for collision in link.findall("collision"):
            origins.setdefault(link.get("name"), []).append(
                _vector(collision.find("origin"), "xyz", (0, 0, 0)))
    for dropped in urdf.dropped_collision_meshes:  # contact-capable, had it been readable
        origins.setdefault(dropped.link, []).append(np.zeros(3))
    tips = [name for name in urdf.link_names if name in origins
            and not any(below in origins for below in _descendants(tree, name))]
    if not tips:
        return ()
    model = pin.buildModelFromXML(urdf.xml)
    data = model.createData()
    pin.framesForwardKinematics(model, data, pin.neutral(model))
    heights = {}
    for name in tips:
        placement = data.oMf[model.getFrameId(name, pin.FrameType.BODY)]
        heights[name] = min(placement.act(origin)[2] for origin in origins[name])
    lowest = min(heights.values())
    if lowest >= 0.0:
        return ()
    return tuple(name for name in tips
                 if heights[name] < 0.0 and heights[name] <= lowest * (1.0 - FOOT_HEIGHT_BAND))


def foot_links(urdf: ResolvedUrdf, pattern: Optional[str] = DEFAULT_FOOT_PATTERN
               ) -> Tuple[str, ...]:
    """Foot links of a (legged) robot, in file order; the one rule of every model.

    1. Links whose name fully matches ``pattern``, case-insensitively (``.*_foot`` matches
       ``lf_foot`` and ``FL_FOOT``; ``(?-i:...)`` makes a pattern case-sensitive).
    2. When nothing matches (or ``pattern`` is None / empty) and the root is not 'world': the
       contact-capable tips below the root. A contact-capable tip is a link with collision
       geometry below which no link has any (a leaf of the collision tree); it is a foot
       when, at zero joint positions, its lowest collision origin is below the root link and
       within :data:`FOOT_HEIGHT_BAND` of the depth of the lowest tip (so an arm's fingers,
       above its base, and a humanoid's hands, above its soles, are not feet).
    """
    if pattern:
        matches = tuple(name for name in urdf.link_names
                        if re.fullmatch(pattern, name, re.IGNORECASE))
        if matches:
            logger.info("foot links %s match the foot pattern '%s'", list(matches), pattern)
            return matches
    if urdf.root_link == WORLD_LINK:
        return ()
    feet = _contact_tips_below_root(urdf)
    if feet:
        logger.info("no link matches the foot pattern '%s': taking the lowest contact-capable "
                    "tips %s below the root link '%s' as feet", pattern, list(feet),
                    urdf.root_link)
    return feet


def is_floating_base(urdf: ResolvedUrdf, feet: Sequence[str],
                     floating_base: Optional[bool] = None) -> bool:
    """Whether the robot gets a free-flyer root; logs what was decided and why.

    ``floating_base`` None decides automatically: floating iff the root link is not 'world'
    and ``feet`` (from :func:`foot_links`) is not empty.

    Raises:
        ValueError: ``floating_base`` is True but the root is fixed to 'world'.
    """
    root = urdf.root_link
    if floating_base is not None:
        if floating_base and root == WORLD_LINK:
            raise ValueError("floating_base=True but the URDF root is fixed to 'world'")
        logger.info("%s base for root link '%s': set explicitly",
                    "floating" if floating_base else "fixed", root)
        return bool(floating_base)
    if root == WORLD_LINK:
        logger.info("fixed base: the root link is 'world'")
        return False
    if feet:
        logger.info("floating base: root link '%s' is not 'world' and the robot has feet %s",
                    root, list(feet))
        return True
    logger.warning("fixed base: root link '%s' is not 'world' but the robot has no feet (no "
                   "link matches the foot pattern and no contact-capable tip lies below the "
                   "root); set floating_base (and foot_link_pattern) for a legged robot", root)
    return False


def longest_chain_tip(urdf: ResolvedUrdf) -> str:
    """Tip link of the longest kinematic chain from the root (most joints, fixed ones
    included; ties: first in file order): the end effector when none is named."""
    tree = _tree(ET.fromstring(urdf.xml))
    depth = {urdf.root_link: 0}
    stack = [urdf.root_link]
    while stack:
        link = stack.pop()
        for child in tree.children.get(link, []):
            depth[child] = depth[link] + 1
            stack.append(child)
    return max(urdf.link_names, key=lambda name: depth[name])
