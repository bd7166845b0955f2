"""mbrl_ros: model-based reinforcement learning for ROS 2 robots."""

# The generated messages (mbrl_ros.msg) live in the colcon install tree; when the sources are
# used in place (development, tests), let this package span both folders.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"
