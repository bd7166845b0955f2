#!/usr/bin/env python3
"""Test-only node: declares 'greeting' and 'rate_hz', publishes the greeting on 'chatter'."""

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from std_msgs.msg import String


class TinyTalker(Node):
    """Publishes ``greeting`` on ``chatter`` at ``rate_hz``."""

    def __init__(self) -> None:
        super().__init__('tiny_talker')
        self.declare_parameter('greeting', 'hello')
        self.declare_parameter('rate_hz', 10.0)
        self.publisher = self.create_publisher(String, 'chatter', 10)
        period_s = 1.0 / self.get_parameter('rate_hz').value
        self.create_timer(period_s, self.publish)

    def publish(self) -> None:
        self.publisher.publish(String(data=self.get_parameter('greeting').value))


def main(args=None) -> None:
    rclpy.init(args=args)
    node = TinyTalker()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
