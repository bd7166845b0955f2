"""Thin rclpy nodes wrapping :mod:`mbrl_ros.core`."""
