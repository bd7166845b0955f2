"""ROS 2 wrapper of :mod:`mbrl_ros.core.safety_gate`: the last check before the robot.

Every control tick (node clock, so ``use_sim_time`` works) the gate publishes either the planner
command or a fallback, because ros2_control forward controllers hold the last command forever.
Planner commands are ``mbrl_ros/PlannedCommand`` messages, mapped onto the gate's joints by
name and judged by their own stamp, status and disagreement; joint states by their header
stamps. A command of several timed points (a streamed plan) is sampled at each tick's time, so
the robot gets a fresh command every control period whatever the planner's rate. On
SIGINT/SIGTERM the gate publishes a final hold before it exits.

A managed (lifecycle) node that holds the robot in every state: it reads its parameters and
starts holding when it starts, since the robot must be held whatever state the gate is in;
configure subscribes to the planner's commands, activate lets them pass, deactivate and cleanup
hold at once, and the shutdown transition (also taken on SIGINT/SIGTERM) sends the final hold.
With ``autostart`` (default true) it activates itself; the launch files leave that to
``lifecycle_manager``.

Run: ``python -m mbrl_ros.nodes.safety_gate_node --ros-args --params-file <robot.yaml>``;
remap the output with ``-r effort_controller/commands:=<controller>/commands`` (or, with
``output_interface: joint_trajectory``, ``-r joint_trajectory_controller/joint_trajectory:=
<controller>/joint_trajectory``). Topic names are relative (the node's namespace applies);
/diagnostics is global.
"""

from __future__ import annotations

import threading
from dataclasses import fields
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from mbrl_ros.nodes.conversions import (JointNameMap, joint_trajectory_message,
                                        stamp_to_seconds)
from mbrl_ros.core.safety_gate import (GateCommand, GateConfig, GateOutput, GateState,
                                       GravityFn, SafetyGate)
from mbrl_ros.core.safety_gate_config import PER_JOINT_FIELDS, CommandStatus, Fault
from mbrl_ros.core.tick_schedule import TickSchedule
from mbrl_ros.core.workspace import WorkspaceConfig, WorkspaceGuard
from mbrl_ros.msg import GateStatus, PlannedCommand
from mbrl_ros.nodes.managed import (ACTIVE, SUCCESS, declare_autostart, start_unmanaged,
                                    state_id, state_label)
from mbrl_ros.nodes.parameters import declare_config, field_docstrings
from mbrl_ros.nodes.qos import (CONTROLLER_COMMAND_QOS, JOINT_STATE_QOS, LATCHED_STATUS_QOS,
                                PLANNED_COMMAND_QOS)
from mbrl_ros.nodes.spin import run_node, set_realtime_priority
from mbrl_ros.robots.robot_model import RobotModel
from mbrl_ros.robots.urdf_resolver import resolve_urdf
from mbrl_ros.robots.workspace_points import workspace_guard, workspace_unavailable

PLANNED_COMMAND_TOPIC = "mbrl/planned_command"
COMMAND_TOPIC = "effort_controller/commands"
TRAJECTORY_TOPIC = "joint_trajectory_controller/joint_trajectory"
"""Output with ``output_interface: joint_trajectory`` (remap it to the controller's)."""
OUTPUT_INTERFACES = ("forward", "joint_trajectory")
"""forward: std_msgs/Float64MultiArray for a forward command controller; joint_trajectory:
trajectory_msgs/JointTrajectory for a joint_trajectory_controller (position mode only)."""
JOINT_STATES_TOPIC = "joint_states"
GATE_STATUS_TOPIC = "mbrl/gate/status"
COMMAND_QOS = PLANNED_COMMAND_QOS
"""QoS of the planner's commands (liveliness: a dead planner is reported)."""
OUTPUT_QOS = CONTROLLER_COMMAND_QOS
STATE_QOS = JOINT_STATE_QOS
STATUS_QOS = LATCHED_STATUS_QOS
FINAL_HOLD_ACK_S = 0.5
"""How long the stopping gate waits for the controller to acknowledge its final hold."""
DIAGNOSTICS_PERIOD_S = 1.0
"""Default period of the /diagnostics message (parameter ``diagnostics_period_s``)."""
DIAGNOSTICS_PERIOD_RANGE_S = (0.01, 60.0)
WORKSPACE_PREFIX = "workspace."
"""Parameters of the workspace check (:class:`WorkspaceConfig`), read once at start."""
DEFAULT_EE_FRAME = "ee_link"
"""End-effector frame of the workspace's box when the ``ee_frame`` parameter is not set."""
NOT_ACTIVE_REASON = "safety gate not active"
"""Reason of the hold request the gate gives itself when it stops passing planner commands."""
NOT_ACTIVE_FAULTS = (Fault.NO_COMMAND, Fault.PLANNER_FAILED)
"""Faults a gate that is not active reports as its lifecycle state (it holds by design)."""
DEFAULTS = GateConfig()
DESCRIPTIONS = field_docstrings(GateConfig)


