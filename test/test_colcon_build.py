"""The repository builds with colcon in a workspace whose underlay is the pip-installed ROS 2."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
VENV = pathlib.Path(sys.prefix)
SKIP_DIRS = {".git", ".venv", ".build", "build", "install", "log", "results", "__pycache__",
             ".pytest_cache"}


def _copy_sources(destination: pathlib.Path) -> None:
    # .venv-<distro>/ and .build-<distro>/ hold the set-ups for other ROS distributions.
    shutil.copytree(REPO, destination, symlinks=True,
                    ignore=lambda _dir, names: [n for n in names if n in SKIP_DIRS
                                                or n.startswith((".venv-", ".build-"))])


@pytest.mark.slow
def test_colcon_build_installs_package_and_ament_index_finds_it(tmp_path):
    workspace = tmp_path / "ws"
    _copy_sources(workspace / "src" / "mbrl_ros")
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH",
                          "LD_LIBRARY_PATH")}
    env.update(PATH=f"{VENV / 'bin'}:{env['PATH']}", AMENT_PREFIX_PATH=str(VENV),
               CMAKE_PREFIX_PATH=str(VENV), COLCON_LOG_PATH=str(tmp_path / "log"))
    build = subprocess.run(
        ["colcon", "build", "--event-handlers", "console_direct-",
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]

    install = workspace / "install" / "mbrl_ros"
    executables = sorted(p.name for p in (install / "lib" / "mbrl_ros").iterdir())
    assert {"sim_node", "safety_gate_node", "mbrl-ros"} <= set(executables)
    for name in executables:
        assert os.access(install / "lib" / "mbrl_ros" / name, os.X_OK), name

    # Use only the install tree (no source checkout on the path), as on a robot.
    site = next(install.glob("lib/python3*/site-packages"))
    run_env = dict(env, AMENT_PREFIX_PATH=f"{install}:{VENV}", PYTHONPATH=str(site),
                   LD_LIBRARY_PATH=f"{install / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}")
    expected_launch = sorted(p.name for p in (REPO / "launch").glob("*.launch.yaml"))
    probe = (
        "import os, sys\n"
        "from ament_index_python.packages import get_package_share_directory\n"
        "import mbrl_ros.core.types, mbrl_ros.nodes\n"
        "from mbrl_ros.msg import GateStatus, ModelUpdate, PlanStatus\n"
        "share = get_package_share_directory('mbrl_ros')\n"
        "source = mbrl_ros.core.types.__file__\n"
        "assert source.startswith(sys.argv[1]), source\n"
        "print('\\n'.join(sorted(f for f in os.listdir(os.path.join(share, 'launch'))"
        " if f.endswith('.launch.yaml'))))\n")
    result = subprocess.run([sys.executable, "-c", probe, str(site)], cwd=tmp_path, env=run_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert expected_launch, "the repository has no launch files"
    assert result.stdout.split() == expected_launch
    for folder in ("config", "urdf"):
        assert (install / "share" / "mbrl_ros" / folder).is_dir()
