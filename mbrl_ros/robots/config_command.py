"""``mbrl-ros robot-config URDF``: write a complete parameters file for a robot's graph."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mbrl_ros.robots.config_generator import RobotConfigRequest, generate
from mbrl_ros.robots.defaults import DefaultsConfig

DESCRIPTION = ("Generate the graph's parameters file for a robot from its URDF: joints, "
               "limits, end effector or feet, servo gains and postures, with the reasons.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the subcommand."""
    defaults = DefaultsConfig()
    parser.add_argument("urdf", help="URDF file, package:// URI")
    parser.add_argument("--package-path", action="append", default=[], metavar="DIR",
                        help="directory searched for package:// URIs (repeatable; before "
                             "ROS_PACKAGE_PATH and the ament index)")
    parser.add_argument("--out", help="write the file here (default: standard output)")
    parser.add_argument("--ee-frame", default="",
                        help="end-effector frame of an arm (default: 'ee_link' if the URDF "
                             "has one, else the tip of the longest chain)")
    parser.add_argument("--foot-pattern", default="",
                        help="regex (full match, case-insensitive) of foot links")
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--floating-base", dest="floating_base", action="store_true",
                      default=None, help="force a floating base")
    base.add_argument("--fixed-base", dest="floating_base", action="store_false",
                      help="force a fixed base")
    parser.add_argument("--bandwidth-hz", type=float, default=defaults.bandwidth_hz,
                        help="closed-loop bandwidth of every joint servo")
    parser.add_argument("--damping-ratio", type=float, default=defaults.damping_ratio,
                        help="damping ratio of every joint servo")


def run(args: argparse.Namespace) -> int:
    """Generate, print the decisions to stderr, write the file; 0 on success, 2 on bad input."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    request = RobotConfigRequest(
        urdf=args.urdf, package_paths=tuple(args.package_path), ee_frame=args.ee_frame,
        foot_link_pattern=args.foot_pattern, floating_base=args.floating_base,
        defaults=DefaultsConfig(bandwidth_hz=args.bandwidth_hz,
                                damping_ratio=args.damping_ratio))
    try:
        generated = generate(request)
    except (ValueError, FileNotFoundError) as error:
        print(f"robot-config: {error}", file=sys.stderr)
        return 2
    for decision in generated.decisions:
        print(f"- {decision}", file=sys.stderr)
    text = generated.to_yaml()
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}: launch with urdf:={args.urdf} params_file:={args.out}",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
