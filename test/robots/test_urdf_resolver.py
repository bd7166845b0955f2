"""package:// and relative mesh URIs through search paths, ROS_PACKAGE_PATH and the ament index;
unreadable meshes are dropped."""

import os
import struct

import numpy as np
import pinocchio as pin
import pytest

from mbrl_ros.robots.mujoco_builder import build_mujoco_model
from mbrl_ros.robots.robot_model import RobotModel
from mbrl_ros.robots.urdf_resolver import ROS_PACKAGE_PATH, find_package_share, resolve_urdf

CUBE_OBJ = "\n".join(
    [f"v {x} {y} {z}" for x in (-0.05, 0.05) for y in (-0.05, 0.05) for z in (-0.05, 0.05)]
    + ["f 1 3 4 2", "f 5 6 8 7", "f 1 2 6 5", "f 3 7 8 4", "f 1 5 7 3", "f 2 4 8 6"]) + "\n"

URDF = """<?xml version="1.0"?>
<robot name="meshy">
  <link name="world"/>
  <joint name="fix" type="fixed"><parent link="world"/><child link="base"/></joint>
  <link name="base">
    <inertial><mass value="1"/>
      <inertia ixx="0.01" ixy="0" ixz="0" iyy="0.01" iyz="0" izz="0.01"/></inertial>
    <visual><geometry>
      <mesh filename="package://test_mesh_pkg/meshes/cube.obj"/></geometry></visual>
    <visual><geometry>
      <mesh filename="package://test_mesh_pkg/meshes/cube.dae"/></geometry></visual>
    <collision><geometry><mesh filename="meshes/cube.stl"/></geometry></collision>
  </link>
  <joint name="j1" type="revolute"><parent link="base"/><child link="arm"/>
    <origin xyz="0 0 0.1"/><axis xyz="0 1 0"/>
    <limit lower="-1" upper="1" velocity="2" effort="5"/></joint>
  <link name="arm">
    <inertial><mass value="0.5"/>
      <inertia ixx="0.001" ixy="0" ixz="0" iyy="0.001" iyz="0" izz="0.001"/></inertial>
    <collision><geometry>
      <mesh filename="package://test_mesh_pkg/meshes/cube.obj"/></geometry></collision>
  </link>
</robot>
"""


def _write_stl(path):
    """Binary STL of a tetrahedron (MuJoCo reads binary STL only)."""
    triangles = [((0, 0, 0), (0, 0.1, 0), (0.1, 0, 0)), ((0, 0, 0), (0, 0, 0.1), (0, 0.1, 0)),
                 ((0, 0, 0), (0.1, 0, 0), (0, 0, 0.1)), ((0.1, 0, 0), (0, 0.1, 0), (0, 0, 0.1))]
    body = b"".join(struct.pack("<12fH", 0, 0, 0, *np.ravel(t), 0) for t in triangles)
    path.write_bytes(b"\0" * 80 + struct.pack("<I", len(triangles)) + body)


@pytest.fixture
def mesh_package(tmp_path, monkeypatch):
    prefix = tmp_path / "install"
    share = prefix / "share" / "test_mesh_pkg"
    (share / "meshes").mkdir(parents=True)
    (share / "meshes" / "cube.obj").write_text(CUBE_OBJ)
    (share / "meshes" / "cube.dae").write_text("<COLLADA/>")
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "test_mesh_pkg").write_text("")
    urdf_dir = tmp_path / "robot"
    (urdf_dir / "meshes").mkdir(parents=True)
    _write_stl(urdf_dir / "meshes" / "cube.stl")
    (urdf_dir / "meshy.urdf").write_text(URDF)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    monkeypatch.delenv(ROS_PACKAGE_PATH, raising=False)
    return urdf_dir / "meshy.urdf", share


def test_package_uris_resolve_through_ament_index(mesh_package):
    urdf_path, share = mesh_package
    assert find_package_share("test_mesh_pkg") == share
    resolved = resolve_urdf(str(urdf_path))
    assert str(share / "meshes" / "cube.obj") in resolved.xml
    assert str(urdf_path.parent / "meshes" / "cube.stl") in resolved.xml
    assert len(resolved.warnings) == 1 and "cube.dae" in resolved.warnings[0]


def test_mesh_urdf_loads_in_mujoco_and_pinocchio(mesh_package):
    urdf_path, _ = mesh_package
    model, info = build_mujoco_model(str(urdf_path))
    # cube.obj (base visual + arm collision) and cube.stl (base collision), not merged although
    # both are called "cube"; the .dae visual was dropped
    assert model.nmesh == 2
    assert sorted(model.mesh_vertnum) == [4, 8]
    robot = RobotModel(info.urdf)
    assert robot.joint_names == ("j1",)
    geometry = pin.buildGeomFromUrdfString(robot.model, info.urdf.xml, pin.GeometryType.COLLISION)
    assert geometry.ngeoms == 2
    np.testing.assert_allclose(robot.effort_limits, [5.0])


