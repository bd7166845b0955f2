# Source this file (bash) to use the set-up made by scripts/setup.sh:
#   . scripts/env.sh
# The venv is the ROS 2 underlay; .build/install holds this package's messages; the source tree
# comes first on PYTHONPATH so edits take effect without rebuilding.
# ROS 2 Jazzy instead of Kilted (after `make setup ROS_DISTRO=jazzy`): MBRL_ROS_DISTRO=jazzy.
_mbrl_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
_mbrl_suffix="-${MBRL_ROS_DISTRO:-kilted}"
[ "$_mbrl_suffix" = -kilted ] && _mbrl_suffix=""
_mbrl_venv="${MBRL_VENV:-$_mbrl_root/.venv$_mbrl_suffix}"
_mbrl_install="$_mbrl_root/.build$_mbrl_suffix/install/mbrl_ros"
_mbrl_pyver="$("$_mbrl_venv/bin/python" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')"
export VIRTUAL_ENV="$_mbrl_venv"
export PATH="$_mbrl_install/bin:$_mbrl_venv/bin:$PATH"
# prepend, keeping what the shell already has (e.g. a workspace sourced before)
case ":${AMENT_PREFIX_PATH:-}:" in *":$_mbrl_install:"*) ;; *)
  export AMENT_PREFIX_PATH="$_mbrl_install:$_mbrl_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
esac
case ":${CMAKE_PREFIX_PATH:-}:" in *":$_mbrl_install:"*) ;; *)
  export CMAKE_PREFIX_PATH="$_mbrl_install:$_mbrl_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}" ;;
esac
export PYTHONPATH="$_mbrl_root:$_mbrl_install/lib/$_mbrl_pyver/site-packages${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$_mbrl_install/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# DDS traffic stays on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 100) + 1 ))}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
unset _mbrl_root _mbrl_suffix _mbrl_venv _mbrl_install _mbrl_pyver
