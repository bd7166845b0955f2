"""The learning and planning core must be usable without ROS: no rclpy, no message types."""

import ast
import pathlib
import subprocess
import sys

CORE = pathlib.Path(__file__).resolve().parents[1] / "mbrl_ros" / "core"
FORBIDDEN_PREFIXES = ("rclpy", "rosidl", "mbrl_ros.msg", "mbrl_ros.nodes")
FORBIDDEN_SUFFIXES = ("_msgs", "_srvs", "_interfaces")


def _imported_modules(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _is_forbidden(module: str) -> bool:
    top = module.split(".")[0]
    return module.startswith(FORBIDDEN_PREFIXES) or top.endswith(FORBIDDEN_SUFFIXES)


def test_core_sources_import_no_ros():
    offenders = [f"{path.relative_to(CORE.parent)}:{line}: {module}"
                 for path in sorted(CORE.rglob("*.py"))
                 for line, module in _imported_modules(path) if _is_forbidden(module)]
    assert not offenders, "core imports ROS:\n" + "\n".join(offenders)


def test_importing_every_core_module_loads_no_rclpy():
    modules = sorted("mbrl_ros." + ".".join(p.relative_to(CORE.parent).with_suffix("").parts)
                     .replace(".__init__", "") for p in CORE.rglob("*.py"))
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules\n"
            "             if m.split('.')[0] == 'rclpy' or m.endswith('_msgs'))\n"
            "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"core pulled in ROS modules:\n{result.stdout}{result.stderr}"


def test_forbidden_import_detector_catches_rclpy(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("import numpy\nfrom rclpy.node import Node\nimport sensor_msgs.msg\n")
    found = [m for _, m in _imported_modules(sample) if _is_forbidden(m)]
    assert found == ["rclpy.node", "sensor_msgs.msg"]
