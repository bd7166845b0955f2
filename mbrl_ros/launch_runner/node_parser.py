"""Parsing of the ``node`` entity, following launch_ros ``Node.parse``."""

import shlex
from typing import Any, Callable, Dict, List, Optional, Union

from mbrl_ros.launch_runner import model
from mbrl_ros.launch_runner.substitutions import Call, Parts, Text

#: ``type`` identifiers of an inline ``param`` (launch/frontend/type_utils.py).
PARAMETER_TYPES = ('str', 'bool', 'float', 'int', 'list_of_str', 'list_of_bool',
                   'list_of_float', 'list_of_int', 'yaml')


def split_command_line(parts: Parts) -> List[Parts]:
    """Split parsed ``args``/``ros_args`` text into arguments as launch ``_parse_cmdline``.

    Literal text is split with shell rules; a substitution glued to text (no space between)
    stays in the same argument.
    """
    result: List[Parts] = []
    current: List[Union[Text, Call]] = []

    def flush() -> None:
        nonlocal current
        result.append(tuple(current))
        current = []

    for part in parts:
        if not isinstance(part, Text):
            current.append(part)
            continue
        tokens = shlex.split(part.text)
        if not tokens:
            flush()
            continue
        if part.text[0].isspace() and current:
            flush()
        current.append(Text(tokens[0]))
        if len(tokens) > 1:
            flush()
            result.extend((Text(token),) for token in tokens[1:-1])
            current.append(Text(tokens[-1]))
        if part.text[-1].isspace():
            flush()
    if current:
        result.append(tuple(current))
    return [arg for arg in result if arg]


def _parameter_tree(entity: Any, items: List[Any]) -> model.ParameterTree:
    """Inline ``param`` items (``name`` with ``value`` or nested ``param``) as a tree."""
    tree: model.ParameterTree = {}
    for item in items:
        name = item.subst(item.get_attr('name'))
        value_type = item.get_attr('type', optional=True)
        if value_type is not None and value_type not in PARAMETER_TYPES:
            raise item.error(f"invalid parameter type {value_type!r} (one of {PARAMETER_TYPES})")
        value = item.get_attr('value', data_type='value', optional=True)
        nested = item.get_attr('param', data_type='entities', optional=True)
        item.assert_completely_parsed()
        if value is not None and nested:
            raise item.error("'value' and nested 'param' are mutually exclusive")
        if value_type is not None and nested:
            raise item.error("'type' and nested 'param' are mutually exclusive")
        if value is not None:
            tree[name] = model.ParameterValue(_parse_raw_value(item, value), value_type)
        elif nested:
            tree[name] = _parameter_tree(item, nested)
        else:
            raise item.error("a parameter needs a 'value' attribute or nested 'param' items")
    return tree


def _parse_raw_value(item: Any, value: Any) -> model.RawValue:
    """As launch's ``parse_if_substitutions``: a string with substitutions becomes its parts
    (evaluated, then typed by YAML rules), a plain string stays a string (``value: 'false'`` is
    the string "false", not a bool), other scalars stay as they are; lists item by item."""
    def parse(text: str):
        parts = item.subst(text)
        if all(isinstance(part, Text) for part in parts):
            return ''.join(part.text for part in parts)
        return parts
    if isinstance(value, str):
        return parse(value)
    if isinstance(value, list):
        return [parse(x) if isinstance(x, str) else x for x in value]
    return value


def _parameters(entity: Any) -> List[Union[model.ParameterFile, model.ParameterTree]]:
    items = entity.get_attr('param', data_type='entities', optional=True) or []
    parameters: List[Union[model.ParameterFile, model.ParameterTree]] = []
    for item in items:
        from_attr = item.get_attr('from', optional=True)
        name = item.get_attr('name', optional=True)
        if from_attr is not None and name is not None:
            raise item.error("'name' and 'from' are mutually exclusive")
        if from_attr is not None:
            item.assert_completely_parsed()
            parameters.append(model.ParameterFile(item.subst(from_attr)))
        elif name is not None:
            item._read.discard('name')  # read again by _parameter_tree
            parameters.append(_parameter_tree(entity, [item]))
        else:
            raise item.error("a 'param' item needs a 'name' or a 'from' attribute")
    return parameters


def parse_node_attributes(entity: Any, common: Dict[str, Any],
                          parse_float: Callable[[Any, str], Optional[float]]) -> model.Node:
    """Build a model.Node from a ``node`` entity (an ``parser.Entity``)."""
    def optional_parts(name: str) -> Optional[Parts]:
        value = entity.get_attr(name, optional=True)
        return None if value is None else entity.subst(value)

    args = entity.get_attr('args', optional=True)
    ros_args = entity.get_attr('ros_args', optional=True)
    on_exit = entity.get_attr('on_exit', optional=True)
    if on_exit is not None and on_exit != 'shutdown':
        raise entity.error(f"attribute 'on_exit' must be 'shutdown', got {on_exit!r}")
    max_retries = entity.get_attr('respawn_max_retries', data_type='int', optional=True)
    if isinstance(max_retries, str):  # launch passes it on and fails when the node exits
        raise entity.error("attribute 'respawn_max_retries' must be a YAML integer such as "
                           f"3, got the string {max_retries!r}")
    environment = []
    for item in entity.get_attr('env', data_type='entities', optional=True) or []:
        environment.append((item.subst(item.get_attr('name')),
                            item.subst(item.get_attr('value'))))
        item.assert_completely_parsed()
    remappings = []
    for item in entity.get_attr('remap', data_type='entities', optional=True) or []:
        remappings.append((item.subst(item.get_attr('from')), item.subst(item.get_attr('to'))))
        item.assert_completely_parsed()
    return model.Node(
        **common,
        package=optional_parts('pkg'),
        executable=entity.subst(entity.get_attr('exec')),
        name=optional_parts('name'),
        namespace=optional_parts('namespace'),
        exec_name=optional_parts('exec_name'),
        arguments=[] if args is None else split_command_line(entity.subst(args)),
        ros_arguments=None if ros_args is None else split_command_line(entity.subst(ros_args)),
        parameters=_parameters(entity),
        remappings=remappings,
        environment=environment,
        cwd=optional_parts('cwd'),
        output=optional_parts('output'),
        launch_prefix=optional_parts('launch-prefix'),
        on_exit_shutdown=on_exit == 'shutdown',
        respawn=optional_parts('respawn'),
        respawn_delay=parse_float(entity, 'respawn_delay'),
        respawn_max_retries=max_retries,
        sigterm_timeout=parse_float(entity, 'sigterm_timeout'),
        sigkill_timeout=parse_float(entity, 'sigkill_timeout'),
    )
