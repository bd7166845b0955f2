"""Substitutions ``$(name arg ...)``: the launch frontend grammar, and their evaluation.

The parser follows ``launch/frontend/grammar.lark`` of ros2/launch: arguments are separated
by exactly one space, may be single- or double-quoted templates, may nest substitutions, and a
backslash escapes the next character (``\\$(`` is a literal ``$(``).
"""

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Protocol, Tuple, Union

import yaml

from mbrl_ros.launch_runner import packages
from mbrl_ros.launch_runner.errors import LaunchError

QUOTES = ('"', "'")
TRUE_STRINGS = ('true', '1')
FALSE_STRINGS = ('false', '0')


class SubstitutionSyntaxError(ValueError):
    """A string is not valid substitution syntax, or names an unsupported substitution."""


@dataclass(frozen=True)
class Text:
    """Literal text."""

    text: str


@dataclass(frozen=True)
class Call:
    """A substitution ``$(name args...)``; each argument is itself a list of parts."""

    name: str
    args: Tuple[Tuple[Union[Text, 'Call'], ...], ...]


Part = Union[Text, Call]
Parts = Tuple[Part, ...]


class EvaluationContext(Protocol):
    """What evaluating a substitution reads."""

    configurations: Mapping[str, str]
    environment: Mapping[str, str]
    file_path: str


def replace_escaped_characters(text: str) -> str:
    """Drop each backslash and keep the character it escapes, like launch does."""
    out, index = [], 0
    while index < len(text):
        if text[index] == '\\' and index + 1 < len(text):
            out.append(text[index + 1])
            index += 2
        else:
            out.append(text[index])
            index += 1
    return ''.join(out)


