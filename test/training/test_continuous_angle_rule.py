"""The trainer node and the offline reader apply the same rule to continuous joints: their
positions become the ensemble's wrapping angles and the alignment unwraps them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from sim_bags import REPO
from test_config_file import DEFAULTS, node_configs, offline_configs

ENDLESS = ("arm_joint1", "arm_joint7")
"""arm7's joints made continuous: the base turn and the wrist."""


def test_node_and_offline_reader_wrap_the_continuous_joints(tmp_path):
    robot = ET.parse(REPO / "urdf" / "arm7.urdf").getroot()
    for joint in robot.findall("joint"):
        if joint.get("name") in ENDLESS:
            joint.set("type", "continuous")
    urdf = tmp_path / "arm7_endless.urdf"
    urdf.write_text(ET.tostring(robot, encoding="unicode"))
    params = tmp_path / "defaults.yaml"
    params.write_text(DEFAULTS)
    (tmp_path / "data").mkdir()
    ours = offline_configs(params, str(urdf), tmp_path)
    node = node_configs(params, str(urdf), tmp_path)
    assert ours["ensemble"].angle_wrap == (0, 6)  # positions of arm_joint1 and arm_joint7
    assert node["ensemble"] == ours["ensemble"]
    # the alignment unwraps the same joints' positions (a driver may report them wrapped)
    assert ours["alignment"].angle_wrap == (0, 6) and node["alignment"] == ours["alignment"]
