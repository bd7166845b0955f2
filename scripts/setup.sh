#!/usr/bin/env bash
# Idempotent set-up: a venv that is the ROS 2 prefix (Kilted from PyPI wheels), the project's
# Python dependencies, the CMake path fix for the wheels, and a colcon build of this package
# (custom messages + the Python package) into .build/. Re-running with nothing changed takes seconds.
# MBRL_ROS_DISTRO=jazzy (`make ... ROS_DISTRO=jazzy`) sets up ROS 2 Jazzy instead, in .venv-jazzy/
# and .build-jazzy/: the same requirement list with the ros-jazzy-* wheels.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DISTRO="${MBRL_ROS_DISTRO:-kilted}"
case "$DISTRO" in
  kilted) suffix="" ;;
  jazzy) suffix="-$DISTRO" ;;
  *) echo "[setup] unsupported ROS 2 distribution '$DISTRO' (kilted or jazzy)" >&2; exit 2 ;;
esac
VENV="${MBRL_VENV:-$ROOT/.venv$suffix}"
BUILD="$ROOT/.build$suffix"
PYTHON_BIN="${PYTHON:-python3}"
cd "$ROOT"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. System packages for offscreen rendering (MuJoCo EGL/OSMesa); best effort, root only.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -f requirements/apt.txt ]; then
  missing=$(xargs -a requirements/apt.txt -n1 sh -c 'dpkg -s "$0" >/dev/null 2>&1 || echo "$0"' || true)
  if [ -n "$missing" ]; then
    log "installing system packages: $missing"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null) \
      || log "WARNING: could not install $missing; offscreen rendering may be unavailable"
  fi
fi

# 2. The venv and its Python packages, re-installed only when the requirement files change.
[ -x "$VENV/bin/python" ] || { log "creating venv $VENV"; "$PYTHON_BIN" -m venv "$VENV"; }
# Kilted: requirements/ros.txt as it is, pinned by requirements/constraints.txt. Jazzy: the same
# list with the distro's wheel names (ros-rclpy -> ros-jazzy-rclpy, which pins Jazzy's ros-rclpy)
# and ros-jazzy.txt's changes, pinned by constraints-jazzy.txt (the ros-* wheels) and by
# constraints.txt (everything else).
if [ "$DISTRO" = kilted ]; then
  # (dev-*.txt are tools with venvs of their own, e.g. bench/mutation_venv.sh)
  req_hash=$(cat $(ls requirements/*.txt | grep -v -e '-jazzy\.txt$' -e '/dev-') \
    | sha256sum | cut -c1-16)
  ros_req=requirements/ros.txt
  constraints=requirements/constraints.txt
else
  req_hash=$( (echo "$DISTRO"; cat requirements/*.txt) | sha256sum | cut -c1-16)
fi
if [ "$(cat "$VENV/.mbrl_requirements" 2>/dev/null)" != "$req_hash" ]; then
  log "installing Python requirements (ROS 2 ${DISTRO^} wheels, torch CPU, mujoco, ...)"
  if [ "$DISTRO" != kilted ]; then
    ros_req="$VENV/.mbrl_ros_requirements.txt"
    constraints="$VENV/.mbrl_constraints.txt"
    (sed -e '/^ros-ament-cmake-ros-core$/d' -e "s/^ros-/ros-$DISTRO-/" requirements/ros.txt
     cat "requirements/ros-$DISTRO.txt") > "$ros_req"
    (grep -v '^ros-' requirements/constraints.txt; cat "requirements/constraints-$DISTRO.txt") \
      > "$constraints"
  fi
  # a failed install stops here (the hash is not recorded, so the next run retries)
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check \
      -r "$ros_req" -r requirements/core.txt -c "$constraints" > "$VENV/.mbrl_pip.log" 2>&1; then
    grep -v "^WARNING: Location" "$VENV/.mbrl_pip.log" >&2
    log "ERROR: pip could not install the requirements (log above: $VENV/.mbrl_pip.log)"
    exit 1
  fi
  grep -v "^WARNING: Location" "$VENV/.mbrl_pip.log" || true
  "$VENV/bin/pip" check >/dev/null 2>&1 || "$VENV/bin/pip" check | grep -v "^WARNING" || true
  echo "$req_hash" > "$VENV/.mbrl_requirements"
fi

# 3. The ROS wheels' CMake exports hard-code the wheel builder's prefix; point them here.
py_include=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_include=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
mapfile -t stale < <(grep -rl "/opt/python/cp311-cp311" "$VENV/share" --include='*.cmake' || true)
if [ "${#stale[@]}" -gt 0 ]; then
  log "rewriting wheel-builder paths in ${#stale[@]} CMake files"
  sed -i \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_include#g" \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$py_include#g" \
    -e "s#/opt/python/cp311-cp311#$VENV#g" "${stale[@]}"
fi

# 4. colcon build of this package (messages + Python package) with the venv as the underlay.
src_hash=$( (cat package.xml CMakeLists.txt setup.cfg msg/*.msg; ls launch config urdf) | sha256sum | cut -c1-16)
if [ "$(cat "$BUILD/.mbrl_build" 2>/dev/null)" != "$src_hash" ] || \
   [ ! -d "$BUILD/install/mbrl_ros" ]; then
  log "colcon build (custom messages, Python package)"
  mkdir -p "$BUILD"
  (
    export PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
    export COLCON_LOG_PATH="$BUILD/log"
    # A workspace folder whose src/ links to this checkout, so colcon sees exactly one package.
    mkdir -p "$BUILD/src" && ln -sfn "$ROOT" "$BUILD/src/mbrl_ros"
    cd "$BUILD"
    colcon build --symlink-install --base-paths src --build-base build --install-base install \
      --event-handlers console_cohesion- summary+ \
      --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF
  )
  echo "$src_hash" > "$BUILD/.mbrl_build"
fi
log "ready: source scripts/env.sh to use it"
