"""Runner for ROS 2 YAML launch files (launch_yaml syntax) without ``ros2 launch``.

``mbrl-ros launch <file> [name:=value ...]`` parses the same ``*.launch.yaml`` files that
``ros2 launch`` runs, resolves them into node command lines exactly as ``launch_ros`` builds
them, and supervises the node processes. See docs/launch_runner.md.
"""

from mbrl_ros.launch_runner.errors import LaunchError, LaunchFileError
from mbrl_ros.launch_runner.executor import NodeProcess, resolve_launch_file
from mbrl_ros.launch_runner.process_manager import ManagerConfig, ProcessManager

__all__ = [
    'LaunchError',
    'LaunchFileError',
    'NodeProcess',
    'ProcessManager',
    'ManagerConfig',
    'resolve_launch_file',
]
