"""lifecycle_manager: configures and activates the managed nodes, and again after a respawn.

Like nav2's lifecycle manager, thin: every ``check_period_s`` it asks each node of
``managed_nodes`` for its state (``<node>/get_state``) and brings an unconfigured one (just
started, or respawned by the launch) up through ``<node>/change_state``: configure, then
activate. The decisions are :mod:`mbrl_ros.nodes.lifecycle_supervision`'s. Nothing here is
needed for safety: the safety gate holds the robot in every lifecycle state.
Run: ``python -m mbrl_ros.nodes.lifecycle_manager --ros-args -p
"managed_nodes:=[safety_gate, planner]"``.
"""

from __future__ import annotations

import time
from typing import Optional

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from mbrl_ros.nodes.lifecycle_supervision import (ACTIVATE, CONFIGURE, GET_STATE,
                                                  LifecycleManagerConfig, ManagedNode, Request)
from mbrl_ros.nodes.parameters import declare_config
from mbrl_ros.nodes.spin import run_node

TRANSITION_IDS = {CONFIGURE: Transition.TRANSITION_CONFIGURE,
                  ACTIVATE: Transition.TRANSITION_ACTIVATE}


class LifecycleManagerNode(Node):
    """Keeps the managed nodes active: one state request per node and check period."""

    def __init__(self, **kwargs) -> None:
        super().__init__("lifecycle_manager", **kwargs)
        self.config = declare_config(self, LifecycleManagerConfig)
        self.nodes = {name: ManagedNode(name, self.config) for name in self.config.managed_nodes}
        self._node_clients = {
            name: (self.create_client(GetState, f"{name}/get_state"),
                   self.create_client(ChangeState, f"{name}/change_state"))
            for name in self.nodes}
        """(get_state, change_state) clients per managed node."""
        self._futures: dict = {}
        """The request in flight per node: (client, future)."""
        self.create_timer(self.config.check_period_s, self._on_timer)
        self.get_logger().info(f"managing {list(self.nodes)}: configure and activate each, "
                               "and again when it comes back unconfigured (respawned)")

    def _on_timer(self) -> None:
        for node in self.nodes.values():
            self._step(node)

    def _step(self, node: ManagedNode) -> None:
        """Send ``node`` its next request, if any."""
        now = time.monotonic()
        self._log(node.expire(now))
        if node.pending is None:
            self._abandon(node.name)  # timed out: no longer awaited
        request = node.next_request(now)
        if request is None:
            return
        get_state, change_state = self._node_clients[node.name]
        client = get_state if request.kind == GET_STATE else change_state
        if not client.service_is_ready():
            self._log(node.failed(request.number, now))
            return
        if request.kind == GET_STATE:
            future = client.call_async(GetState.Request())
        else:
            message = ChangeState.Request()
            message.transition.id = TRANSITION_IDS[request.kind]
            future = client.call_async(message)
        self._futures[node.name] = (client, future)
        future.add_done_callback(lambda done: self._on_answer(node, request, done))

    def _abandon(self, name: str) -> None:
        client, future = self._futures.pop(name, (None, None))
        if future is not None and not future.done():
            client.remove_pending_request(future)
            future.cancel()

    def _on_answer(self, node: ManagedNode, request: Request, future) -> None:
        if future.cancelled():
            return  # abandoned after its deadline
        self._futures.pop(node.name, None)
        now = time.monotonic()
        response = None if future.exception() else future.result()
        if response is None:
            self._log(node.failed(request.number, now))
        elif request.kind == GET_STATE:
            self._log(node.answered(request.number, now, state=response.current_state.label))
        else:
            self._log(node.answered(request.number, now, success=bool(response.success)))
        self._step(node)  # the next transition at once, not a check period later

    def _log(self, line: str) -> None:
        if line:
            self.get_logger().info(line)


def main(args: Optional[list] = None) -> None:
    """Entry point: manage the nodes until shutdown."""
    run_node(LifecycleManagerNode, SingleThreadedExecutor, args, name="lifecycle_manager")


if __name__ == "__main__":
    main()
