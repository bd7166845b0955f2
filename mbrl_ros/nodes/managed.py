"""What the managed (lifecycle) nodes share: the ``autostart`` parameter and the transitions.

The planner and the safety gate are ``rclpy.lifecycle`` nodes, as nav2's and ros2_control's
are. ``autostart`` (default true) makes a node configure and activate itself while it is built,
so a node started on its own (``python -m mbrl_ros.nodes.planner_node``, a plain ``node`` in a
launch file, a test) behaves as an unmanaged node does. The package's launch files start them
as ``lifecycle_node`` with ``autostart: false``; ``lifecycle_manager`` then configures and
activates them, and again after a respawn.
"""

from __future__ import annotations

from typing import Callable, Optional

from lifecycle_msgs.msg import State
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

AUTOSTART_PARAMETER = "autostart"
AUTOSTART_DESCRIPTION = (
    "configure and activate this node at start, without a lifecycle manager (default). false: "
    "start unconfigured and wait for a lifecycle manager (the package's launch files)")
CONFIGURE_ERRORS = (ValueError, OSError)
"""A configuration the node refuses: the configure transition fails (back to unconfigured)."""
SUCCESS, FAILURE, ERROR = (TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE,
                           TransitionCallbackReturn.ERROR)
UNCONFIGURED, INACTIVE, ACTIVE, FINALIZED = (
    State.PRIMARY_STATE_UNCONFIGURED, State.PRIMARY_STATE_INACTIVE, State.PRIMARY_STATE_ACTIVE,
    State.PRIMARY_STATE_FINALIZED)


def declare_autostart(node: LifecycleNode) -> bool:
    """Declare and read the node's ``autostart`` parameter (read-only)."""
    return bool(node.declare_parameter(AUTOSTART_PARAMETER, True, ParameterDescriptor(
        description=AUTOSTART_DESCRIPTION, read_only=True)).value)


def state_id(node: LifecycleNode) -> int:
    """The node's current lifecycle state (a ``lifecycle_msgs/State`` id)."""
    return int(node._state_machine.current_state[0])


def state_label(node: LifecycleNode) -> str:
    """The node's current lifecycle state's label ("unconfigured", "active", ...)."""
    return str(node._state_machine.current_state[1])


def start_unmanaged(node: LifecycleNode,
                    configure_error: Callable[[], Optional[Exception]]) -> None:
    """Configure and activate ``node`` now (``autostart``). A refused configuration raises
    the error ``on_configure`` recorded (``configure_error()``), as building an unmanaged node
    would, so a bad parameter still stops the process with one clear line (nodes/spin.py)."""
    if node.trigger_configure() != SUCCESS:
        error = configure_error()
        raise error if error is not None else ValueError(
            f"{node.get_name()}: the configure transition failed")
    if node.trigger_activate() != SUCCESS:
        raise RuntimeError(f"{node.get_name()}: the activate transition failed")


def shut_down(node: LifecycleNode) -> None:
    """The shutdown transition from whatever primary state the node is in (its
    ``on_shutdown`` runs once); nothing if it is finalized already."""
    if state_id(node) in (UNCONFIGURED, INACTIVE, ACTIVE):
        node.trigger_shutdown()
