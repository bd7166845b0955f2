"""One conversion of parameter values to config field types, for every way configs are read.

The nodes read their configs from ROS parameters (``mbrl_ros.nodes.parameters``), the offline
tools from the same YAML file without ROS (``mbrl_ros.training.config_file``). Both convert
each value with :func:`coerce_value`, so one file gives one config either way.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Mapping, Optional


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _element_kind(default: tuple, annotation: Any) -> Optional[type]:
    """The element type of a list field: from its default's first element, or from the
    field's annotation (``Tuple[int, ...]``) when the default is empty; None: any."""
    if default:
        first = default[0]
        return next((kind for kind in (bool, float, int, str) if isinstance(first, kind)), None)
    text = str(annotation or "")
    return next((kind for kind in (str, int, float)
                 if re.search(rf"\b{kind.__name__}\b", text)), None)


_ELEMENT_CHECKS = {bool: (lambda v: isinstance(v, bool), "true/false values"),
                   float: (_is_number, "numbers"), int: (_is_integer, "integers"),
                   str: (lambda v: isinstance(v, str), "strings")}


def coerce_value(name: str, value: Any, default: Any, annotation: Any = None) -> Any:
    """``value`` of parameter ``name`` converted to the type of the field's ``default``.

    * bool default: ``true`` / ``false`` only;
    * float default: any number (``gain: 2`` is ``2.0``);
    * int default: an integer;
    * str default: a string;
    * tuple default: a list (returned as a tuple) whose elements have the type of the
      default's elements, or of the field's ``annotation`` (``Tuple[int, ...]``) when the
      default is empty; numbers for floats (converted). A single number stands for a
      one-element float list (``servo_kp: 100.0``, "one value for every joint"), as the nodes
      declare float lists with dynamic typing for this; other lists must be lists;
    * None default (or another type): the value as it is.

    Raises:
        ValueError: a value of another type.
    """
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"parameter {name} must be true or false, got {value!r}")
        return value
    if isinstance(default, float):
        if not _is_number(value):
            raise ValueError(f"parameter {name} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, int):
        if not _is_integer(value):
            raise ValueError(f"parameter {name} must be an integer, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"parameter {name} must be a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        kind = _element_kind(default, annotation)
        if kind is float and _is_number(value):
            value = (value,)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"parameter {name} must be a list, got {value!r}")
        value = tuple(value)
        if kind is None:
            return value
        check, description = _ELEMENT_CHECKS[kind]
        if not all(check(v) for v in value):
            raise ValueError(f"parameter {name} must be a list of {description}, "
                             f"got {list(value)!r}")
        return tuple(float(v) for v in value) if kind is float else value
    return value


class DictConfig:
    """``to_dict`` / ``from_dict`` for a config dataclass stored in checkpoint headers (tuples
    as JSON lists and back)."""

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly dict (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})
