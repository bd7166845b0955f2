"""mbrl_ros: model-based reinforcement learning for ROS 2 robots."""

__version__ = "0.1.0"
