"""Load a URDF and resolve its mesh URIs (``package://``, ``file://``, relative paths).

The result is a URDF string with absolute mesh paths that MuJoCo and pinocchio both read, so the
two models are always built from the same text. Meshes MuJoCo cannot read (e.g. ``.dae``) and
missing mesh files are dropped with a logged warning (the link keeps its inertia).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

logger = logging.getLogger(__name__)

MUJOCO_MESH_SUFFIXES = (".stl", ".obj", ".msh")
"""Mesh file types MuJoCo reads natively."""
WORLD_LINK = "world"
"""Name of the URDF link that stands for the fixed world (fixed-base robots attach to it)."""


@dataclass(frozen=True)
class JointLimits:
    """Limits and dynamics of one actuated URDF joint."""

    lower: float
    """Lower position limit [rad or m] (-inf for continuous joints)."""
    upper: float
    """Upper position limit [rad or m] (+inf for continuous joints)."""
    velocity: float
    """Velocity limit [rad/s or m/s] (inf when not given)."""
    effort: float
    """Effort limit [Nm or N] (inf when not given)."""
    damping: float
    """Viscous damping [Nm s/rad]."""
    friction: float
    """Coulomb (dry) friction [Nm]."""


@dataclass(frozen=True)
class ResolvedUrdf:
    """A URDF with every mesh URI replaced by an absolute path."""

    xml: str
    """URDF text with absolute mesh paths."""
    base_dir: str
    """Directory relative mesh paths were resolved against."""
    root_link: str
    """Name of the root link of the kinematic tree."""
    link_names: Tuple[str, ...]
    """All link names, in file order."""
    joint_limits: Dict[str, JointLimits] = field(default_factory=dict)
    """Actuated (non-fixed) joints in file order -> limits and dynamics."""
    warnings: Tuple[str, ...] = ()
    """What was dropped or changed while resolving, one sentence each."""


def _ament_share_dir(package: str) -> Optional[Path]:
    """Share directory of ``package`` from the ament index (``AMENT_PREFIX_PATH``), or None."""
    try:
        return Path(get_package_share_directory(package, print_warning=False))
    except (PackageNotFoundError, ValueError, OSError):  # unknown, invalid name, no index set
        return None


def find_package_share(package: str, search_paths: Sequence[str] = ()) -> Path:
    """Directory a ``package://<package>/...`` URI points into.

    ``search_paths`` are tried first: each is a directory that either contains ``<package>/``
    or is itself named ``<package>``; then the ament index (``AMENT_PREFIX_PATH``, through
    ``ament_index_python``). Raises FileNotFoundError when the package is nowhere.
    """
    for entry in search_paths:
        base = Path(entry).expanduser()
        if base.name == package and base.is_dir():
            return base
        if (base / package).is_dir():
            return base / package
        if (base / "share" / package).is_dir():
            return base / "share" / package
    share = _ament_share_dir(package)
    if share is not None and share.is_dir():
        return share
    where = (f"is in the ament index, but its share directory {share} does not exist"
             if share is not None else "is not in the ament index")
    raise FileNotFoundError(
        f"package '{package}' not found in search paths {list(search_paths)} and {where} "
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


def _float(element: Optional[ET.Element], key: str, default: float) -> float:
    if element is None or element.get(key) is None:
        return default
    return float(element.get(key))


def _joint_limits(robot: ET.Element) -> Dict[str, JointLimits]:
    limits: Dict[str, JointLimits] = {}
    for joint in robot.findall("joint"):
        kind = joint.get("type")
        if kind in ("fixed", None):
            continue
        if kind not in ("revolute", "continuous", "prismatic"):
            raise ValueError(f"joint '{joint.get('name')}' has unsupported type '{kind}' "
                             "(revolute, continuous, prismatic and fixed are supported)")
        limit = joint.find("limit")
        dynamics = joint.find("dynamics")
        unbounded = kind == "continuous"
        limits[joint.get("name")] = JointLimits(
            lower=-float("inf") if unbounded else _float(limit, "lower", -float("inf")),
            upper=float("inf") if unbounded else _float(limit, "upper", float("inf")),
            velocity=_float(limit, "velocity", float("inf")),
            effort=_float(limit, "effort", float("inf")),
            damping=_float(dynamics, "damping", 0.0),
            friction=_float(dynamics, "friction", 0.0))
    return limits


def _resolve_meshes(robot: ET.Element, base_dir: str, search_paths: Sequence[str],
                    warnings: List[str]) -> None:
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
                    message = (f"link '{link.get('name')}': dropped {kind} mesh '{uri}': "
                               f"{reason}")
                    logger.warning(message)
                    warnings.append(message)
                    link.remove(element)
                    continue
                mesh.set("filename", str(path.resolve()))


def resolve_urdf(source: str, search_paths: Sequence[str] = (),
                 base_dir: Optional[str] = None) -> ResolvedUrdf:
    """Read a URDF (a file path, a ``package://`` URI or the XML text itself) and resolve it.

    Args:
        source: path / URI of a URDF file, or URDF XML text (starts with ``<``).
        search_paths: extra directories for ``package://`` lookups (tried before the ament index).
        base_dir: directory for relative mesh paths; defaults to the URDF file's directory (or
            the current directory for XML text).
    Raises:
        FileNotFoundError: the URDF file or its package cannot be found.
        ValueError: the text is not a URDF (no ``<robot>`` root, no links, bad joint type).
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
    warnings: List[str] = []
    _resolve_meshes(robot, base, search_paths, warnings)
    return ResolvedUrdf(xml=ET.tostring(robot, encoding="unicode"), base_dir=base,
                        root_link=roots[0], link_names=links,
                        joint_limits=_joint_limits(robot), warnings=tuple(warnings))
