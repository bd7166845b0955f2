"""ROS-free MuJoCo simulator of a URDF robot: commands in, joint / base / IMU state out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import mujoco
import numpy as np

from mbrl_ros.robots.mismatch import Backlash, MismatchConfig, RandomPusher, apply_mismatch
from mbrl_ros.robots.mujoco_builder import (HOME_KEY, IMU_SENSORS, BuildInfo, BuildOptions,
                                            add_home_keyframe, build_mujoco_spec)
from mbrl_ros.robots.trajectory import JointTrajectory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulatorConfig:
    """Timing and reset settings of the simulator."""

    control_period: float = 0.01
    """Simulated time between commands / state outputs [s]; a multiple of the timestep."""
    reset_keyframe: str = HOME_KEY
    """Keyframe restored by :meth:`Simulator.reset`."""
    seed: int = 0
    """Seed of the random pushes."""

    def validate(self) -> None:
        """Raise ValueError on bad values."""
        if self.control_period <= 0:
            raise ValueError(f"control_period must be > 0, got {self.control_period}")


class Simulator:
    """A MuJoCo model of a URDF robot (with model mismatch) stepped one control period at a time.

    Commands are in actuator units (torque, position or velocity per ``info.control_mode``) and
    are held until replaced. Joint-space arrays follow ``joint_names``.
    """

    def __init__(self, urdf_source: str, build: BuildOptions = BuildOptions(),
                 mismatch: MismatchConfig = MismatchConfig(),
                 config: SimulatorConfig = SimulatorConfig()) -> None:
        config.validate()
        spec, self.info = build_mujoco_spec(urdf_source, build)
        apply_mismatch(spec, self.info, mismatch)
        self.model: mujoco.MjModel = add_home_keyframe(spec, self.info, build)
        self.data = mujoco.MjData(self.model)
        self.config = config
        steps = config.control_period / self.model.opt.timestep
        if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
            raise ValueError(f"control_period {config.control_period} is not a multiple of the "
                             f"physics timestep {self.model.opt.timestep}")
        self.steps_per_control = int(round(steps))
        self.joint_names: Tuple[str, ...] = self.info.joint_names
        self._qpos = np.array([self.model.joint(j).qposadr[0] for j in self.joint_names])
        self._qvel = np.array([self.model.joint(j).dofadr[0] for j in self.joint_names])
        self._actuators = np.array([self.model.actuator(a).id for a in self.info.actuator_names])
        self._pusher: Optional[RandomPusher] = None
        if self.info.floating_base:
            self._pusher = RandomPusher(self.model, self.info.root_body, mismatch,
                                        np.random.default_rng(config.seed))
        self._backlash: Optional[Backlash] = None
        if mismatch.backlash_rad > 0 and self.info.control_mode == "position":
            self._backlash = Backlash(mismatch.backlash_rad, self._ctrl())
        self._trajectory: Optional[JointTrajectory] = None
        self._trajectory_indices = np.arange(len(self.joint_names))
        self.reset()

    @property
    def time(self) -> float:
        """Simulated time [s]."""
        return float(self.data.time)

    def joint_indices(self, names: Sequence[str]) -> np.ndarray:
        """Indices into ``joint_names`` for ``names``; ValueError on unknown / repeated names."""
        unknown = [n for n in names if n not in self.joint_names]
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"bad joint names {list(names)}: unknown {unknown}; "
                             f"known {list(self.joint_names)}")
        return np.array([self.joint_names.index(n) for n in names], dtype=int)

    def set_command(self, values: np.ndarray, indices: Optional[np.ndarray] = None) -> None:
        """Set the held command of the joints ``indices`` (all when None) to ``values``.

        Values are clipped to the actuator control range. Raises ValueError (command unchanged)
        on a wrong length or non-finite values. Cancels a running trajectory.
        """
        indices = np.arange(len(self.joint_names)) if indices is None else indices
        values = np.asarray(values, dtype=float).reshape(-1)
        if values.shape != (len(indices),):
            raise ValueError(f"command has {values.size} values, expected {len(indices)}")
        if not np.all(np.isfinite(values)):
            raise ValueError("command contains NaN or inf")
        self._trajectory = None
        self._set_ctrl(values, indices)

    def set_trajectory(self, trajectory: JointTrajectory,
                       indices: Optional[np.ndarray] = None) -> None:
        """Follow ``trajectory`` (values for joints ``indices``) from now on."""
        indices = np.arange(len(self.joint_names)) if indices is None else indices
        if trajectory.values.shape[1] != len(indices):
            raise ValueError(f"trajectory has {trajectory.values.shape[1]} joints, "
                             f"expected {len(indices)}")
        self._trajectory, self._trajectory_indices = trajectory, indices

    def _set_ctrl(self, values: np.ndarray, indices: np.ndarray) -> None:
        actuators = self._actuators[indices]
        ranges = self.model.actuator_ctrlrange[actuators]
        limited = self.model.actuator_ctrllimited[actuators].astype(bool)
        clipped = np.where(limited, np.clip(values, ranges[:, 0], ranges[:, 1]), values)
        self.data.ctrl[actuators] = (clipped if self._backlash is None
                                     else self._backlash(clipped, indices))

    def _ctrl(self) -> np.ndarray:
        """The actuators' current inputs, in joint order."""
        return self.data.ctrl[self._actuators].copy()

    def step(self, num_periods: int = 1) -> None:
        """Advance ``num_periods`` control periods (commands held, trajectory sampled)."""
        timestep = self.model.opt.timestep
        for _ in range(num_periods):
            if self._trajectory is not None:
                self._set_ctrl(self._trajectory.sample(self.time), self._trajectory_indices)
            for _ in range(self.steps_per_control):
                if self._pusher is not None:
                    self._pusher.apply(self.data, timestep)
                mujoco.mj_step(self.model, self.data)
        if not (np.all(np.isfinite(self.data.qpos)) and np.all(np.isfinite(self.data.qvel))):
            logger.error("simulation diverged at t=%.3f s; resetting", self.time)
            self.reset()

    def reset(self, keyframe: Optional[str] = None) -> None:
        """Restore a keyframe (default: config.reset_keyframe) and zero the commands.

        Simulated time keeps running: it drives the graph's /clock, which must never go back.
        """
        name = keyframe or self.config.reset_keyframe
        key = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_KEY, name)
        if key < 0:
            raise ValueError(f"keyframe '{name}' does not exist")
        now = self.data.time
        mujoco.mj_resetDataKeyframe(self.model, self.data, key)
        self.data.time = now
        self._trajectory = None
        if self._pusher is not None:
            self._pusher.reset()
        if self._backlash is not None:
            self._backlash.reset(self._ctrl())
        mujoco.mj_forward(self.model, self.data)

    # ------------------------------------------------------------------ outputs
    def joint_state(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions, velocities, efforts) [num_joints] each; effort = actuator torque."""
        return (self.data.qpos[self._qpos].copy(), self.data.qvel[self._qvel].copy(),
                self.data.actuator_force[self._actuators].copy())

    def base_state(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Floating base: position [3], quat wxyz [4] (world); linear and angular velocity [3]
        each in the base frame."""
        if not self.info.floating_base:
            raise ValueError("base_state needs a floating-base robot")
        position, quat = self.data.qpos[:3].copy(), self.data.qpos[3:7].copy()
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, quat)
        linear = rotation.reshape(3, 3).T @ self.data.qvel[:3]
        return position, quat, linear, self.data.qvel[3:6].copy()

    def imu(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """IMU readings: orientation quat wxyz [4], angular velocity [3], specific force [3]."""
        if self.info.imu_site is None:
            raise ValueError("this robot has no IMU")
        quat, gyro, accel = (self.data.sensor(name).data.copy() for name in IMU_SENSORS)
        return quat, gyro, accel

    def foot_contacts(self) -> np.ndarray:
        """[num_feet] normal contact force on each foot's touch site [N]."""
        return np.array([self.data.sensor(name).data[0] for name in self.info.touch_sensors])

    @property
    def build_info(self) -> BuildInfo:
        """What the model builder made (names of joints, actuators, sites, sensors)."""
        return self.info
