"""ROS-free learning and planning core (numpy / torch only).

Nothing under this package may import rclpy or ROS message types; a test enforces it.
"""
