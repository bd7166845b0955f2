"""QoS profiles shared by the nodes that must agree on them (publisher and subscriber)."""

from __future__ import annotations

from rclpy.duration import Duration
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile,
                       ReliabilityPolicy)

LIVELINESS_LEASE_S = 1.0
"""A planner process that stops asserting liveliness for this long (wall time) is reported
dead by DDS; the gate's watchdog (stamps, simulation time) is what actually holds the robot."""

PLANNED_COMMAND_QOS = QoSProfile(
    reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
    liveliness=LivelinessPolicy.AUTOMATIC,
    liveliness_lease_duration=Duration(seconds=LIVELINESS_LEASE_S))
"""Planner -> gate commands: the newest only, and dead publishers detected."""
CONTROLLER_COMMAND_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE,
                                    history=HistoryPolicy.KEEP_LAST, depth=1)
"""Gate -> robot controller commands (what ros2_control forward controllers accept)."""
JOINT_STATE_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST, depth=5)
LATCHED_STATUS_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE,
                                history=HistoryPolicy.KEEP_LAST, depth=1,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
