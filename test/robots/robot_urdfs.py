"""Small test robots whose URDF joint order differs from MuJoCo's and pinocchio's.

Built from the shipped ``urdf/quadruped12.urdf`` by text transforms, or written here; no
external robot descriptions are needed.
"""

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

URDF_DIR = Path(__file__).resolve().parents[2] / "urdf"
ARM = URDF_DIR / "arm7.urdf"
QUADRUPED = URDF_DIR / "quadruped12.urdf"
LEGS = ("lf", "lh", "rf", "rh")
"""Leg prefixes of quadruped12, in its file (= alphabetical) order."""


def quadruped_legs_reordered(order: Sequence[str]) -> str:
    """quadruped12 with its legs' links and joints moved to the file order ``order``."""
    robot = ET.parse(QUADRUPED).getroot()
    blocks = {leg: [e for e in robot if e.get("name", "").startswith(f"{leg}_")] for leg in LEGS}
    for leg in LEGS:
        for element in blocks[leg]:
            robot.remove(element)
    for leg in order:
        robot.extend(blocks[leg])
    return ET.tostring(robot, encoding="unicode")


def quadruped_joints_interleaved() -> str:
    """quadruped12 with its joints listed by segment (all calves, ..., all thighs), so the
    URDF joint order is neither MuJoCo's (link tree) nor pinocchio's order."""
    robot = ET.parse(QUADRUPED).getroot()
    joints = [e for e in robot if e.tag == "joint"]
    for joint in joints:
        robot.remove(joint)
    joints.sort(key=lambda j: (j.get("name").split("_")[1], j.get("name")))
    robot.extend(joints)
    return ET.tostring(robot, encoding="unicode")


def _inertial(mass: float, com: str, moments: Sequence[float]) -> str:
    ixx, iyy, izz = moments
    return (f'<inertial><origin xyz="{com}"/><mass value="{mass}"/>'
            f'<inertia ixx="{ixx}" iyy="{iyy}" izz="{izz}" ixy="0" ixz="0" iyz="0"/>'
            "</inertial>")


def _link(name: str, mass: float, com: str, moments: Sequence[float]) -> str:
    return (f'<link name="{name}">{_inertial(mass, com, moments)}'
            f'<collision><origin xyz="{com}"/><geometry><sphere radius="0.03"/></geometry>'
            "</collision></link>")


def _joint(name: str, kind: str, parent: str, child: str, origin: str, axis: str,
           limit: str, damping: float, friction: float) -> str:
    return (f'<joint name="{name}" type="{kind}"><parent link="{parent}"/>'
            f'<child link="{child}"/><origin {origin}/><axis xyz="{axis}"/>'
            f'<limit {limit}/><dynamics damping="{damping}" friction="{friction}"/></joint>')


def two_arm_urdf() -> str:
    """Fixed-base torso with a right (listed first) and a left arm of three joints each.

    Pinocchio sorts the arms by name (left first), MuJoCo and the canonical order keep the
    file order (right first). The left wrist is prismatic; ``ee_link`` is on the right hand.
    Every joint has its own damping, friction and effort limit, so a mix-up shows.
    """
    parts = ['<robot name="two_arms"><link name="world"/>',
             '<joint name="torso_fix" type="fixed"><parent link="world"/>'
             '<child link="torso"/><origin xyz="0 0 0.5"/></joint>',
             _link("torso", 5.0, "0 0 0.1", (0.05, 0.06, 0.04))]
    for index, (side, sign) in enumerate((("right", -1), ("left", 1))):
        scale = 1.0 + 0.3 * index
        limit = 'lower="-2" upper="2" velocity="3" effort="{}"'
        parts += [
            _joint(f"{side}_shoulder", "revolute", "torso", f"{side}_upper",
                   f'xyz="0 {0.2 * sign} 0.3" rpy="{0.3 * sign} 0 0"', "0 0 1",
                   limit.format(40 * scale), 0.5 * scale, 0.2 * scale),
            _link(f"{side}_upper", 2.0 * scale, "0.15 0 0", (0.004, 0.02, 0.02)),
            _joint(f"{side}_elbow", "revolute", f"{side}_upper", f"{side}_fore",
                   'xyz="0.3 0 0" rpy="0 0.2 0"', "0 1 0", limit.format(25 * scale),
                   0.3 * scale, 0.1 * scale),
            _link(f"{side}_fore", 1.2 * scale, "0.12 0 0", (0.002, 0.01, 0.01)),
            _joint(f"{side}_wrist", "revolute" if side == "right" else "prismatic",
                   f"{side}_fore", f"{side}_hand", 'xyz="0.25 0 0"', "1 0 0" if
                   side == "right" else "0 0 1", limit.format(10 * scale), 0.1 * scale,
                   0.05 * scale),
            _link(f"{side}_hand", 0.5 * scale, "0.04 0.01 0", (0.001, 0.002, 0.002))]
    parts += ['<link name="ee_link"/><joint name="ee_fix" type="fixed">'
              '<parent link="right_hand"/><child link="ee_link"/><origin xyz="0.08 0 0"/>'
              "</joint></robot>"]
    return "".join(parts)


def actuated_joints_in_file_order(xml: str) -> tuple:
    """Names of the non-fixed joints of a URDF text, in file order."""
    return tuple(j.get("name") for j in ET.fromstring(xml).iter("joint")
                 if j.get("type") != "fixed")
