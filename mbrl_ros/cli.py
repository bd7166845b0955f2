"""The ``mbrl-ros`` command: one subcommand per module listed in ``SUBCOMMANDS``.

A subcommand module provides ``DESCRIPTION: str``, ``add_arguments(parser)`` and
``run(args) -> int`` (the exit status). Modules are imported only when their subcommand runs,
so a heavy one (torch) does not slow down the others.
"""

import argparse
import importlib
import sys
from typing import List, Optional

#: subcommand name -> module implementing it.
SUBCOMMANDS = {
    'launch': 'mbrl_ros.launch_runner.cli',
    'train': 'mbrl_ros.training.offline',
    'evaluate': 'mbrl_ros.training.evaluate_command',
    'robot-config': 'mbrl_ros.robots.config_command',
}


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """Build the parser; with ``command`` given, load only that subcommand's options."""
    parser = argparse.ArgumentParser(prog='mbrl-ros', description='Model-based RL for ROS 2.')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, module_name in SUBCOMMANDS.items():
        if command is not None and name != command:
            subparsers.add_parser(name)
            continue
        module = importlib.import_module(module_name)
        subparser = subparsers.add_parser(name, help=module.DESCRIPTION,
                                          description=module.DESCRIPTION)
        module.add_arguments(subparser)
        subparser.set_defaults(run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``mbrl-ros``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    args = build_parser(command).parse_args(argv)
    return args.run(args)


if __name__ == '__main__':
    sys.exit(main())