def gate_config_from_parameters(values: Mapping[str, Any],
                                urdf_limits: Optional[Mapping[str, Any]] = None) -> GateConfig:
    """Node parameter values by name -> validated GateConfig (ValueError on bad values).

    Per-joint parameters may be scalars or arrays; names that are no GateConfig field are ignored.
    ``urdf_limits`` (joint name -> ``JointLimits``) fills ``joints`` and limits not set.
    """
    return GateConfig.from_dict({f.name: values[f.name] for f in fields(GateConfig)
                                 if f.name in values}, urdf_limits)


def _descriptor(name: str, bounds: Optional[tuple], default: Any) -> ParameterDescriptor:
    """Read-only descriptor; numbers accept ints and per-joint fields a scalar or an array."""
    descriptor = ParameterDescriptor(description=DESCRIPTIONS.get(name, name), read_only=True,
                                     dynamic_typing=name in PER_JOINT_FIELDS
                                     or isinstance(default, float))
    if bounds is not None and isinstance(default, float):
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(bounds[0]), to_value=float(bounds[1]), step=0.0)]
    elif bounds is not None:
        descriptor.integer_range = [IntegerRange(from_value=int(bounds[0]),
                                                 to_value=int(bounds[1]), step=1)]
    return descriptor


def _guarded(callback):
    """Run a callback so that no exception escapes into the executor."""
    def wrapper(self, *args):
        try:
            return callback(self, *args)
        except Exception as exc:  # noqa: BLE001 - malformed input must not kill the gate
            self.get_logger().error(f"{callback.__name__} failed: {exc!r}",
                                    throttle_duration_sec=DIAGNOSTICS_PERIOD_S)
            return args[-1] if args and hasattr(args[-1], "success") else None
    return wrapper


