"""Effort mode: when the planner stops, the gate holds the arm with damping and gravity
compensation from the URDF, on the simulated arm with no gravity compensation in its driver.

Real nodes on real topics (in one process): the MuJoCo sim, the safety gate, and a stand-in
planner that holds the arm with gravity torques from the same URDF until it goes silent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState

from mbrl_ros.core.safety_gate_config import CommandStatus
from mbrl_ros.msg import GateStatus, PlannedCommand
from mbrl_ros.nodes import safety_gate_node as gate_node
from mbrl_ros.nodes.conversions import planned_command_message
from mbrl_ros.nodes.qos import PLANNED_COMMAND_QOS
from mbrl_ros.nodes.sim_node import SimNode
from mbrl_ros.robots.robot_model import RobotModel
from ros_helpers import spin_until

ARM = str(Path(__file__).resolve().parents[2] / "urdf" / "arm7.urdf")
HOME = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]
HOLD_TOLERANCE_RAD = 0.02
HOLD_KP = [100.0, 100.0, 100.0, 100.0, 10.0, 10.0, 5.0]
HOLD_KD = [10.0, 10.0, 10.0, 10.0, 1.0, 1.0, 0.5]
SETTLE_S = 0.5


class GravityPlanner(Node):
    """Commands the arm's gravity torques (it stays put) until ``silent``."""

    def __init__(self, context):
        super().__init__("gravity_planner", context=context)
        self.robot = RobotModel.from_urdf(ARM, ee_frame=None)
        self.pub = self.create_publisher(PlannedCommand, gate_node.PLANNED_COMMAND_TOPIC,
                                         PLANNED_COMMAND_QOS)
        self.silent = False
        self.states, self.sequence = [], 0
        self.gate = []
        self.create_subscription(JointState, "/joint_states", self._on_state, 100)
        self.create_subscription(GateStatus, gate_node.GATE_STATUS_TOPIC,
                                 lambda m: self.gate.append(m.state), 100)

    def _on_state(self, msg: JointState) -> None:
        index = [list(msg.name).index(j) for j in self.robot.joint_names]
        q = np.array(msg.position)[index]
        self.states.append((msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec, q))
        if self.silent:
            return
        self.sequence += 1
        torque = self.robot.gravity_and_inertia(q)[0]
        self.pub.publish(planned_command_message(
            self.robot.joint_names, torque[None, :], [0.0], [0.0], msg.header.stamp,
            self.sequence, 1, int(CommandStatus.PLANNED)))


def test_effort_hold_keeps_the_arm_where_the_planner_left_it(ros_context):
    gate = gate_node.SafetyGateNode(context=ros_context, parameter_overrides=[
        Parameter("urdf", value=ARM), Parameter("control_mode", value="effort"),
        Parameter("use_sim_time", value=True), Parameter("control_rate_hz", value=100.0),
        Parameter("watchdog_timeout_s", value=0.05),
        # stiff on the heavy proximal joints, soft on the light wrist (a 100 Hz PD on a
        # 0.04 kg m^2 wrist is unstable above kd = 2 I / dt = 8)
        Parameter("hold_kp", value=HOLD_KP), Parameter("hold_kd", value=HOLD_KD)])
    planner = GravityPlanner(ros_context)
    # the arm falls from the first simulated step on: the sim starts last and never catches up
    # in a burst of unheld steps
    sim = SimNode(context=ros_context, parameter_overrides=[
        Parameter("urdf", value=ARM), Parameter("control_mode", value="effort"),
        Parameter("gravity_compensation", value=False), Parameter("real_time_factor", value=1.0),
        Parameter("max_periods_per_tick", value=1), Parameter("home_positions", value=HOME)])
    executor = SingleThreadedExecutor(context=ros_context)
    for node in (sim, gate, planner):
        executor.add_node(node)
    try:
        assert spin_until(executor, lambda: GateStatus.STATE_PASS in planner.gate[-5:], 20.0), \
            "the gate never passed the gravity planner"
        spin_until(executor, lambda: False, 0.5)
        planner.silent = True
        stop_stamp, q_stop = planner.states[-1]
        spin_until(executor, lambda: len(planner.states) and planner.states[-1][0]
                   > stop_stamp + 2.0, 20.0)
        assert planner.gate[-1] == GateStatus.STATE_FALLBACK
        held = np.array([q for stamp, q in planner.states if stamp >= stop_stamp + SETTLE_S])
        assert len(held) > 50
        drift = float(np.max(np.abs(held - q_stop)))
        assert drift <= HOLD_TOLERANCE_RAD, f"the arm moved {drift:.4f} rad under the hold"
    finally:
        executor.shutdown()
        for node in (planner, gate, sim):
            node.destroy_node()
