"""``mbrl-ros launch``: run a YAML launch file like ``ros2 launch`` does.

Usage: ``mbrl-ros launch <file> [name:=value ...]`` or
``mbrl-ros launch <package> <file name> [name:=value ...]``.
"""

import argparse
import datetime
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

from mbrl_ros.launch_runner import packages
from mbrl_ros.launch_runner.errors import LaunchError
from mbrl_ros.launch_runner.executor import resolve_launch_file
from mbrl_ros.launch_runner.process_manager import ManagerConfig, ProcessManager

logger = logging.getLogger('launch')

DESCRIPTION = 'Run a YAML launch file (same syntax as ros2 launch) and supervise its nodes.'
ARGUMENT_SEPARATOR = ':='


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of the ``launch`` subcommand to ``parser``."""
    parser.add_argument(
        'target', nargs='+', metavar='ARG',
        help="'<launch file> [name:=value ...]' or '<package> <launch file name> "
             "[name:=value ...]'")
    parser.add_argument('--log-dir', default=None,
                        help='folder for node logs (default: ROS_LOG_DIR, or '
                             'ROS_HOME/log, or ~/.ros/log, plus a per-run sub-folder)')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the resolved node command lines and exit')
    parser.add_argument('--debug', action='store_true', help='log debug messages')


def split_target(target: List[str]) -> Tuple[str, Dict[str, str]]:
    """Return (launch file path, launch arguments) from the positional arguments.

    As in ``ros2 launch``: an existing file first means file mode, else package mode.
    Raises LaunchError on a malformed ``name:=value`` or an unknown package/file.
    """
    first, rest = target[0], target[1:]
    if os.path.isfile(first) or ARGUMENT_SEPARATOR in (rest[0] if rest else ARGUMENT_SEPARATOR):
        if not os.path.isfile(first):
            raise LaunchError(f"launch file '{first}' does not exist")
        path, raw_arguments = first, rest
    else:
        path, raw_arguments = packages.find_file_in_package(first, rest[0]), rest[1:]
    arguments: Dict[str, str] = {}
    for raw in raw_arguments:
        name, separator, value = raw.partition(ARGUMENT_SEPARATOR)
        if not separator or not name:
            raise LaunchError(f"malformed launch argument {raw!r}, expected 'name:=value'")
        arguments[name] = value
    return path, arguments


def default_log_dir() -> str:
    """Per-run log folder, laid out like ros2 launch's."""
    base = os.environ.get('ROS_LOG_DIR')
    if not base:
        ros_home = os.environ.get('ROS_HOME', str(Path.home() / '.ros'))
        base = str(Path(ros_home) / 'log')
    stamp = datetime.datetime.now().strftime('%Y-%m-%d-%H-%M-%S-%f')
    return str(Path(base) / f'{stamp}-{socket.gethostname()}-{os.getpid()}')


def run(args: argparse.Namespace) -> int:
    """Run the ``launch`` subcommand; return the process exit status."""
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format='[%(levelname)s] [%(name)s]: %(message)s', stream=sys.stderr)
    params_dir = tempfile.mkdtemp(prefix='mbrl_launch_params_')
    try:
        try:
            path, arguments = split_target(args.target)
            processes = resolve_launch_file(path, arguments, params_dir)
        except LaunchError as err:
            logger.error('%s', err)
            return 1
        if args.dry_run:
            for process in processes:
                print(f'[{process.label}] {" ".join(process.command)}')
            return 0
        log_dir = args.log_dir or default_log_dir()
        manager = ProcessManager(processes, ManagerConfig(log_dir=log_dir))
        logger.info('log files of nodes go to %s', log_dir)
        interrupts = []

        def on_signal(signum: int, frame: object) -> None:
            name = signal.Signals(signum).name
            if interrupts:
                logger.warning('%s again, already shutting down', name)
            interrupts.append(signum)
            manager.request_shutdown(f'user interrupted with {name}')

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return manager.run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    finally:
        shutil.rmtree(params_dir, ignore_errors=True)