class SafetyGateNode(LifecycleNode):
    """Subscribes planner commands and joint states; publishes the gated command (a hold
    unless active). Its outputs are plain publishers, not lifecycle ones: the hold must go
    out in every lifecycle state."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("safety_gate", **kwargs)
        autostart = declare_autostart(self)
        self.config, gravity = self._read_config()
        self.workspace = self._read_workspace()
        self.gate = SafetyGate(self.config, gravity, self.workspace)
        self._joint_map = JointNameMap(self.config.joints)
        self._lock = threading.Lock()
        self._last: Optional[GateOutput] = None
        self._period = 1.0 / self.config.control_rate_hz
        self._schedule = TickSchedule(self._period)
        self._planner_alive = 0
        self._stopped = False
        self._active = False
        """Planner commands reach the core gate only while the node is active."""
        self._command_sub = None
        """The planner's commands (created by configure, destroyed by cleanup)."""
        self._own_hold = False
        """True while the core gate's command is the gate's own hold request (not active)."""
        self._trajectory_output = self._output_interface == "joint_trajectory"
        self._command_pub = self.create_publisher(
            JointTrajectory, TRAJECTORY_TOPIC, OUTPUT_QOS) if self._trajectory_output \
            else self.create_publisher(Float64MultiArray, COMMAND_TOPIC, OUTPUT_QOS)
        self._status_pub = self.create_publisher(GateStatus, GATE_STATUS_TOPIC, STATUS_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_state, STATE_QOS)
        self.create_service(SetBool, "~/estop", self._on_estop)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._tick_timer = self.create_timer(self._period, self._on_tick,
                                             callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(self.get_parameter("diagnostics_period_s").value, self._on_diagnostics)
        self.add_on_set_parameters_callback(self._refuse_workspace_changes)
        self._raise_priority()
        self.get_logger().info(
            f"safety gate: {self.config.control_mode} mode, joints {list(self.config.joints)}, "
            f"{self.config.control_rate_hz} Hz, watchdog {self.config.watchdog_timeout_s} s, "
            f"output {self._command_pub.topic_name} ({self._output_interface})"
            + (", hold with gravity compensation" if gravity is not None
               and not self.config.driver_gravity_compensation else "")
            + ("" if autostart else "; holding until a lifecycle manager activates it"))
        if autostart:
            start_unmanaged(self, lambda: None)

    # -- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Listen to the planner (its commands pass only once active)."""
        if self._command_sub is None:
            self._command_sub = self.create_subscription(
                PlannedCommand, PLANNED_COMMAND_TOPIC, self._on_command, COMMAND_QOS,
                event_callbacks=SubscriptionEventCallbacks(
                    liveliness=self._on_planner_liveliness))
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Pass planner commands from the next fresh one on (the hold until then)."""
        self._active = True
        self.get_logger().info("active: passing planner commands that pass the checks")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._hold("deactivated")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._hold("cleaned up")
        if self._command_sub is not None:
            self.destroy_subscription(self._command_sub)
            self._command_sub = None
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._hold("error in a lifecycle transition")
        return SUCCESS

    def _hold(self, why: str) -> None:
        """Stop passing planner commands and hold from this tick on: the core gate gets a hold
        request in place of the planner's last command."""
        self._active = False
        joints = self.config.num_joints
        with self._lock:
            self._own_hold = True
            self.gate.set_command(GateCommand(
                points=np.zeros((0, joints)), times=np.zeros(0), disagreement=np.zeros(0),
                status=int(CommandStatus.FAILED), source_stamp=self._now(),
                reason=NOT_ACTIVE_REASON))
        self.get_logger().info(f"{why}: holding the robot; planner commands are not passed")
        self._decide_and_publish()

    def _read_config(self) -> Tuple[GateConfig, Optional[GravityFn]]:
        for config_field in fields(GateConfig):
            name, default = config_field.name, getattr(DEFAULTS, config_field.name)
            if name in PER_JOINT_FIELDS and len(default) == 1:
                default = default[0]
            descriptor = _descriptor(name, config_field.metadata.get("range"), default)
            if isinstance(default, tuple) and not default:
                self.declare_parameter(name, Parameter.Type.STRING_ARRAY, descriptor)
            else:
                self.declare_parameter(name, list(default) if isinstance(default, tuple)
                                       else default, descriptor)
        self._forward_on_command = self.declare_parameter(
            "forward_on_command", True, ParameterDescriptor(
                description="check and forward each planner command as it arrives (lowest "
                "latency; an extra output between two ticks), the control-rate timer "
                "following a period after the last output. false: planner commands are "
                "sampled on the control ticks only",
                read_only=True)).value
        self._output_interface = self.declare_parameter(
            "output_interface", OUTPUT_INTERFACES[0], ParameterDescriptor(
                description="forward: std_msgs/Float64MultiArray on effort_controller/commands "
                "(a forward command controller); joint_trajectory: trajectory_msgs/"
                "JointTrajectory on joint_trajectory_controller/joint_trajectory, one point "
                "(the gated command) one control period ahead, for a "
                "joint_trajectory_controller's position interface (control_mode position only)",
                read_only=True)).value
        self._realtime_priority = self.declare_parameter(
            "realtime_priority", 0, ParameterDescriptor(
                description="SCHED_FIFO priority (1-99) for every thread of the gate, as "
                "ros2_control's thread_priority: the gate keeps its rate when the planner or the "
                "trainer load the CPU. Needs CAP_SYS_NICE or an rtprio limit; without it the "
                "gate logs a warning and runs at normal priority. 0: normal priority",
                read_only=True, integer_range=[IntegerRange(from_value=0, to_value=99,
                                                            step=1)])).value
        self.declare_parameter("diagnostics_period_s", DIAGNOSTICS_PERIOD_S, ParameterDescriptor(
            description="period of /diagnostics [s]", read_only=True,
            floating_point_range=[FloatingPointRange(from_value=DIAGNOSTICS_PERIOD_RANGE_S[0],
                                                     to_value=DIAGNOSTICS_PERIOD_RANGE_S[1])]))
        urdf = self.declare_parameter("urdf", "", ParameterDescriptor(
            description="robot URDF (path, package:// URI or XML); gives joints and limits not "
            "set as parameters", read_only=True)).value
        try:
            joints = self.get_parameter("joints").value
        except ParameterUninitializedException:
            joints = ()
        values = {f.name: self.get_parameter(f.name).value for f in fields(GateConfig)[1:]}
        urdf_limits = resolve_urdf(urdf).joint_limits if urdf else None
        config = gate_config_from_parameters(dict(values, joints=joints), urdf_limits)
        check_output_interface(self._output_interface, config.control_mode)
        gravity = None
        if urdf and config.control_mode == "effort" and not config.driver_gravity_compensation:
            gravity = gravity_model(urdf, config.joints)
        return config, gravity

    def _read_workspace(self) -> Optional[WorkspaceGuard]:
        """The workspace check from ``workspace.*``, the URDF and ``ee_frame``; None (logged
        once) when it is off or cannot apply (no URDF, a floating base, joints that are not
        the URDF's)."""
        workspace = declare_config(self, WorkspaceConfig, WORKSPACE_PREFIX)
        ee_frame = self.declare_parameter("ee_frame", DEFAULT_EE_FRAME, ParameterDescriptor(
            description="end-effector frame of the workspace's box (URDF link or frame)",
            read_only=True)).value
        urdf = self.get_parameter("urdf").value
        guard, off = None, "no urdf parameter: the robot's kinematics are unknown"
        if urdf and workspace.enabled:
            robot = RobotModel.from_urdf(urdf, ee_frame=ee_frame or None)
            off = workspace_unavailable(robot, workspace, self.config.joints)
            guard = None if off else workspace_guard(robot, workspace, self.config.joints)
        elif not workspace.enabled:
            off = "switched off (workspace.enabled: false)"
        if guard is None:
            self.get_logger().info(f"workspace check off: {off}")
        else:
            self.get_logger().info(
                f"workspace: {list(guard.names)} stay at z >= {workspace.floor_limit:g} m"
                + (f", the end effector within {list(workspace.ee_lower)}.."
                   f"{list(workspace.ee_upper)}" if workspace.bounded else ""))
        return guard

    def _refuse_workspace_changes(self, parameters) -> SetParametersResult:
        """The workspace is read once at start: refuse changes rather than ignore them."""
        changed = [p.name for p in parameters if p.name.startswith(WORKSPACE_PREFIX)]
        if changed:
            return SetParametersResult(successful=False, reason=f"{changed} are read at start "
                                       "only: restart the gate with the new values")
        return SetParametersResult(successful=True)

    def _raise_priority(self) -> None:
        """Real-time scheduling for every thread of this process (DDS threads included)."""
        priority = self._realtime_priority
        if priority <= 0:
            return
        error = set_realtime_priority(priority)
        if error:
            self.get_logger().warning(f"could not run at real-time priority {priority} "
                                      f"({error}); running at normal priority")
            return
        self.get_logger().info(f"running at real-time priority {priority} (SCHED_FIFO)")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    @_guarded
    def _on_command(self, msg: PlannedCommand) -> None:
        if not self._active:
            return  # configured but not active: the hold request stays
        points, times, disagreement, error = self._joint_map.from_planned_command(msg)
        with self._lock:
            self._own_hold = False
            if error:
                self.gate.set_invalid_command(error)
            else:
                self.gate.set_command(GateCommand(
                    points=points, times=times, disagreement=disagreement, status=msg.status,
                    source_stamp=stamp_to_seconds(msg.header.stamp), reason=msg.reason))
        if self._forward_on_command:
            self._decide_and_publish()

    @_guarded
    def _on_joint_state(self, msg: JointState) -> None:
        stamp, now = stamp_to_seconds(msg.header.stamp), self._now()
        # the robot's tick: the joint state's stamp, unless the gate is behind (a backlog of
        # joint states then gets one output, not a burst) or the stamp is implausible
        lag = now - stamp
        on_time = -self.config.state_timeout_s <= lag <= self._schedule.slack
        tick = stamp if on_time else now
        with self._lock:
            self.gate.set_joint_state(msg.name, msg.position, msg.velocity, stamp)
            due = self._schedule.due(tick)
        if due:  # each joint state of the robot's rate gets one output (the timer fills in)
            self._decide_and_publish(tick=tick)

    def _on_planner_liveliness(self, info) -> None:
        alive = int(info.alive_count)
        if alive < self._planner_alive:
            self.get_logger().warning("a planner stopped asserting liveliness (stopped, dead or "
                                      "stalled); the watchdog holds the robot")
        elif alive > self._planner_alive:
            self.get_logger().info("planner alive")
        self._planner_alive = alive

    @_guarded
    def _on_estop(self, request: SetBool.Request, response: SetBool.Response):
        response.success = bool(request.data)
        if request.data:
            with self._lock:
                self.gate.estop()
            self.get_logger().warning("e-stop latched by service call")
            response.message = "e-stop latched; call ~/reset to release"
        else:
            response.message = "e-stop is released only by ~/reset"
        return response

    @_guarded
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        with self._lock:
            response.success, response.message = self.gate.reset(self._now())
        self.get_logger().info(response.message)
        return response

    @_guarded
    def _on_tick(self) -> None:
        now = self._now()
        with self._lock:
            due = self._schedule.due(now)
        if due:  # no joint state answered this period
            self._decide_and_publish(tick=now, from_timer=True)

    def _decide_and_publish(self, tick: Optional[float] = None, from_timer: bool = False) -> None:
        """One gate decision, published with its status. ``tick``: the control tick it
        answers (:class:`TickSchedule`); None: an extra output (a forwarded command). An
        output not made by the timer restarts the timer, so it fires only when no joint state
        came for a period: a command every period, never two periods apart."""
        stamp = self.get_clock().now()
        if stamp.nanoseconds == 0:  # simulated time, and no /clock yet: nothing to judge by
            self.get_logger().info("waiting for /clock", throttle_duration_sec=5.0)
            return
        with self._lock:
            if self._stopped:
                return
            previous = self._last
            out = self.gate.tick(stamp.nanoseconds * 1e-9)
            self._last = out
            if tick is not None:
                self._schedule.sent(tick)
        if not from_timer:
            self._tick_timer.reset()
        if out.command is not None:
            self._publish_output(out.command)
        reason = out.reason
        if out.fault in NOT_ACTIVE_FAULTS and not self._active:
            reason = f"gate {state_label(self)}: holding, planner commands not passed"
        elif out.fault in NOT_ACTIVE_FAULTS and self._own_hold:
            reason = "gate active: holding until the planner's next command"
        self._log_transition(previous, out)
        self._publish_status(out, reason, stamp)

    def _publish_output(self, command: np.ndarray) -> None:
        """The gated command to the controller: a Float64MultiArray, or a JointTrajectory
        whose one point (start now, reached one control period later) is the command."""
        if self._trajectory_output:
            self._command_pub.publish(joint_trajectory_message(
                self.config.joints, command[None, :], [self._period], "positions"))
        else:
            self._command_pub.publish(Float64MultiArray(data=command.tolist()))

    def _publish_status(self, out: GateOutput, reason: str, stamp) -> None:
        status = GateStatus(state=int(out.state), reason=reason,
                            disagreement=float(out.disagreement),
                            disagreement_threshold=self.config.disagreement_threshold,
                            disagreement_resume=self.config.disagreement_resume,
                            command_age_s=float(out.command_age_s),
                            watchdog_timeout_s=self.config.watchdog_timeout_s,
                            interventions=out.interventions, commands_passed=out.commands_passed,
                            commands_clamped=out.commands_clamped)
        status.header.stamp = stamp.to_msg()
        self._status_pub.publish(status)

    def _log_transition(self, previous: Optional[GateOutput], out: GateOutput) -> None:
        """Every change of state or fault, both ways, through the node's logger."""
        passing = (GateState.PASS, GateState.CLAMPED)
        if previous is not None and (previous.state, previous.fault) == (out.state, out.fault):
            return
        was = "START" if previous is None else previous.state.name
        message = f"gate {was} -> {out.state.name}: {out.reason}"
        if out.state in passing and (previous is None or previous.state in passing):
            self.get_logger().debug(message)  # clamping comes and goes with every plan
        elif out.state in passing:
            self.get_logger().info(message)
        else:
            self.get_logger().warning(message)

    def on_shutdown(self, state: Optional[LifecycleState] = None) -> TransitionCallbackReturn:
        """Final hold (the shutdown transition, which the process takes on SIGINT/SIGTERM
        too): the controller must not keep applying a moving planner target. Sent once."""
        stamp = self.get_clock().now()
        self._active = False
        with self._lock:
            if self._stopped:
                return SUCCESS
            self._stopped = True
            command = self.gate.final_command(stamp.nanoseconds * 1e-9)
            last = self._last
        if command is not None:
            self._publish_output(command)
            # reliable delivery before the writer goes away with the process
            if not self._command_pub.wait_for_all_acked(Duration(seconds=FINAL_HOLD_ACK_S)):
                self.get_logger().warning("final hold not acknowledged by every subscriber")
        if last is not None:
            self._publish_status(last, "gate stopped: final hold sent", stamp)
        self.get_logger().info(
            "gate stopping: final hold "
            + ("not sent (no safe command known)" if command is None
               else f"{np.round(command, 4).tolist()}"))
        return SUCCESS

    @_guarded
    def _on_diagnostics(self) -> None:
        out = self._last
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: safety gate",
                                  hardware_id="mbrl_ros")
        if out is None:
            status.level, status.message = DiagnosticStatus.STALE, "no control tick yet"
        else:
            error = out.latched or out.state == GateState.ESTOP
            status.level = DiagnosticStatus.ERROR if error else DiagnosticStatus.OK \
                if out.state == GateState.PASS else DiagnosticStatus.WARN
            status.message = f"{out.state.name}: {out.reason}"
            if state_id(self) != ACTIVE:
                status.level = max(status.level, DiagnosticStatus.WARN)
                status.message = f"{state_label(self)} (holding): {status.message}"
            status.values = [KeyValue(key=key, value=str(value)) for key, value in (
                ("state", out.state.name), ("fault", out.fault.value if out.fault else ""),
                ("disagreement", out.disagreement), ("command_age_s", out.command_age_s),
                ("interventions", out.interventions), ("commands_passed", out.commands_passed),
                ("commands_clamped", out.commands_clamped), ("lifecycle", state_label(self)))]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


