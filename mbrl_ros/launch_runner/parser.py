"""Read a YAML launch file (launch_yaml syntax) into the dataclasses of ``model``.

Attribute access mirrors ``launch_yaml.Entity``: values are type-checked but not coerced
(``default: 5`` is an error, as under ``ros2 launch``; write ``default: '5'``), and every key
of an entity must be consumed, so a misspelt or unsupported attribute is an error naming the
file and the entity, never silently ignored.
"""

from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import yaml

from mbrl_ros.launch_runner import model
from mbrl_ros.launch_runner.errors import LaunchFileError
from mbrl_ros.launch_runner.node_parser import parse_node_attributes
from mbrl_ros.launch_runner.substitutions import (
    Parts, SubstitutionSyntaxError, parse_substitution, replace_escaped_characters)

#: Attribute types understood by ``Entity.get_attr``.
SCALAR_TYPES = {'str': str, 'bool': bool, 'int': int, 'float': float}
#: Entities of ros2 launch / launch_ros that this runner does not implement.
KNOWN_UNSUPPORTED_ENTITIES = (
    'executable', 'timer', 'shutdown', 'reset', 'reset_env', 'append_env', 'set_parameter',
    'set_parameters_from_file', 'set_remap', 'set_use_sim_time', 'set_ros_log_dir',
    'node_container', 'load_composable_node', 'composable_node', 'ros_timer',
    'lifecycle_transition',
)
#: Attributes a ``lifecycle_node`` must have (launch_ros LifecycleNode's required arguments).
LIFECYCLE_NODE_REQUIRED = ('name', 'namespace')


class Entity:
    """One entity of the YAML tree; tracks which keys were read."""

    def __init__(self, element: Any, type_name: str, file_path: str) -> None:
        self.element = element
        self.type_name = type_name
        self.file_path = file_path
        self._read: Set[str] = set()
        self._children_read = False

    def error(self, message: str) -> LaunchFileError:
        label = f"'{self.type_name}'"
        if isinstance(self.element, dict) and isinstance(self.element.get('name'), str):
            label += f" (name: {self.element['name']})"
        return LaunchFileError(message, self.file_path, label)

    @property
    def children(self) -> List['Entity']:
        """Nested entities: the list itself, or the ``children`` key of a mapping."""
        self._children_read = True
        if isinstance(self.element, dict):
            if 'children' not in self.element:
                raise self.error("expected a 'children' list of entities")
            self._read.add('children')
            items = self.element['children']
        else:
            items = self.element
        if not isinstance(items, list):
            raise self.error('expected a list of entities')
        entities = []
        for item in items:
            if not isinstance(item, dict) or len(item) != 1:
                raise self.error('each nested entity must be a mapping with exactly one key, '
                                 f'the entity type; got {item!r}')
            ((type_name, element),) = item.items()
            entities.append(Entity(element, str(type_name), self.file_path))
        return entities

    def get_attr(self, name: str, data_type: str = 'str', optional: bool = False) -> Any:
        """Return attribute ``name`` checked against ``data_type``.

        ``data_type``: 'str', 'bool', 'int', 'float' (a string is also accepted, as it may
        hold substitutions), 'value' (scalar or uniform list), or 'entities' (list of
        mappings, returned as Entity objects).
        """
        if isinstance(self.element, list) and optional:
            return None  # a bare list of children has no attributes
        if not isinstance(self.element, dict):
            raise self.error(f'expected a mapping of attributes, got {self.element!r}')
        if name not in self.element:
            if optional:
                return None
            raise self.error(f"missing attribute '{name}'")
        self._read.add(name)
        data = self.element[name]
        if data_type == 'entities':
            if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
                return [Entity(item, name, self.file_path) for item in data]
            raise self.error(f"attribute '{name}' must be a list of mappings")
        if data_type == 'value':
            if _is_valid_value(data):
                return data
            raise self.error(f"attribute '{name}' must be a scalar or a list of one scalar "
                             f'type, got {data!r}')
        expected = SCALAR_TYPES[data_type]
        ok = isinstance(data, (str, expected)) and not (
            expected in (int, float) and isinstance(data, bool))
        if not ok:
            hint = " (quote it: launch_yaml does not convert types)" if data_type == 'str' else ''
            raise self.error(f"attribute '{name}' must be of type {data_type}, got "
                             f'{type(data).__name__} {data!r}{hint}')
        return data

    def subst(self, value: str) -> Parts:
        """Parse substitutions in an attribute value."""
        try:
            return parse_substitution(value)
        except SubstitutionSyntaxError as err:
            raise self.error(str(err)) from None

    def assert_completely_parsed(self) -> None:
        """Raise if a key was not consumed: it is unknown or not supported."""
        if isinstance(self.element, list):
            if not self._children_read:
                raise self.error('unexpected nested entities')
            return
        if not isinstance(self.element, dict):
            raise self.error(f'expected a mapping of attributes, got {self.element!r}')
        unread = sorted(set(self.element) - self._read)
        if unread:
            raise self.error(f'unknown or unsupported attribute(s) {unread} '
                             '(see docs/launch_runner.md for what mbrl-ros launch supports)')


