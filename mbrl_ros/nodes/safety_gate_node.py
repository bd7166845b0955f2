"""ROS 2 wrapper of :mod:`mbrl_ros.core.safety_gate`: the last check before the robot.

Every control tick (node clock, so ``use_sim_time`` works) the gate publishes either the planner
command or a fallback, because ros2_control forward controllers hold the last command forever.
Run: ``python -m mbrl_ros.nodes.safety_gate_node --ros-args --params-file <robot.yaml>``;
remap the output with ``-r /effort_controller/commands:=/<controller>/commands``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import fields
from typing import Any, Mapping, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from mbrl_ros.core.safety_gate import GateConfig, GateOutput, GateState, SafetyGate
from mbrl_ros.core.safety_gate_config import PER_JOINT_FIELDS
from mbrl_ros.nodes.parameters import field_docstrings
from mbrl_ros.robots.urdf_resolver import resolve_urdf
from mbrl_ros.msg import GateStatus, PlanStatus

PLANNED_COMMAND_TOPIC = "/mbrl/planned_command"
COMMAND_TOPIC = "/effort_controller/commands"
JOINT_STATES_TOPIC = "/joint_states"
PLAN_STATUS_TOPIC = "/mbrl/plan/status"
GATE_STATUS_TOPIC = "/mbrl/gate/status"
COMMAND_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         depth=1)
STATE_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                       depth=5)
STATUS_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                        depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
DIAGNOSTICS_PERIOD_S = 1.0
"""Default period of the /diagnostics message (parameter ``diagnostics_period_s``)."""
DIAGNOSTICS_PERIOD_RANGE_S = (0.01, 60.0)
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


class SafetyGateNode(Node):
    """Subscribes planner command, joint states and plan status; publishes the gated command."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("safety_gate", **kwargs)
        self.config = self._read_config()
        self.gate = SafetyGate(self.config)
        self._lock = threading.Lock()
        self._last: Optional[GateOutput] = None
        self._last_publish = -math.inf
        self._period = 1.0 / self.config.control_rate_hz
        self._command_pub = self.create_publisher(Float64MultiArray, COMMAND_TOPIC, COMMAND_QOS)
        self._status_pub = self.create_publisher(GateStatus, GATE_STATUS_TOPIC, STATUS_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(Float64MultiArray, PLANNED_COMMAND_TOPIC, self._on_command,
                                 COMMAND_QOS)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_state, STATE_QOS)
        self.create_subscription(PlanStatus, PLAN_STATUS_TOPIC, self._on_plan_status, COMMAND_QOS)
        self.create_service(SetBool, "~/estop", self._on_estop)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_timer(1.0 / self.config.control_rate_hz, self._on_tick,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(self.get_parameter("diagnostics_period_s").value, self._on_diagnostics)
        self.get_logger().info(
            f"safety gate: {self.config.control_mode} mode, joints {list(self.config.joints)}, "
            f"{self.config.control_rate_hz} Hz, watchdog {self.config.watchdog_timeout_s} s")

    def _read_config(self) -> GateConfig:
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
                "latency); the control-rate timer then publishes only when nothing went out "
                "for half a period (fallback, heartbeat). false: the timer alone publishes",
                read_only=True)).value
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
        return gate_config_from_parameters(dict(values, joints=joints), urdf_limits)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    @_guarded
    def _on_command(self, msg: Float64MultiArray) -> None:
        with self._lock:
            self.gate.set_command(msg.data, self._now())
        if self._forward_on_command:
            self._decide_and_publish()

    @_guarded
    def _on_joint_state(self, msg: JointState) -> None:
        with self._lock:
            self.gate.set_joint_state(msg.name, msg.position, msg.velocity, self._now())

    @_guarded
    def _on_plan_status(self, msg: PlanStatus) -> None:
        with self._lock:
            self.gate.set_disagreement(msg.mean_disagreement, msg.max_disagreement)

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
        if self._forward_on_command and self._now() - self._last_publish < 0.5 * self._period:
            return  # a planner command went out within this period
        self._decide_and_publish()

    def _decide_and_publish(self) -> None:
        """One gate decision, published with its status."""
        stamp = self.get_clock().now()
        with self._lock:
            out = self.gate.tick(stamp.nanoseconds * 1e-9)
            self._last = out
            self._last_publish = stamp.nanoseconds * 1e-9
        if out.command is not None:
            self._command_pub.publish(Float64MultiArray(data=out.command.tolist()))
        status = GateStatus(state=int(out.state), reason=out.reason,
                            disagreement=float(out.disagreement),
                            disagreement_threshold=self.config.disagreement_threshold,
                            disagreement_resume=self.config.disagreement_resume,
                            command_age_s=float(out.command_age_s),
                            watchdog_timeout_s=self.config.watchdog_timeout_s,
                            interventions=out.interventions, commands_passed=out.commands_passed)
        status.header.stamp = stamp.to_msg()
        self._status_pub.publish(status)

    @_guarded
    def _on_diagnostics(self) -> None:
        out = self._last
        status = DiagnosticStatus(name=f"{self.get_name()}: safety gate", hardware_id="mbrl_ros")
        if out is None:
            status.level, status.message = DiagnosticStatus.STALE, "no control tick yet"
        else:
            error = out.latched or out.state == GateState.ESTOP
            status.level = DiagnosticStatus.ERROR if error else DiagnosticStatus.OK \
                if out.state == GateState.PASS else DiagnosticStatus.WARN
            status.message = f"{out.state.name}: {out.reason}"
            status.values = [KeyValue(key=key, value=str(value)) for key, value in (
                ("state", out.state.name), ("fault", out.fault.value if out.fault else ""),
                ("disagreement", out.disagreement), ("command_age_s", out.command_age_s),
                ("interventions", out.interventions), ("commands_passed", out.commands_passed))]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


def main(args: Optional[list] = None) -> None:
    """Entry point: spin the safety gate until shutdown."""
    try:
        with rclpy.init(args=args):
            node = SafetyGateNode()
            # one thread: every callback is short (rclpy's multi-threaded executor spins a
            # core while a callback group is busy)
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            try:
                executor.spin()
            finally:  # join the executor's threads here, not at interpreter exit
                executor.shutdown()
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, OSError) as exc:  # bad configuration: say why, without a traceback
        rclpy.logging.get_logger("safety_gate").fatal(f"bad configuration: {exc}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