def check_output_interface(output_interface: str, control_mode: str) -> None:
    """Raise ValueError for an output interface the control mode cannot use."""
    if output_interface not in OUTPUT_INTERFACES:
        raise ValueError(f"output_interface must be one of {OUTPUT_INTERFACES}, "
                         f"got {output_interface!r}")
    if output_interface == "joint_trajectory" and control_mode != "position":
        raise ValueError(
            "output_interface 'joint_trajectory' needs control_mode 'position': a "
            "joint_trajectory_controller follows position points (with an effort or velocity "
            f"command interface through its own PID), it cannot take {control_mode} commands; "
            "use output_interface 'forward' with a forward command controller")


def gravity_model(urdf: str, joints: Sequence[str]) -> Optional[GravityFn]:
    """Gravity efforts of a fixed-base robot in the order ``joints`` (None for a floating base,
    whose joint gravity efforts depend on the contacts)."""
    robot = RobotModel.from_urdf(urdf, ee_frame=None)
    if robot.floating_base or sorted(joints) != sorted(robot.joint_names):
        return None
    order = np.array([robot.joint_names.index(j) for j in joints])
    gate_to_model = np.argsort(order)

    def gravity(positions: np.ndarray) -> np.ndarray:
        return robot.gravity_and_inertia(positions[gate_to_model])[0][order]

    return gravity


def main(args: Optional[list] = None) -> None:
    """Entry point: spin the safety gate until shutdown; a final hold on the way out."""
    # one thread: every callback is short (rclpy's multi-threaded executor spins a core while
    # a callback group is busy)
    run_node(SafetyGateNode, SingleThreadedExecutor, args, name="safety_gate")


if __name__ == "__main__":
    main()
