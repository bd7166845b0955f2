#!/usr/bin/env python3
"""Test-only node: declares 'start' and 'limits.low/high', publishes a count on 'count'."""

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from std_msgs.msg import Int64

PERIOD_S = 0.1


class TinyCounter(Node):
    """Publishes an increasing count from ``start`` on ``count``."""

    def __init__(self) -> None:
        super().__init__('tiny_counter')
        self.count = self.declare_parameter('start', 0).value
        self.declare_parameter('limits.low', 0)
        self.declare_parameter('limits.high', 0)
        self.publisher = self.create_publisher(Int64, 'count', 10)
        self.create_timer(PERIOD_S, self.publish)

    def publish(self) -> None:
        self.publisher.publish(Int64(data=self.count))
        self.count += 1


def main(args=None) -> None:
    rclpy.init(args=args)
    node = TinyCounter()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
