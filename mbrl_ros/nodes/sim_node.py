"""MuJoCo simulator node: publishes /clock, joint states (and /imu, /odom for legged robots),
takes ros2_control-style forward commands. Stepping logic: mbrl_ros.robots.simulator."""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from mbrl_ros.conversions import from_float64_multi_array, seconds_to_stamp
from mbrl_ros.nodes.sim_config import SimConfig, read_sim_config
from mbrl_ros.nodes.spin import run_node
from mbrl_ros.robots.simulator import Simulator
from mbrl_ros.robots.trajectory import JointTrajectory as SampledTrajectory
from mbrl_ros.robots.urdf_resolver import resolve_urdf

HOLD_DESCRIPTION = {"position": "measured positions", "effort": "zero effort",
                    "velocity": "zero velocity"}
_TRAJECTORY_FIELD = {"effort": "effort", "position": "positions", "velocity": "velocities"}


class SimNode(Node):
    """Steps a :class:`Simulator` at ``real_time_factor`` x wall-clock speed."""

    def __init__(self, **kwargs) -> None:
        super().__init__("sim", **kwargs)
        self.config: SimConfig = read_sim_config(self)
        cfg = self.config
        urdf_joints = tuple(resolve_urdf(cfg.urdf_source, cfg.package_search_paths).joint_limits)
        self.sim = Simulator(cfg.urdf_source, cfg.build_options(urdf_joints), cfg.mismatch(),
                             cfg.simulator())
        info = self.sim.info
        self.command_indices = self.sim.joint_indices(cfg.joints or self.sim.joint_names)
        self.paused = False
        self.last_command_time = self.sim.time
        self.timed_out = False
        self._anchor()
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.joint_pub = self.create_publisher(JointState, "joint_states", 10)
        self.imu_pub = self.create_publisher(Imu, "imu", 10) if info.imu_site else None
        self.odom_pub = self.create_publisher(Odometry, "odom", 10) if info.floating_base \
            else None
        prefix = cfg.command_topic_prefix
        self.create_subscription(Float64MultiArray, f"{prefix}/commands", self._on_command, 10)
        self.create_subscription(JointTrajectory, f"{prefix}/joint_trajectory",
                                 self._on_trajectory, 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(SetBool, "~/pause", self._on_pause)
        self.create_service(Trigger, "~/step", self._on_step)
        self.create_timer(cfg.tick_period, self._on_tick)
        self.get_logger().info(
            f"simulating {len(self.sim.joint_names)} joints ({cfg.control_mode}), floating base "
            f"{info.floating_base}, commands on {prefix}/commands, rtf {cfg.real_time_factor}")
        self._publish_state()

    def _anchor(self) -> None:
        """Restart the wall-clock <-> sim-time pairing (after reset, pause, falling behind)."""
        self.wall_anchor, self.sim_anchor = time.monotonic(), self.sim.time

    def _on_tick(self) -> None:
        if self.paused:
            return
        cfg = self.config
        if cfg.real_time_factor <= 0:
            periods = cfg.max_periods_per_tick
        else:
            target = self.sim_anchor + cfg.real_time_factor * (time.monotonic() - self.wall_anchor)
            periods = int((target - self.sim.time) / cfg.control_period + 1e-9)
            if periods > cfg.max_periods_per_tick:
                periods = cfg.max_periods_per_tick
                self._anchor()  # cannot keep up: run as fast as possible from here
        for _ in range(max(periods, 0)):
            self._check_command_timeout()
            self.sim.step()
            self._publish_state()

    def _check_command_timeout(self) -> None:
        """Emulate a driver's command timeout: hold instead of applying a stale command."""
        timeout = self.config.command_timeout_s
        if timeout <= 0 or self.timed_out or self.sim.time - self.last_command_time <= timeout:
            return
        self.timed_out = True
        positions = self.sim.joint_state()[0][self.command_indices]
        hold = positions if self.config.control_mode == "position" else np.zeros_like(positions)
        self.sim.set_command(hold, self.command_indices)
        self.get_logger().warning(
            f"no command for {self.sim.time - self.last_command_time:.2f} s (command_timeout_s "
            f"{timeout}): holding ({HOLD_DESCRIPTION[self.config.control_mode]})")

    def _command_arrived(self) -> None:
        self.last_command_time = self.sim.time
        if self.timed_out:
            self.timed_out = False
            self.get_logger().info("commands are back: driver timeout cleared")

    def _publish_state(self) -> None:
        stamp = seconds_to_stamp(self.sim.time)
        self.clock_pub.publish(Clock(clock=stamp))
        positions, velocities, efforts = self.sim.joint_state()
        message = JointState(name=list(self.sim.joint_names), position=positions.tolist(),
                             velocity=velocities.tolist(), effort=efforts.tolist())
        message.header.stamp = stamp
        self.joint_pub.publish(message)
        if self.imu_pub is not None:
            quat, gyro, accel = self.sim.imu()
            imu = Imu()
            imu.header.stamp, imu.header.frame_id = stamp, self.sim.info.root_body
            _set_quat(imu.orientation, quat)
            _set_vec(imu.angular_velocity, gyro)
            _set_vec(imu.linear_acceleration, accel)
            self.imu_pub.publish(imu)
        if self.odom_pub is not None:
            position, quat, linear, angular = self.sim.base_state()
            odom = Odometry(child_frame_id=self.sim.info.root_body)
            odom.header.stamp, odom.header.frame_id = stamp, self.config.odom_frame
            _set_vec(odom.pose.pose.position, position)
            _set_quat(odom.pose.pose.orientation, quat)
            _set_vec(odom.twist.twist.linear, linear)
            _set_vec(odom.twist.twist.angular, angular)
            self.odom_pub.publish(odom)

    def _warn(self, text: str) -> None:
        self.get_logger().warning(text, throttle_duration_sec=self.config.warn_period)

    def _on_command(self, msg: Float64MultiArray) -> None:
        values, reason = from_float64_multi_array(msg, len(self.command_indices))
        if values is None:
            self._warn(f"dropped command ({reason}); holding the last valid command")
            return
        self.sim.set_command(values, self.command_indices)
        self._command_arrived()

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        field = _TRAJECTORY_FIELD[self.config.control_mode]
        try:
            indices = self.sim.joint_indices(list(msg.joint_names))
            values = np.array([list(getattr(point, field)) for point in msg.points], dtype=float)
            times = np.array([p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec
                              for p in msg.points])
            self.sim.set_trajectory(SampledTrajectory(self.sim.time, times, values), indices)
            self._command_arrived()
        except ValueError as error:
            self._warn(f"dropped trajectory ({error}); needs '{field}' for every point")

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        self.sim.reset()
        self.last_command_time, self.timed_out = self.sim.time, False
        self._anchor()
        self._publish_state()
        response.success, response.message = True, f"reset to '{self.config.reset_keyframe}'"
        return response

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response):
        self.paused = bool(request.data)
        self._anchor()
        response.success, response.message = True, "paused" if self.paused else "running"
        return response

    def _on_step(self, request: Trigger.Request, response: Trigger.Response):
        if not self.paused:
            response.success, response.message = False, "step only works while paused"
            return response
        self.sim.step()
        self._publish_state()
        response.success, response.message = True, f"t = {self.sim.time:.4f} s"
        return response


def _set_vec(target, values: np.ndarray) -> None:
    target.x, target.y, target.z = (float(v) for v in values[:3])


def _set_quat(target, wxyz: np.ndarray) -> None:
    target.w, target.x, target.y, target.z = (float(v) for v in wxyz)


def main(args: Optional[list] = None) -> None:
    """Run the simulator node until shut down."""
    run_node(SimNode, SingleThreadedExecutor, args, name="sim")


if __name__ == "__main__":
    main()
