"""Substitution grammar and evaluation (no ROS needed)."""

import os
from types import SimpleNamespace

import pytest

from mbrl_ros.launch_runner.errors import LaunchError
from mbrl_ros.launch_runner.node_parser import split_command_line
from mbrl_ros.launch_runner.substitutions import (
    Call, SubstitutionSyntaxError, Text, parse_substitution, perform)


def context(**configurations):
    return SimpleNamespace(configurations=configurations,
                           environment={'HOME_DIR': '/home/robot'},
                           file_path='/pkg/launch/main.launch.yaml')


def test_plain_text_and_var():
    assert parse_substitution('abc') == (Text('abc'),)
    assert parse_substitution('') == (Text(''),)
    assert parse_substitution('a$(var x)b') == (
        Text('a'), Call('var', ((Text('x'),),)), Text('b'))


def test_nested_quoted_and_escaped_arguments():
    parts = parse_substitution("$(var $(var key) 'a b')")
    assert perform(parts, context(key='name', name='value')) == 'value'
    assert perform(parts, context(key='other')) == 'a b'
    assert perform(parse_substitution(r'\$(var x)'), context()) == '$(var x)'
    assert perform(parse_substitution('cost $5'), context()) == 'cost $5'


def test_env_dirname_and_booleans():
    assert perform(parse_substitution('$(env HOME_DIR)/x'), context()) == '/home/robot/x'
    assert perform(parse_substitution('$(env NOPE fallback)'), context()) == 'fallback'
    assert perform(parse_substitution('$(dirname)'), context()) == '/pkg/launch'
    assert perform(parse_substitution('$(not $(var flag))'), context(flag='0')) == 'true'
    assert perform(parse_substitution('$(and true $(var f))'), context(f='false')) == 'false'


def test_missing_values_are_clear_errors():
    with pytest.raises(LaunchError, match="launch configuration 'x' does not exist"):
        perform(parse_substitution('$(var x)'), context())
    with pytest.raises(LaunchError, match="environment variable 'NOPE' does not exist"):
        perform(parse_substitution('$(env NOPE)'), context())


@pytest.mark.parametrize('text, message', [
    ('$(eval 1+1)', r"'\$\(eval\)' is not supported"),
    ('$(bogus x)', r"unknown substitution '\$\(bogus\)'"),
    ('$(var)', r"expects 1 or 2 argument"),
    ('$(dirname x)', r"expects 0 argument"),
    ('$(var x', r"expected '\)'"),
    ('$(var  x)', 'empty substitution argument'),
])
def test_syntax_errors(text, message):
    with pytest.raises(SubstitutionSyntaxError, match=message):
        parse_substitution(text)


def test_find_pkg_share_falls_back_to_source_tree_for_this_package(monkeypatch):
    monkeypatch.setenv('AMENT_PREFIX_PATH', '')
    root = perform(parse_substitution('$(find-pkg-share mbrl_ros)'), context())
    assert os.path.isdir(os.path.join(root, 'launch'))
    with pytest.raises(LaunchError, match="package 'no_such_pkg' not found"):
        perform(parse_substitution('$(find-pkg-share no_such_pkg)'), context())


def test_command_line_split_like_launch():
    args = split_command_line(parse_substitution('--mode fast $(var dir)/cfg.yaml "a b"'))
    assert [perform(a, context(dir='/d')) for a in args] == [
        '--mode', 'fast', '/d/cfg.yaml', 'a b']
