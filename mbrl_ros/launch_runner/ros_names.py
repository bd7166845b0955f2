"""ROS names, namespaces and parameter values, as launch_ros builds and checks them."""

import re
from typing import Any, Dict, List, Optional, Union

import yaml

from mbrl_ros.launch_runner import model
from mbrl_ros.launch_runner.errors import LaunchError
from mbrl_ros.launch_runner.substitutions import EvaluationContext, perform

NODE_NAME_PATTERN = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
NAMESPACE_TOKEN_PATTERN = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
MAX_NAME_LENGTH = 255
SCALAR_TYPES = (bool, int, float, str)
TYPE_BY_IDENTIFIER = {'str': str, 'bool': bool, 'float': float, 'int': int}

EvaluatedValue = Union[bool, int, float, str, List[Any]]


def prefix_namespace(base: Optional[str], namespace: Optional[str]) -> Optional[str]:
    """Prefix a relative ``namespace`` with ``base`` (launch_ros ``prefix_namespace``)."""
    if base is None:
        combined = namespace
    elif namespace is None:
        combined = base
    elif namespace.startswith('/'):
        combined = namespace
    else:
        combined = ('' if base == '/' else base) + '/' + namespace
    if combined is not None and combined != '/':
        combined = combined.rstrip('/')
    return combined


def make_namespace_absolute(namespace: Optional[str]) -> Optional[str]:
    """Prepend '/' to a relative namespace."""
    if namespace is None or namespace.startswith('/'):
        return namespace
    return '/' + namespace


def validate_node_name(name: str) -> None:
    """Raise LaunchError if ``name`` is not a valid ROS node name."""
    if not NODE_NAME_PATTERN.match(name) or len(name) > MAX_NAME_LENGTH:
        raise LaunchError(f"invalid node name {name!r}: use letters, digits and '_', "
                          'not starting with a digit')


def validate_namespace(namespace: str) -> None:
    """Raise LaunchError if ``namespace`` (absolute) is not a valid ROS namespace."""
    if namespace == '/':
        return
    tokens = namespace.split('/')
    if tokens[0] != '' or not all(NAMESPACE_TOKEN_PATTERN.match(t) for t in tokens[1:]):
        raise LaunchError(f"invalid namespace {namespace!r}: tokens of letters, digits and "
                          "'_' separated by '/', none starting with a digit, no trailing '/'")


def _yaml_value(text: str, what: str) -> Any:
    if not text:
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise LaunchError(f'{what}: cannot read {text!r} as YAML: {err}') from None


def _check_uniform(values: List[Any], what: str) -> List[Any]:
    if not values or type(values[0]) not in SCALAR_TYPES \
            or any(type(v) is not type(values[0]) for v in values):
        raise LaunchError(f'{what}: a list parameter needs a non-empty list of one type '
                          f'(bool, int, float or str), got {values!r}')
    return values


def coerce_text(text: str, value_type: Optional[str], what: str) -> EvaluatedValue:
    """Convert substituted text to a parameter value (launch ``coerce_to_type``)."""
    if value_type is None or value_type == 'yaml':
        value = _yaml_value(text, what)
        if isinstance(value, list):
            return _check_uniform(value, what)
        if not isinstance(value, SCALAR_TYPES):
            raise LaunchError(f'{what}: {text!r} is not a scalar or a list, as YAML')
        return value
    if value_type.startswith('list_of_'):
        item_type = TYPE_BY_IDENTIFIER[value_type[len('list_of_'):]]
        value = _yaml_value(text, what)
        if not isinstance(value, list) or not all(_is_type(v, item_type) for v in value):
            raise LaunchError(f'{what}: cannot convert {text!r} to {value_type}')
        return [float(v) if item_type is float else v for v in value]
    target = TYPE_BY_IDENTIFIER[value_type]
    if target is str:
        return text
    if target in (int, float):
        try:
            return target(text)
        except ValueError:
            raise LaunchError(f'{what}: cannot convert {text!r} to {value_type}') from None
    lowered = {'1': 'true', '0': 'false'}.get(text, text)
    value = _yaml_value(lowered, what)
    if not isinstance(value, bool):
        raise LaunchError(f'{what}: cannot convert {text!r} to bool')
    return value


def _is_type(value: Any, target: type) -> bool:
    if target is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if target is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, target)


def evaluate_parameter(value: model.ParameterValue, context: EvaluationContext,
                       what: str) -> EvaluatedValue:
    """Evaluate one inline parameter value (substitute, then coerce)."""
    raw = value.value
    if isinstance(raw, tuple):
        return coerce_text(perform(raw, context), value.value_type, what)
    if isinstance(raw, list):
        item_type = _item_type(value.value_type)
        items = [coerce_text(perform(x, context), item_type, what) if isinstance(x, tuple)
                 else _literal(x, item_type, what) for x in raw]
        return _check_uniform(items, what)
    if isinstance(raw, str):
        return _literal(raw, value.value_type, what)
    if value.value_type is not None and value.value_type != 'yaml' and not _is_type(
            raw, TYPE_BY_IDENTIFIER.get(value.value_type, object)):
        raise LaunchError(f'{what}: value {raw!r} is not of type {value.value_type}')
    return float(raw) if value.value_type == 'float' else raw


def _literal(value: Any, value_type: Optional[str], what: str) -> EvaluatedValue:
    """A value written without substitutions: a plain string stays a string unless a ``type``
    asks for another (as launch_ros reads it); other scalars as they are."""
    if isinstance(value, str) and value_type not in (None, 'str'):
        return coerce_text(value, value_type, what)
    return value


def _item_type(value_type: Optional[str]) -> Optional[str]:
    if value_type is None or value_type == 'yaml':
        return None
    if not value_type.startswith('list_of_'):
        raise LaunchError(f'a list value cannot have the scalar type {value_type!r}')
    return value_type[len('list_of_'):]


def evaluate_parameter_tree(tree: model.ParameterTree, context: EvaluationContext,
                            prefix: str = '') -> Dict[str, EvaluatedValue]:
    """Flatten inline parameters to ``{'dotted.name': value}`` (launch_ros normalisation)."""
    flat: Dict[str, EvaluatedValue] = {}
    for name_parts, value in tree.items():
        name = prefix + perform(name_parts, context)
        if isinstance(value, model.ParameterValue):
            flat[name] = evaluate_parameter(value, context, f"parameter '{name}'")
        else:
            flat.update(evaluate_parameter_tree(value, context, prefix=name + '.'))
    return flat
