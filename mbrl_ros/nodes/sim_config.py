"""Parameters of the simulator node: one flat frozen dataclass, read from ROS in one call."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Tuple

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from mbrl_ros.nodes.parameters import declare_config, field_docstrings

from mbrl_ros.robots.mismatch import MismatchConfig
from mbrl_ros.robots.defaults import robot_defaults
from mbrl_ros.robots.mujoco_builder import CONTROL_MODES, DEFAULT_EE_LINK, HOME_KEY, BuildOptions
from mbrl_ros.robots.robot_model import RobotModel
from mbrl_ros.robots.simulator import SimulatorConfig
from mbrl_ros.robots.urdf_resolver import ResolvedUrdf

AUTO = "auto"


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator node is configured with (one ROS parameter per field)."""

    urdf: str = ""
    """URDF file path or package:// URI (used when robot_description is empty)."""
    robot_description: str = ""
    """URDF XML text; takes precedence over urdf."""
    package_search_paths: Tuple[str, ...] = ()
    """Extra directories searched for package:// URIs before the ament index."""
    control_mode: str = "effort"
    """Actuators: effort (torque), position (PD servo) or velocity."""
    controller_name: str = ""
    """Commands arrive on <controller_name>/commands (in the node's namespace); '' means
    '<control_mode>_controller'."""
    joints: Tuple[str, ...] = ()
    """Order of the values in a command; empty: all actuated joints in URDF order."""
    physics_timestep: float = field(default=0.002, metadata={"range": (1e-5, 0.1)})
    """MuJoCo time step [s]."""
    control_period: float = field(default=0.01, metadata={"range": (1e-4, 1.0)})
    """Simulated time between state messages [s]; a multiple of physics_timestep."""
    real_time_factor: float = field(default=1.0, metadata={"range": (0.0, 1000.0)})
    """Simulated seconds per wall-clock second; 0 runs as fast as possible."""
    tick_period: float = field(default=0.005, metadata={"range": (1e-4, 1.0)})
    """Wall-clock period of the stepping timer [s]."""
    max_periods_per_tick: int = field(default=50, metadata={"range": (1, 100000)})
    """At most this many control periods per tick (catch-up bound; the chunk when rtf = 0)."""
    reset_keyframe: str = HOME_KEY
    """Keyframe that ~/reset restores."""
    home_positions: Tuple[float, ...] = ()
    """Home joint positions in URDF joint order; empty: derived from the URDF (an arm's ready
    pose, a legged robot's crouch; mbrl_ros/robots/defaults.py)."""
    floating_base: str = AUTO
    """'true', 'false' or 'auto' (floating iff the URDF root is not 'world' and it has feet)."""
    ee_link: str = AUTO
    """End-effector link ('auto': 'ee_link' if present; '' for none)."""
    position_kp: Tuple[float, ...] = ()
    """Position actuator stiffness [Nm/rad]: one value for all joints or one per joint (URDF
    joint order); empty: derived from the URDF (the same bandwidth on every joint; the rule
    ``mbrl-ros robot-config`` writes, mbrl_ros/robots/defaults.py)."""
    position_kv: Tuple[float, ...] = ()
    """Position actuator damping [Nm s/rad]: one value for all joints or one per joint (URDF
    joint order); empty: derived with the gains."""
    velocity_kv: float = 10.0
    """Velocity actuator gain [Nm s/rad]."""
    friction_scale: float = 1.0
    """Mismatch: multiplier on the URDF joint friction."""
    damping_scale: float = 1.0
    """Mismatch: multiplier on the URDF joint damping."""
    payload_mass: float = 0.0
    """Mismatch: extra mass at the end effector [kg]."""
    actuator_gain_scale: float = 1.0
    """Mismatch: multiplier on actuator gains."""
    coulomb_friction_fraction: float = 0.0
    """Mismatch: extra dry friction per joint, as a fraction of its URDF effort limit."""
    viscous_friction_fraction: float = 0.0
    """Mismatch: extra viscous friction per joint, this fraction of its URDF effort limit per
    rad/s."""
    actuator_lag_s: float = 0.0
    """Mismatch: first-order lag between a command and the actuator [s]."""
    backlash_rad: float = 0.0
    """Mismatch: play between a position command and the servo's target [rad]."""
    gravity_compensation: bool = False
    """Compensate the links' weight like a torque-controlled arm's driver (fixed base only)."""
    push_rate_hz: float = 0.0
    """Random pushes on a floating base: mean rate [1/s] (0: none)."""
    push_force: float = 0.0
    """Random pushes: force magnitude [N]."""
    push_duration: float = 0.1
    """Random pushes: duration [s]."""
    seed: int = 0
    """Seed of the random pushes."""
    odom_frame: str = "odom"
    """Frame id of /odom poses."""
    warn_period: float = 1.0
    """Minimum time between repeated warnings (bad commands) [s]."""
    command_timeout_s: float = field(default=0.5, metadata={"range": (0.0, 3600.0)})
    """Driver-side command timeout, as robot drivers have: with no valid command for this long
    (simulated time) the sim holds the measured joint positions (position mode) or commands
    zero effort / zero velocity, instead of applying the last command forever; 0 disables."""
    publish_robot_description: bool = True
    """Publish the simulated URDF's text (mesh URIs as written) once on robot_description
    (std_msgs/String, reliable + transient local, as robot_state_publisher does) for RViz's
    RobotModel display."""
    publish_tf: bool = True
    """Publish every link's pose as robot_state_publisher does: fixed joints on /tf_static,
    moving joints (and odom_frame -> root link for a floating base) on /tf. Needs tf2_msgs
    (there wherever RViz is installed; skipped with a warning without it). Set false when a
    robot_state_publisher runs alongside."""
    tf_period: float = field(default=0.02, metadata={"range": (0.0, 10.0)})
    """Simulated time between /tf messages [s]; 0: every control period."""

    def validate(self) -> None:
        """Raise ValueError on inconsistent parameters."""
        if not (self.urdf or self.robot_description):
            raise ValueError("set the 'urdf' (path or package:// URI) or 'robot_description' "
                             "parameter")
        if self.control_mode not in CONTROL_MODES:
            raise ValueError(f"control_mode must be one of {CONTROL_MODES}")
        if self.floating_base not in (AUTO, "true", "false"):
            raise ValueError("floating_base must be 'auto', 'true' or 'false'")
        self.build_options().validate()
        self.mismatch().validate()
        self.simulator().validate()

    @property
    def urdf_source(self) -> str:
        """URDF text or path handed to the simulator."""
        return self.robot_description or self.urdf

    @property
    def command_topic_prefix(self) -> str:
        """Controller namespace of the command topics."""
        return self.controller_name or f"{self.control_mode}_controller"

    def build_options(self, joint_names: Tuple[str, ...] = ()) -> BuildOptions:
        """Model builder options (``joint_names`` pair up with home_positions)."""
        floating = None if self.floating_base == AUTO else self.floating_base == "true"
        if joint_names and self.home_positions and len(self.home_positions) != len(joint_names):
            raise ValueError(f"home_positions has {len(self.home_positions)} values for "
                             f"{len(joint_names)} joints {list(joint_names)}")
        gains = {name: getattr(self, name) for name in ("position_kp", "position_kv")
                 if getattr(self, name)}  # left out: derived by with_robot_defaults()
        return BuildOptions(
            control_mode=self.control_mode, **gains, velocity_kv=self.velocity_kv,
            floating_base=floating, timestep=self.physics_timestep,
            ee_link=None if self.ee_link == AUTO else self.ee_link,
            home_positions=tuple(zip(joint_names, self.home_positions)),
            search_paths=self.package_search_paths,
            gravity_compensation=self.gravity_compensation)

    def with_robot_defaults(self, urdf: ResolvedUrdf) -> "SimConfig":
        """This config with the per-joint values left out (home, position gains) derived from
        the URDF (:func:`mbrl_ros.robots.defaults.robot_defaults`)."""
        missing_gains = self.control_mode == "position" and not (self.position_kp
                                                                 and self.position_kv)
        if self.home_positions and not missing_gains:
            return self
        floating = None if self.floating_base == AUTO else self.floating_base == "true"
        robot = RobotModel(urdf, floating_base=floating,
                           ee_frame=DEFAULT_EE_LINK if self.ee_link == AUTO else self.ee_link)
        home, gains = robot_defaults(robot)  # canonical (URDF) joint order, as the sim's
        return dataclasses.replace(self, home_positions=self.home_positions or tuple(home),
                                   position_kp=self.position_kp or tuple(gains.kp),
                                   position_kv=self.position_kv or tuple(gains.kd))

    def mismatch(self) -> MismatchConfig:
        """Model mismatch settings."""
        return MismatchConfig(
            friction_scale=self.friction_scale, damping_scale=self.damping_scale,
            payload_mass=self.payload_mass, actuator_gain_scale=self.actuator_gain_scale,
            coulomb_friction_fraction=self.coulomb_friction_fraction,
            viscous_friction_fraction=self.viscous_friction_fraction,
            actuator_lag_s=self.actuator_lag_s, backlash_rad=self.backlash_rad,
            push_rate_hz=self.push_rate_hz, push_force=self.push_force,
            push_duration=self.push_duration)

    def simulator(self) -> SimulatorConfig:
        """Simulator timing settings."""
        return SimulatorConfig(control_period=self.control_period,
                               reset_keyframe=self.reset_keyframe, seed=self.seed)


_LIST_PARAMETERS = {"package_search_paths": Parameter.Type.STRING_ARRAY,
                    "joints": Parameter.Type.STRING_ARRAY,
                    "home_positions": Parameter.Type.DOUBLE_ARRAY}


def read_sim_config(node: Node) -> SimConfig:
    """Declare the simulator parameters on ``node`` (with descriptors) and return the config.

    Empty-list parameters are declared here with an explicit array type (a ROS parameter's type
    cannot be inferred from an empty default); the rest come from :func:`declare_config`.
    """
    docs = field_docstrings(SimConfig)
    for item in dataclasses.fields(SimConfig):
        if item.name in _LIST_PARAMETERS and not node.has_parameter(item.name):
            kind = _LIST_PARAMETERS[item.name]
            declared = node.declare_parameter(
                item.name, kind, ParameterDescriptor(description=docs.get(item.name, "")))
            if declared.type_ == Parameter.Type.NOT_SET:  # not overridden: empty list
                node.set_parameters([Parameter(item.name, kind, [])])
    return declare_config(node, SimConfig)