def test_search_path_and_errors(mesh_package, tmp_path, monkeypatch):
    _, share = mesh_package
    monkeypatch.setenv("AMENT_PREFIX_PATH", "")
    with pytest.raises(FileNotFoundError, match="test_mesh_pkg"):
        find_package_share("test_mesh_pkg")
    assert find_package_share("test_mesh_pkg", [str(share.parent)]) == share
    with pytest.raises(FileNotFoundError):
        resolve_urdf(str(tmp_path / "missing.urdf"))
    with pytest.raises(ValueError, match="robot"):
        resolve_urdf("<sdf/>")
    with pytest.raises(ValueError, match="XML"):
        resolve_urdf("<robot>")


def test_search_paths_come_before_the_ament_index(mesh_package, tmp_path):
    _, indexed_share = mesh_package
    local = tmp_path / "checkout" / "test_mesh_pkg"
    local.mkdir(parents=True)
    assert find_package_share("test_mesh_pkg") == indexed_share
    assert find_package_share("test_mesh_pkg", [str(local.parent)]) == local
    assert find_package_share("test_mesh_pkg", [str(local)]) == local
    # a search path without the package falls through to the index
    assert find_package_share("test_mesh_pkg", [str(tmp_path / "nothing")]) == indexed_share


def test_missing_package_error_names_package_and_places(mesh_package, tmp_path):
    _, share = mesh_package
    prefix = share.parent.parent
    with pytest.raises(FileNotFoundError) as error:
        find_package_share("no_such_pkg", [str(tmp_path / "extra")])
    message = str(error.value)
    assert "'no_such_pkg'" in message and str(tmp_path / "extra") in message
    assert "not in the ament index" in message and str(prefix) in message
    assert ROS_PACKAGE_PATH in message
    # indexed, but the share directory is gone
    (share / "meshes" / "cube.obj").unlink()
    (share / "meshes" / "cube.dae").unlink()
    (share / "meshes").rmdir()
    share.rmdir()
    with pytest.raises(FileNotFoundError, match="share directory .* does not exist"):
        find_package_share("test_mesh_pkg")
    # a mesh of a missing package is dropped with a warning naming the package
    resolved = resolve_urdf(URDF, base_dir=str(tmp_path))
    assert any("test_mesh_pkg" in warning and "not found" in warning
               for warning in resolved.warnings)


def _manifest(directory, name):
    directory.mkdir(parents=True)
    (directory / "package.xml").write_text(
        f'<?xml version="1.0"?><package format="3"><name>{name}</name></package>')
    return directory


def test_ros_package_path_entries_are_searched(mesh_package, tmp_path, monkeypatch):
    _, indexed_share = mesh_package
    named = tmp_path / "ros1" / "src" / "test_mesh_pkg"  # an entry named like the package
    named.mkdir(parents=True)
    workspace = tmp_path / "ws"                          # an entry holding <package>/
    (workspace / "test_mesh_pkg").mkdir(parents=True)
    renamed = _manifest(tmp_path / "checkout" / "mesh-pkg-git", "test_mesh_pkg")
    for entry, expected in ((named, named), (workspace, workspace / "test_mesh_pkg"),
                            (renamed, renamed), (renamed.parent, renamed)):
        monkeypatch.setenv(ROS_PACKAGE_PATH, os.pathsep.join([str(tmp_path / "x"), str(entry)]))
        assert find_package_share("test_mesh_pkg") == expected
    # search paths come first, then ROS_PACKAGE_PATH, then the ament index
    local = tmp_path / "local" / "test_mesh_pkg"
    local.mkdir(parents=True)
    assert find_package_share("test_mesh_pkg", [str(local)]) == local
    monkeypatch.setenv(ROS_PACKAGE_PATH, str(tmp_path / "nothing"))
    assert find_package_share("test_mesh_pkg") == indexed_share


def test_package_xml_of_another_package_does_not_match(mesh_package, tmp_path, monkeypatch):
    other = _manifest(tmp_path / "src" / "test_mesh_pkg_extras", "test_mesh_pkg_extras")
    monkeypatch.setenv("AMENT_PREFIX_PATH", "")
    monkeypatch.setenv(ROS_PACKAGE_PATH, str(other.parent))
    with pytest.raises(FileNotFoundError) as error:
        find_package_share("test_mesh_pkg", [str(tmp_path / "extra")])
    message = str(error.value)
    assert str(tmp_path / "extra") in message and str(other.parent) in message
    assert "not in the ament index" in message
