"""Offscreen rendering in a subprocess (the GL backend is fixed per process)."""

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
import mujoco
import numpy as np
from mbrl_ros.robots.mujoco_builder import build_mujoco_model
from mbrl_ros.robots.render import FrameRenderer, RenderConfig, RenderError, save_strip
model, _ = build_mujoco_model("urdf/arm7.urdf")
data = mujoco.MjData(model)
try:
    renderer = FrameRenderer(model, RenderConfig(height=60, width=80))
except RenderError as error:
    print("RENDER_ERROR", error)
    sys.exit(3)
frames = []
for _ in range(3):
    mujoco.mj_step(model, data)
    frames.append(renderer.render(data))
assert frames[0].shape == (60, 80, 3) and frames[0].std() > 1.0
print(save_strip(frames, sys.argv[1]))
"""


def _run(tmp_path, backend):
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend,
               PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "strip.png")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is None,
                    reason="libosmesa6 not installed")
def test_osmesa_strip(tmp_path):
    result = _run(tmp_path, "osmesa")
    assert result.returncode == 0, result.stdout + result.stderr
    import imageio.v3 as iio
    assert iio.imread(tmp_path / "strip.png").shape == (60, 240, 3)


def test_missing_backend_gives_clear_error(tmp_path):
    result = _run(tmp_path, "osmesa" if ctypes.util.find_library("OSMesa") is None else "bogus")
    if result.returncode == 0:
        pytest.fail("rendering with an unavailable backend should fail")
    assert "RENDER_ERROR" in result.stdout or "MUJOCO_GL" in result.stderr
