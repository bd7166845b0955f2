"""rclpy's ``Logger.warn`` is an alias that calls ``warning`` itself, so rclpy files every
``warn`` call under one call site (inside the alias); two of them with different throttling
then raise "Requested logging filters cannot be changed between calls" and kill the node. The
package's nodes call ``warning``."""

import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "mbrl_ros"


def test_no_node_logs_through_the_warn_alias():
    calls = [f"{path.relative_to(PACKAGE)}:{number}"
             for path in sorted(PACKAGE.rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"logger\(\)\.warn\(|\blogger\.warn\(", line)]
    assert not calls, f"use .warning( instead of .warn( at {calls}"
