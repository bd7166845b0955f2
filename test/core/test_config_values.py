"""coerce_value: the one conversion of parameter values (nodes and offline reader alike)."""

import pytest

from mbrl_ros.core.config_values import coerce_value


@pytest.mark.parametrize("value, default, annotation, expected", [
    (2, 1.0, None, 2.0),                                  # an integer for a float
    (True, False, None, True),
    (3, 1, None, 3),
    ("cuda", "cpu", None, "cuda"),
    (300, (100.0,), None, (300.0,)),                      # one number for a float list
    (2.5, (100.0, 5.0), None, (2.5,)),
    ([1, 2.5], (1.0,), None, (1.0, 2.5)),                 # numbers for floats
    ([64, 64], (200, 200), None, (64, 64)),
    (["a", "b"], ("x",), None, ("a", "b")),
    ([0, 3], (), "Tuple[int, ...]", (0, 3)),              # element type from the annotation
    (["bag"], (), "Tuple[str, ...]", ("bag",)),
    ([1, 2], (), "Tuple[float, ...]", (1.0, 2.0)),
    (250, (), "Tuple[float, ...]", (250.0,)),             # one number: a one-value list
    ([1, "a"], (), None, (1, "a")),                       # nothing to check against
    ({"any": 1}, None, None, {"any": 1}),                 # None default: as it is
])
def test_values_are_converted_to_the_default_type(value, default, annotation, expected):
    result = coerce_value("p", value, default, annotation)
    assert result == expected
    assert type(result) is type(expected)
    if isinstance(expected, tuple):
        assert [type(v) for v in result] == [type(v) for v in expected]


@pytest.mark.parametrize("value, default, annotation, message", [
    (1, False, None, "true or false"),
    ("1.0", 1.0, None, "a number"),
    (True, 1.0, None, "a number"),
    (2.0, 1, None, "an integer"),
    (True, 1, None, "an integer"),
    (5, "cpu", None, "a string"),
    (64, (200, 200), None, "a list"),                     # one value only for float lists
    ("x", ("a",), None, "a list"),
    (1.0, (), "Tuple[int, ...]", "a list"),               # int lists: no single number
    ("1.0", (1.0,), None, "a list"),
    ([1.0, 2.0], (200,), None, "a list of integers"),
    ([True], (1.0,), None, "a list of numbers"),
    ([1], ("a",), None, "a list of strings"),
    ([0.5], (), "Tuple[int, ...]", "a list of integers"),
    ({"a": 1}, (1.0,), None, "a list"),
])
def test_values_of_another_type_are_refused(value, default, annotation, message):
    with pytest.raises(ValueError, match=f"parameter p must be {message}"):
        coerce_value("p", value, default, annotation)
