"""Package look-ups of the launch runner through ament_index_python (no ROS graph needed)."""

import os

import pytest

from mbrl_ros.launch_runner import packages
from mbrl_ros.launch_runner.errors import LaunchError


def _install(prefix, name, files=()):
    """A colcon-like install prefix holding package ``name`` (index marker + share/<name>)."""
    index = prefix / 'share/ament_index/resource_index/packages'
    index.mkdir(parents=True, exist_ok=True)
    (index / name).write_text('')
    share = prefix / 'share' / name
    share.mkdir(parents=True, exist_ok=True)
    for relative in files:
        (share / relative).parent.mkdir(parents=True, exist_ok=True)
        (share / relative).write_text('launch: []\n')
    return share


def test_package_found_through_ament_prefix_path(tmp_path, monkeypatch):
    first, second = tmp_path / 'overlay', tmp_path / 'underlay'
    share = _install(first, 'demo_pkg', ['launch/demo.launch.yaml'])
    _install(second, 'demo_pkg')
    _install(second, 'other_pkg')
    monkeypatch.setenv('AMENT_PREFIX_PATH', os.pathsep.join([str(first), str(second)]))
    assert packages.find_package_prefix('demo_pkg') == str(first)  # first prefix wins
    assert packages.package_prefix('demo_pkg') == str(first)
    assert packages.package_share('demo_pkg') == str(share)
    assert packages.package_share('other_pkg') == str(second / 'share/other_pkg')
    assert packages.find_file_in_package('demo_pkg', 'demo.launch.yaml') == str(
        share / 'launch/demo.launch.yaml')


def test_explicit_environment_is_used_and_not_leaked(tmp_path, monkeypatch):
    share = _install(tmp_path / 'install', 'demo_pkg')
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(tmp_path / 'elsewhere'))
    env = {'AMENT_PREFIX_PATH': str(tmp_path / 'install')}
    assert packages.package_share('demo_pkg', env) == str(share)
    assert packages.find_package_prefix('demo_pkg') is None
    assert os.environ['AMENT_PREFIX_PATH'] == str(tmp_path / 'elsewhere')
    monkeypatch.delenv('AMENT_PREFIX_PATH')
    assert packages.find_package_prefix('demo_pkg', env) == str(tmp_path / 'install')
    assert packages.find_package_prefix('demo_pkg', {}) is None
    assert 'AMENT_PREFIX_PATH' not in os.environ


def test_missing_package_error_names_package_and_prefixes(tmp_path, monkeypatch):
    prefix = tmp_path / 'install'
    _install(prefix, 'demo_pkg')
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(prefix))
    for lookup in (packages.package_share, packages.package_prefix):
        with pytest.raises(LaunchError) as error:
            lookup('demo_pkgg')
        message = str(error.value)
        assert "'demo_pkgg' not found in the ament index" in message
        assert str(prefix) in message and "did you mean 'demo_pkg'" in message
    assert packages.find_package_prefix('demo_pkgg') is None
    assert packages.find_package_prefix('not a/valid name') is None
    with pytest.raises(LaunchError, match="'demo_pkg'.*AMENT_PREFIX_PATH=\\[\\]"):
        packages.package_share('demo_pkg', {})  # no index at all
    with pytest.raises(LaunchError, match="'missing.yaml' was not found .* 'demo_pkg'"):
        packages.find_file_in_package('demo_pkg', 'missing.yaml')


def test_this_package_falls_back_to_the_source_tree(monkeypatch):
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    root = packages.source_tree_root()
    if root is None:
        pytest.skip('not a source checkout')
    assert packages.package_share(packages.THIS_PACKAGE) == root
    assert packages.find_file_in_package(packages.THIS_PACKAGE, 'arm_sim.launch.yaml') == (
        os.path.join(root, 'launch', 'arm_sim.launch.yaml'))