def _is_valid_value(data: Any) -> bool:
    scalars = (bool, int, float, str)
    if isinstance(data, list):
        types = {type(x) for x in data if not isinstance(x, str)}
        return len(types) <= 1 and all(isinstance(x, scalars) for x in data)
    return isinstance(data, scalars)


def load_launch_file(file_path: str) -> model.LaunchDescription:
    """Read and parse a YAML launch file; raise LaunchFileError if it is invalid."""
    path = str(Path(file_path).resolve())
    try:
        with open(path, 'r', encoding='utf-8') as handle:
            tree = yaml.safe_load(handle)
    except OSError as err:
        raise LaunchFileError(f'cannot read launch file: {err}', path) from None
    except yaml.YAMLError as err:
        raise LaunchFileError(f'invalid YAML: {err}', path) from None
    if not isinstance(tree, dict) or len(tree) != 1 or 'launch' not in tree:
        raise LaunchFileError("expected a single root key 'launch'", path)
    root = Entity(tree['launch'], 'launch', path)
    if isinstance(root.element, dict):
        root.get_attr('deprecated', optional=True)
    actions = [parse_action(child) for child in root.children]
    root.assert_completely_parsed()
    return model.LaunchDescription(file_path=path, actions=actions)


def parse_action(entity: Entity) -> model.Action:
    """Parse one entity into its action; raise LaunchFileError if unknown or invalid."""
    parse = ACTION_PARSERS.get(entity.type_name)
    if parse is None:
        if entity.type_name in KNOWN_UNSUPPORTED_ENTITIES:
            raise entity.error('this entity is not supported by mbrl-ros launch '
                               f'(supported: {sorted(ACTION_PARSERS)})')
        raise entity.error(f'unknown entity type (supported: {sorted(ACTION_PARSERS)})')
    if not isinstance(entity.element, (dict, list)):
        raise entity.error(f'expected a mapping of attributes, got {entity.element!r}')
    action = parse(entity, _common(entity))
    entity.assert_completely_parsed()
    return action


def _common(entity: Entity) -> Dict[str, Any]:
    origin = model.Origin(entity.file_path, entity.type_name)
    if_expr = entity.get_attr('if', optional=True)
    unless_expr = entity.get_attr('unless', optional=True)
    if if_expr is not None and unless_expr is not None:
        raise entity.error("'if' and 'unless' cannot be used together")
    condition = None
    if if_expr is not None:
        condition = model.Condition(entity.subst(if_expr), expected=True)
    elif unless_expr is not None:
        condition = model.Condition(entity.subst(unless_expr), expected=False)
    return {'origin': origin, 'condition': condition}


def _name_value_pairs(entity: Entity, key: str) -> List[Tuple[Parts, Parts]]:
    items = entity.get_attr(key, data_type='entities', optional=True) or []
    pairs = [(item.subst(item.get_attr('name')), item.subst(item.get_attr('value')))
             for item in items]
    for item in items:
        item.assert_completely_parsed()
    return pairs


def _parse_arg(entity: Entity, common: Dict[str, Any]) -> model.Action:
    default = entity.get_attr('default', optional=True)
    description = entity.get_attr('description', optional=True)
    choices = entity.get_attr('choice', data_type='entities', optional=True)
    choice_values = None
    if choices is not None:
        choice_values = [replace_escaped_characters(c.get_attr('value')) for c in choices]
        for choice in choices:
            choice.assert_completely_parsed()
    return model.DeclareArgument(
        **common, name=replace_escaped_characters(entity.get_attr('name')),
        default=None if default is None else entity.subst(default),
        description='' if description is None else replace_escaped_characters(description),
        choices=choice_values)


