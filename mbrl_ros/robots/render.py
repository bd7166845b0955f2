"""Offscreen rendering of a MuJoCo model: image strips (PNG) and videos.

The OpenGL backend comes from ``MUJOCO_GL`` (read when MuJoCo creates its first context):
``egl`` needs a GPU or a working EGL device (Debian: libegl1), ``osmesa`` renders in software
(Debian: libosmesa6; also set ``PYOPENGL_PLATFORM=osmesa``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import mujoco
import numpy as np

logger = logging.getLogger(__name__)


class RenderError(RuntimeError):
    """No usable OpenGL backend, or frames could not be written."""


@dataclass(frozen=True)
class RenderConfig:
    """Image size and camera of rendered frames."""

    height: int = 240
    """Frame height [px]."""
    width: int = 320
    """Frame width [px]."""
    camera: str = ""
    """Named model camera; '' for the free camera looking at the model."""
    distance: float = 2.0
    """Free camera distance from the look-at point [m]."""
    azimuth: float = 135.0
    """Free camera azimuth [deg]."""
    elevation: float = -20.0
    """Free camera elevation [deg]."""
    fps: float = 30.0
    """Frames per second of written videos."""

    def validate(self) -> None:
        """Raise ValueError on bad values."""
        if self.height < 1 or self.width < 1 or self.distance <= 0 or self.fps <= 0:
            raise ValueError(f"bad render config {self}")


class FrameRenderer:
    """Renders RGB frames [height, width, 3] uint8 of one model."""

    def __init__(self, model: mujoco.MjModel, config: RenderConfig = RenderConfig()) -> None:
        config.validate()
        self.config = config
        try:
            self.renderer = mujoco.Renderer(model, config.height, config.width)
        except Exception as error:  # backend errors come as many types (EGLError, ...)
            raise RenderError(
                f"no OpenGL backend for offscreen rendering (MUJOCO_GL="
                f"{os.environ.get('MUJOCO_GL', '<unset>')}): {error!r}. Use MUJOCO_GL=egl with a "
                "GPU (Debian package libegl1) or MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa "
                "(Debian package libosmesa6)") from error
        self.camera: mujoco.MjvCamera | str = config.camera
        if not config.camera:
            camera = mujoco.MjvCamera()
            mujoco.mjv_defaultFreeCamera(model, camera)
            camera.distance, camera.azimuth = config.distance, config.azimuth
            camera.elevation = config.elevation
            self.camera = camera

    def render(self, data: mujoco.MjData, look_at: Optional[np.ndarray] = None) -> np.ndarray:
        """One RGB frame [height, width, 3] of ``data``; ``look_at`` [3] moves the free camera."""
        if look_at is not None and isinstance(self.camera, mujoco.MjvCamera):
            self.camera.lookat[:] = look_at
        self.renderer.update_scene(data, camera=self.camera)
        return self.renderer.render().copy()

    def close(self) -> None:
        """Release the GL context."""
        self.renderer.close()


def save_strip(frames: Sequence[np.ndarray], path: str) -> Path:
    """Write frames [height, width, 3] side by side into one PNG; returns the path."""
    if not frames:
        raise RenderError("no frames to save")
    import imageio.v3 as iio
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(target, np.concatenate(list(frames), axis=1))
    return target


def save_video(frames: Sequence[np.ndarray], path: str, fps: float) -> Path:
    """Write frames as a video (needs an imageio encoder, e.g. imageio-ffmpeg)."""
    if not frames:
        raise RenderError("no frames to save")
    import imageio.v2 as imageio
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        imageio.mimwrite(target, list(frames), fps=fps)
    except (ValueError, RuntimeError, ImportError) as error:
        raise RenderError(f"cannot write video {target}: {error} (install imageio-ffmpeg, "
                          "or save a PNG strip instead)") from error
    return target
