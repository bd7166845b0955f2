"""MuJoCo simulator node: publishes /clock, joint states (and /imu, /odom for legged robots),
robot_description and TF (for RViz), takes ros2_control-style forward commands. Stepping
logic: mbrl_ros.robots.simulator."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from typing import List, Optional, Tuple

import mujoco
import numpy as np
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from mbrl_ros.nodes.conversions import from_float64_multi_array, seconds_to_stamp
from mbrl_ros.nodes.sim_config import SimConfig, read_sim_config
from mbrl_ros.nodes.spin import run_node
from mbrl_ros.robots.simulator import Simulator
from mbrl_ros.robots.trajectory import JointTrajectory as SampledTrajectory
from mbrl_ros.robots.urdf_resolver import resolve_uri, resolve_urdf

try:  # tf2_msgs comes with every ROS 2 install that has RViz; the PyPI wheels lack it
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - depends on the installation
    TFMessage = None

HOLD_DESCRIPTION = {"position": "measured positions", "effort": "zero effort",
                    "velocity": "zero velocity"}
_TRAJECTORY_FIELD = {"effort": "effort", "position": "positions", "velocity": "velocities"}
LATCHED_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""robot_description and /tf_static, as robot_state_publisher publishes them."""
TF_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                    depth=100)
"""/tf, as tf2_ros' TransformBroadcaster publishes it."""


class SimNode(Node):
    """Steps a :class:`Simulator` at ``real_time_factor`` x wall-clock speed."""

    def __init__(self, **kwargs) -> None:
        super().__init__("sim", **kwargs)
        self.config: SimConfig = read_sim_config(self)
        resolved = resolve_urdf(self.config.urdf_source, self.config.package_search_paths)
        self.config = cfg = self.config.with_robot_defaults(resolved)
        urdf_joints = resolved.joint_names
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
        self.robot_description = urdf_text(cfg.urdf_source, cfg.package_search_paths)
        if cfg.publish_robot_description:
            self.description_pub = self.create_publisher(String, "robot_description",
                                                         LATCHED_QOS)
            self.description_pub.publish(String(data=self.robot_description))
        self.tf_joints = urdf_tree(self.robot_description)
        self._kinematics = mujoco.MjData(self.sim.model)
        self.tf_pub = self.tf_static_pub = None
        self._next_tf = -np.inf
        if cfg.publish_tf and TFMessage is None:
            self.get_logger().warning("tf2_msgs is not installed: not publishing TF (RViz's "
                                      "RobotModel needs a robot_state_publisher then)")
        elif cfg.publish_tf:
            self.tf_pub = self.create_publisher(TFMessage, "/tf", TF_QOS)
            self.tf_static_pub = self.create_publisher(TFMessage, "/tf_static", LATCHED_QOS)
            self.tf_static_pub.publish(TFMessage(transforms=self.link_transforms(True)))
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
        if self.tf_pub is not None and self.sim.time >= self._next_tf - 1e-9:
            self._next_tf = self.sim.time + self.config.tf_period
            self.tf_pub.publish(TFMessage(transforms=self.link_transforms(False)))

    def link_transforms(self, fixed: bool) -> List[TransformStamped]:
        """Parent link -> child link transforms of the URDF's fixed joints (``fixed``) or of
        its moving joints plus odom_frame -> root link (floating base), at the current state.

        From MuJoCo's forward kinematics (every URDF link is a body, the 'world' link the world
        body) on a scratch copy of the state: the simulation's own data stays untouched.
        """
        model, kinematics = self.sim.model, self._kinematics
        kinematics.qpos[:] = self.sim.data.qpos
        mujoco.mj_kinematics(model, kinematics)
        stamp = seconds_to_stamp(self.sim.time)
        transforms = []
        if not fixed and self.sim.info.floating_base:
            root = model.body(self.sim.info.root_body).id
            transforms.append(_transform(stamp, self.config.odom_frame, self.sim.info.root_body,
                                         kinematics.xpos[root], kinematics.xquat[root]))
        for parent, child, is_fixed in self.tf_joints:
            if is_fixed != fixed:
                continue
            parent_id, child_id = model.body(parent).id, model.body(child).id
            rotation = kinematics.xmat[parent_id].reshape(3, 3)
            position = rotation.T @ (kinematics.xpos[child_id] - kinematics.xpos[parent_id])
            inverse, quat = np.zeros(4), np.zeros(4)
            mujoco.mju_negQuat(inverse, kinematics.xquat[parent_id])
            mujoco.mju_mulQuat(quat, inverse, kinematics.xquat[child_id])
            transforms.append(_transform(stamp, parent, child, position, quat))
        return transforms

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
        self._next_tf = -np.inf  # the reset pose goes out on /tf at once
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


def urdf_text(source: str, search_paths=()) -> str:
    """The URDF's own text (mesh URIs as written) from XML text, a path or a package:// URI."""
    if source.strip().startswith("<"):
        return source
    return resolve_uri(source.strip(), os.getcwd(), search_paths).read_text()


def urdf_tree(xml: str) -> Tuple[Tuple[str, str, bool], ...]:
    """(parent link, child link, fixed) of every URDF joint, in file order."""
    return tuple((joint.find("parent").get("link"), joint.find("child").get("link"),
                  joint.get("type") == "fixed") for joint in ET.fromstring(xml).findall("joint"))


def _transform(stamp, parent: str, child: str, position: np.ndarray,
               wxyz: np.ndarray) -> TransformStamped:
    message = TransformStamped(child_frame_id=child)
    message.header.stamp, message.header.frame_id = stamp, parent
    _set_vec(message.transform.translation, position)
    _set_quat(message.transform.rotation, wxyz)
    return message


def _set_vec(target, values: np.ndarray) -> None:
    target.x, target.y, target.z = (float(v) for v in values[:3])


def _set_quat(target, wxyz: np.ndarray) -> None:
    target.w, target.x, target.y, target.z = (float(v) for v in wxyz)


def main(args: Optional[list] = None) -> None:
    """Run the simulator node until shut down."""
    run_node(SimNode, SingleThreadedExecutor, args, name="sim")


if __name__ == "__main__":
    main()
