"""What the fault-injection tests (and ``bench.faults``) watch in a running graph: joint states,
the commands that reach the robot's controller, the gate's status, and the graph's processes.

The probe timestamps every message with the wall clock at reception (``time.monotonic``): fault
windows are judged in the tester's time; stream gaps in the gate's own (simulated) time, from
the stamps of its status, one per output.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import rclpy
from lifecycle_msgs.srv import GetState
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from bench.processes import node_pids as child_processes  # noqa: F401 - for the tests
from mbrl_ros.msg import GateStatus, PlannedCommand
from rclpy.qos import QoSProfile, ReliabilityPolicy

from mbrl_ros.nodes.qos import PLANNED_COMMAND_QOS

HOLD_TOLERANCE_RAD = 0.02
"""A command within this of the measured position holds the joint."""
SETTLE_S = 0.5
"""The robot must be held from this long after a fault on."""
STATE_REQUEST_S = 1.0
"""How long the probe waits for one answer to a lifecycle state request."""
RECORD_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
"""The probe keeps every message even when the test process falls behind."""


@dataclass
class Received:
    wall: List[float] = field(default_factory=list)
    values: List[np.ndarray] = field(default_factory=list)


class GraphProbe:
    """Subscribes to the graph's safety-relevant topics and can inject planner commands."""

    def __init__(self, context, joints: Sequence[str], controller_topic: str):
        self.joints = list(joints)
        self.node = rclpy.create_node("fault_probe", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.states, self.commands = Received(), Received()
        self.state_stamps: List[float] = []
        self.gate: List[Tuple[float, int, str]] = []
        self.gate_stamps: List[float] = []
        self.node.create_subscription(JointState, "/joint_states", self._on_state, RECORD_QOS)
        self.node.create_subscription(Float64MultiArray, controller_topic, self._on_command,
                                      RECORD_QOS)
        self.node.create_subscription(GateStatus, "/mbrl/gate/status", self._on_gate,
                                      RECORD_QOS)
        self.planned_pub = self.node.create_publisher(PlannedCommand, "/mbrl/planned_command",
                                                      PLANNED_COMMAND_QOS)
        self.estop = self.node.create_client(SetBool, "/safety_gate/estop")
        self.reset = self.node.create_client(Trigger, "/safety_gate/reset")
        self._state_clients: dict = {}

    def _on_state(self, msg: JointState) -> None:
        index = {name: i for i, name in enumerate(msg.name)}
        if not all(j in index for j in self.joints):
            return
        self.states.wall.append(time.monotonic())
        self.states.values.append(np.array([msg.position[index[j]] for j in self.joints]))
        self.state_stamps.append(msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec)

    def _on_command(self, msg: Float64MultiArray) -> None:
        self.commands.wall.append(time.monotonic())
        self.commands.values.append(np.array(msg.data, dtype=float))

    def _on_gate(self, msg: GateStatus) -> None:
        """One status per gate output, stamped with the gate's (simulated) time."""
        self.gate.append((time.monotonic(), int(msg.state), msg.reason))
        self.gate_stamps.append(msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec)

    # --------------------------------------------------------------------------- waiting
    def spin(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.005)

    def spin_until(self, predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.005)
        return bool(predicate())

    def call(self, client, request, timeout_s: float = 10.0):
        assert client.wait_for_service(timeout_sec=timeout_s), f"{client.srv_name} not up"
        future = client.call_async(request)
        assert self.spin_until(future.done, timeout_s)
        return future.result()

    def lifecycle_state(self, node_name: str, timeout_s: float = 10.0) -> str:
        """The lifecycle state ("unconfigured", "active", ...) of the managed node
        ``/node_name``; '' when it does not answer within ``timeout_s``. A request is sent
        again every ``STATE_REQUEST_S`` (one sent just as a new process's service appears may
        never be answered)."""
        client = self._state_clients.get(node_name)
        if client is None:
            client = self._state_clients[node_name] = self.node.create_client(
                GetState, f"/{node_name}/get_state")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.spin_until(client.service_is_ready, deadline - time.monotonic()):
                break
            future = client.call_async(GetState.Request())
            if self.spin_until(future.done, min(STATE_REQUEST_S, deadline - time.monotonic())):
                return future.result().current_state.label
            client.remove_pending_request(future)
        return ""

    def gate_state_since(self, wall: float) -> List[int]:
        return [state for t, state, _ in self.gate if t >= wall]

    # --------------------------------------------------------------------------- judging
    def measured_before(self, wall: float) -> Optional[np.ndarray]:
        """The latest joint positions received before ``wall``."""
        index = int(np.searchsorted(self.states.wall, wall)) - 1
        return None if index < 0 else self.states.values[index]

    def hold_errors(self, start: float, end: float) -> np.ndarray:
        """max |command - measured position| of each command received in [start, end]."""
        errors = []
        for wall, values in zip(self.commands.wall, self.commands.values):
            if start <= wall <= end:
                measured = self.measured_before(wall)
                if measured is not None and values.shape == measured.shape:
                    errors.append(float(np.max(np.abs(values - measured))))
        return np.array(errors)

    def max_gap_s(self, start: float, end: float) -> float:
        """Longest gap between the gate's outputs received in [start, end], in the gate's own
        (simulated) time: the stamps of its status, one per output."""
        stamps = [s for (w, _, reason), s in zip(self.gate, self.gate_stamps)
                  if start <= w <= end and "stopped" not in reason]
        return float(np.max(np.diff(stamps))) if len(stamps) > 1 else float("inf")

    def commands_between(self, start: float, end: float) -> List[np.ndarray]:
        return [v for w, v in zip(self.commands.wall, self.commands.values) if start <= w <= end]

    def destroy(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


# ------------------------------------------------------------------------------- processes
def wait_for_process(parent: int, name: str, timeout_s: float, other_than: int = -1,
                     probe: Optional[GraphProbe] = None) -> int:
    """The pid of node ``name`` (a new one if ``other_than`` is given), spinning ``probe``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = child_processes(parent).get(name)
        if pid is not None and pid != other_than:
            return pid
        if probe is not None:
            probe.spin(0.05)
        else:
            time.sleep(0.05)
    raise AssertionError(f"node {name} not running under the launch runner {parent}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill(pid: int, signum: int = signal.SIGKILL) -> float:
    """Send ``signum`` to ``pid``; returns the wall time it was sent."""
    os.kill(pid, signum)
    return time.monotonic()