def _parse_let(entity: Entity, common: Dict[str, Any]) -> model.Action:
    return model.SetLaunchConfiguration(**common, name=entity.subst(entity.get_attr('name')),
                                        value=entity.subst(entity.get_attr('value')))


def _parse_set_env(entity: Entity, common: Dict[str, Any]) -> model.Action:
    return model.SetEnvironmentVariable(**common, name=entity.subst(entity.get_attr('name')),
                                        value=entity.subst(entity.get_attr('value')))


def _parse_unset_env(entity: Entity, common: Dict[str, Any]) -> model.Action:
    return model.UnsetEnvironmentVariable(**common,
                                          name=entity.subst(entity.get_attr('name')))


def _parse_log(entity: Entity, common: Dict[str, Any]) -> model.Action:
    return model.LogInfo(**common, message=entity.subst(entity.get_attr('message')))


def _parse_push_ros_namespace(entity: Entity, common: Dict[str, Any]) -> model.Action:
    return model.PushRosNamespace(**common,
                                  namespace=entity.subst(entity.get_attr('namespace')))


def _parse_bool_attr(entity: Entity, name: str, default: bool) -> bool:
    value = entity.get_attr(name, data_type='bool', optional=True)
    if value is None:
        return default
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in ('true', 'false'):
            raise entity.error(f"attribute '{name}' must be true or false, got {value!r}")
        return lowered == 'true'
    return value


def _parse_group(entity: Entity, common: Dict[str, Any]) -> model.Action:
    scoped = _parse_bool_attr(entity, 'scoped', True)
    forwarding = _parse_bool_attr(entity, 'forwarding', True)
    keeps = _name_value_pairs(entity, 'keep')
    actions = [parse_action(child) for child in entity.children]
    return model.Group(**common, scoped=scoped, forwarding=forwarding, keeps=keeps,
                       actions=actions)


def _parse_include(entity: Entity, common: Dict[str, Any]) -> model.Action:
    return model.Include(**common, file=entity.subst(entity.get_attr('file')),
                         arguments=_name_value_pairs(entity, 'arg'))


def _parse_float(entity: Entity, name: str) -> Optional[float]:
    """A non-negative float attribute (``respawn_delay``, ``sig*_timeout``): a YAML float, as
    launch's ExecuteProcess.parse needs (it fails on a string or an integer there)."""
    value = entity.get_attr(name, data_type='float', optional=True)
    if value is None:
        return None
    if isinstance(value, str):
        raise entity.error(f"attribute '{name}' must be a YAML float such as 1.0, got the "
                           f"string {value!r} (ros2 launch fails on a string here)")
    number = float(value)
    if number < 0.0:
        raise entity.error(f"attribute '{name}' must be non-negative, got {number}")
    return number


def _parse_node(entity: Entity, common: Dict[str, Any]) -> model.Action:
    return parse_node_attributes(entity, common, _parse_float)


def _parse_lifecycle_node(entity: Entity, common: Dict[str, Any]) -> model.Action:
    """A ``node`` that starts unconfigured, as launch_ros ``LifecycleNode.parse``: every node
    attribute, ``name`` and ``namespace`` required (``namespace: ''`` for the pushed or root
    namespace), and ``autostart`` (a bool, or a string that may hold substitutions)."""
    missing = [name for name in LIFECYCLE_NODE_REQUIRED
               if not isinstance(entity.element, dict) or name not in entity.element]
    if missing:
        raise entity.error(f"a lifecycle_node needs {' and '.join(map(repr, missing))} "
                           "(ros2 launch fails without them; namespace may be '')")
    autostart = entity.get_attr('autostart', data_type='bool', optional=True)
    if isinstance(autostart, str):
        autostart = entity.subst(autostart)
    return replace(parse_node_attributes(entity, common, _parse_float), lifecycle=True,
                   autostart=autostart)


ACTION_PARSERS = {
    'arg': _parse_arg,
    'let': _parse_let,
    'set_env': _parse_set_env,
    'unset_env': _parse_unset_env,
    'log': _parse_log,
    'push_ros_namespace': _parse_push_ros_namespace,
    'push-ros-namespace': _parse_push_ros_namespace,
    'group': _parse_group,
    'include': _parse_include,
    'node': _parse_node,
    'lifecycle_node': _parse_lifecycle_node,
}