class _Parser:
    """Recursive-descent parser of one string; ``parse()`` returns its parts."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.pos = 0

    def error(self, message: str) -> SubstitutionSyntaxError:
        return SubstitutionSyntaxError(
            f'{message} at column {self.pos + 1} of substitution string {self.source!r}')

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.source[index] if index < len(self.source) else ''

    def escaped(self) -> bool:
        return self.pos > 0 and self.source[self.pos - 1] == '\\'

    def at_substitution(self) -> bool:
        return self.peek() == '$' and self.peek(1) == '(' and not self.escaped()

    def parse(self) -> Parts:
        parts = self.template(quote=None)
        if self.pos != len(self.source):
            raise self.error('unexpected character')
        return tuple(parts)

    def template(self, quote: Optional[str]) -> List[Part]:
        """Fragments up to the end (``quote`` None) or to the closing quote."""
        parts: List[Part] = []
        start = self.pos
        while self.pos < len(self.source):
            if quote is not None and self.peek() == quote and not self.escaped():
                break
            if self.at_substitution():
                if self.pos > start:
                    parts.append(Text(replace_escaped_characters(self.source[start:self.pos])))
                parts.append(self.substitution(quote))
                start = self.pos
            else:
                self.pos += 1
        if self.pos > start:
            parts.append(Text(replace_escaped_characters(self.source[start:self.pos])))
        return parts

    def substitution(self, quote: Optional[str]) -> Call:
        self.pos += 2  # '$('
        start = self.pos
        if not self.peek().isalpha():
            raise self.error('expected a substitution name')
        while self.peek() and (self.peek().isalnum() or self.peek() in '_-'):
            self.pos += 1
        name = self.source[start:self.pos]
        args: List[Parts] = []
        if self.peek() == ' ':
            while self.peek() == ' ':
                self.pos += 1
                args.append(tuple(self.value(quote)))
        if self.peek() != ')':
            raise self.error(f"expected ')' or a single space in $({name} ...)")
        self.pos += 1
        return make_call(name, tuple(args))

    def value(self, quote: Optional[str]) -> List[Part]:
        """One substitution argument."""
        if quote is None and self.peek() in QUOTES:
            opening = self.peek()
            self.pos += 1
            parts = self.template(quote=opening)
            if self.peek() != opening:
                raise self.error(f'unterminated {opening}-quoted argument')
            self.pos += 1
            return parts
        forbidden_quotes = QUOTES if quote is None else (quote,)
        parts: List[Part] = []
        start = self.pos
        while self.pos < len(self.source):
            char = self.peek()
            if self.at_substitution():
                if self.pos > start:
                    parts.append(Text(replace_escaped_characters(self.source[start:self.pos])))
                parts.append(self.substitution(quote))
                start = self.pos
                continue
            if char == ' ' or (char in '()' and not self.escaped()) \
                    or (char in forbidden_quotes and not self.escaped()):
                break
            self.pos += 1
        if self.pos > start:
            parts.append(Text(replace_escaped_characters(self.source[start:self.pos])))
        if not parts:
            raise self.error('empty substitution argument')
        return parts


def parse_substitution(value: str) -> Parts:
    """Parse a string with embedded ``$(...)`` into parts; raise SubstitutionSyntaxError."""
    if not value:
        return (Text(''),)
    return _Parser(value).parse()


def has_substitution(parts: Parts) -> bool:
    """Whether ``parts`` contain any substitution call."""
    return any(isinstance(part, Call) for part in parts)


# --- evaluation --------------------------------------------------------------------------

def perform(parts: Parts, context: EvaluationContext) -> str:
    """Evaluate ``parts`` to a string; raise LaunchError when a substitution fails."""
    return ''.join(part.text if isinstance(part, Text) else _perform_call(part, context)
                   for part in parts)


def to_bool(text: str, what: str) -> bool:
    """Interpret a condition string as launch does ('true'/'1'/'false'/'0', any case)."""
    lowered = text.strip().lower()
    if lowered in TRUE_STRINGS:
        return True
    if lowered in FALSE_STRINGS:
        return False
    raise LaunchError(f"{what}: expected one of {TRUE_STRINGS + FALSE_STRINGS}, got {text!r}")


def to_typed_bool(text: str, what: str) -> bool:
    """Interpret a substitution's result as a bool attribute (``respawn``) as launch's
    ``perform_typed_substitution(..., bool)`` does: '1'/'0', else YAML rules ('true', 'True',
    'TRUE', 'yes', 'on', ... and their negations); anything else is an error."""
    value = {'1': 'true', '0': 'false'}.get(text, text)
    try:
        parsed = yaml.safe_load(value) if value else None
    except yaml.YAMLError:
        parsed = None
    if not isinstance(parsed, bool):
        raise LaunchError(f"{what}: cannot convert {text!r} to a bool "
                          "(launch accepts 'true', 'false', '1', '0', 'yes', 'no', ...)")
    return parsed


def _var(args: List[Parts], context: EvaluationContext) -> str:
    name = perform(args[0], context)
    if name in context.configurations:
        return context.configurations[name]
    if len(args) == 2:
        return perform(args[1], context)
    raise LaunchError(f"launch configuration '{name}' does not exist")


def _env(args: List[Parts], context: EvaluationContext) -> str:
    name = perform(args[0], context)
    if name in context.environment:
        return context.environment[name]
    if len(args) == 2:
        return perform(args[1], context)
    raise LaunchError(f"environment variable '{name}' does not exist")


def _bools(args: List[Parts], context: EvaluationContext, name: str) -> List[bool]:
    return [to_bool(perform(arg, context), f'$({name})') for arg in args]


def _file_path(context: EvaluationContext) -> str:
    return context.file_path


#: name -> (minimum argument count, maximum argument count, evaluation function)
SUPPORTED: Dict[str, Tuple[int, int, Callable[[List[Parts], EvaluationContext], str]]] = {
    'var': (1, 2, _var),
    'env': (1, 2, _env),
    'find-pkg-share': (1, 1, lambda a, c: packages.package_share(perform(a[0], c))),
    'find-pkg-prefix': (1, 1, lambda a, c: packages.package_prefix(perform(a[0], c))),
    'dirname': (0, 0, lambda a, c: os.path.dirname(_file_path(c))),
    'filename': (0, 0, lambda a, c: _file_path(c)),
    'not': (1, 1, lambda a, c: str(not _bools(a, c, 'not')[0]).lower()),
    'and': (2, 2, lambda a, c: str(all(_bools(a, c, 'and'))).lower()),
    'or': (2, 2, lambda a, c: str(any(_bools(a, c, 'or'))).lower()),
}

#: Substitutions of ros2 launch that this runner does not implement.
KNOWN_UNSUPPORTED = (
    'eval', 'command', 'find-exec', 'exec-in-pkg', 'anon', 'if', 'any', 'all', 'equals',
    'not-equals', 'file-content', 'launch_log_dir', 'log_dir', 'param',
)


def make_call(name: str, args: Tuple[Parts, ...]) -> Call:
    """Check a substitution name and argument count, as launch does when parsing."""
    if name not in SUPPORTED:
        if name in KNOWN_UNSUPPORTED:
            raise SubstitutionSyntaxError(
                f"substitution '$({name})' is not supported by mbrl-ros launch "
                f"(supported: {sorted(SUPPORTED)})")
        raise SubstitutionSyntaxError(f"unknown substitution '$({name})'")
    low, high, _ = SUPPORTED[name]
    if not low <= len(args) <= high:
        expected = str(low) if low == high else f'{low} or {high}'
        raise SubstitutionSyntaxError(
            f"substitution '$({name})' expects {expected} argument(s), got {len(args)}")
    return Call(name, args)


def _perform_call(call: Call, context: EvaluationContext) -> str:
    return SUPPORTED[call.name][2](list(call.args), context)
