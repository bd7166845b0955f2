"""Map a node's ROS parameters onto a frozen dataclass config, in one call.

Every field of the dataclass becomes a parameter ``<prefix><field>`` whose default is the field's
default (tuples as lists) and whose description is the field's docstring (the string literal
under it, as the configs in ``mbrl_ros.core`` write them). A field's ``metadata`` may carry
``range`` ``(low, high)``; changes at run time are validated by the config's ``validate()``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
from typing import Any, Dict, Type, TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from mbrl_ros.core.config_values import coerce_value

ConfigT = TypeVar("ConfigT")


def _ros_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


@functools.lru_cache(maxsize=None)
def field_docstrings(config_cls: type) -> Dict[str, str]:
    """``{field: docstring}`` read from the class source (attribute docstrings)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(config_cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    docs: Dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for statement, following in zip(body, body[1:]):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def _descriptor(field: dataclasses.Field, default: Any, doc: str) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=doc)
    bounds = field.metadata.get("range")
    if bounds is not None and isinstance(default, float):
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(bounds[0]), to_value=float(bounds[1]), step=0.0)]
    elif bounds is not None and isinstance(default, int) and not isinstance(default, bool):
        descriptor.integer_range = [IntegerRange(
            from_value=int(bounds[0]), to_value=int(bounds[1]), step=1)]
    # Floats accept integers too (``gain: 2`` in YAML), float lists a single number;
    # read_config() converts and checks them (core.config_values, as the offline reader does).
    if default is None or isinstance(default, float) or (
            isinstance(default, (list, tuple)) and default and isinstance(default[0], float)):
        descriptor.dynamic_typing = True
    return descriptor


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    raise ValueError(f"config field {field.name} has no default; it cannot be a ROS parameter")


def declare_config(node: Node, config_cls: Type[ConfigT], prefix: str = "",
                   overrides: Dict[str, Any] | None = None) -> ConfigT:
    """Declare one parameter per field of ``config_cls`` and build the validated config.

    Args:
        node: the node that owns the parameters.
        config_cls: a dataclass whose fields all have defaults.
        prefix: parameter name prefix, e.g. ``"planner."``.
        overrides: defaults that replace the dataclass defaults (e.g. derived from the URDF).
    """
    overrides = overrides or {}
    docs = field_docstrings(config_cls)
    for field in dataclasses.fields(config_cls):
        if not field.init:
            continue
        default = overrides[field.name] if field.name in overrides else _default(field)
        name = prefix + field.name
        if node.has_parameter(name):
            continue
        descriptor = _descriptor(field, default, docs.get(field.name, ""))
        if default is None:
            node.declare_parameter(name, Parameter.Type.NOT_SET, descriptor)
        elif isinstance(default, (list, tuple)) and not default:
            # unset (rclpy cannot type an empty list); read_config() uses the default. Float
            # lists stay dynamically typed, so integers and one number are accepted as above.
            kind = _empty_list_type(field)
            if kind == Parameter.Type.DOUBLE_ARRAY:
                descriptor.dynamic_typing = True
                node.declare_parameter(name, None, descriptor)
            else:
                node.declare_parameter(name, kind, descriptor)
        else:
            node.declare_parameter(name, _ros_value(default), descriptor)
    return read_config(node, config_cls, prefix, defaults=overrides)


def _empty_list_type(field: dataclasses.Field) -> Parameter.Type:
    annotation = str(field.type)
    if "str" in annotation:
        return Parameter.Type.STRING_ARRAY
    if "int" in annotation:
        return Parameter.Type.INTEGER_ARRAY
    return Parameter.Type.DOUBLE_ARRAY


def _current(node: Node, name: str) -> Any:
    try:
        return node.get_parameter(name).value
    except ParameterUninitializedException:
        return None


def read_config(node: Node, config_cls: Type[ConfigT], prefix: str = "",
                changes: Dict[str, Any] | None = None,
                defaults: Dict[str, Any] | None = None) -> ConfigT:
    """Build ``config_cls`` from the node's current parameters, with optional pending changes.

    Raises:
        ValueError: when the resulting config does not validate.
    """
    changes, defaults = changes or {}, defaults or {}
    values = {}
    for field in dataclasses.fields(config_cls):
        if not field.init:
            continue
        name = prefix + field.name
        default = defaults[field.name] if field.name in defaults else _default(field)
        value = changes[name] if name in changes else _current(node, name)
        values[field.name] = coerce_value(name, default if value is None else value, default,
                                          field.type)
    config = config_cls(**values)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config
