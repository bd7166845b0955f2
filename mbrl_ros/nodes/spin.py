"""The one ``main`` every node shares: init, build the node, spin, shut down cleanly."""

from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], make_executor: Callable[[], Executor],
             args=None) -> None:
    """Spin the node until Ctrl-C / shutdown; always destroy it and shut rclpy down."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        executor = make_executor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
