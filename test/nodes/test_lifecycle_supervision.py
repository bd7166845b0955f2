"""The lifecycle manager's decisions (ROS-free): bring-up, respawn, retries, timeouts."""

import pytest

from mbrl_ros.nodes.lifecycle_supervision import (ACTIVATE, ACTIVE, CONFIGURE, GET_STATE,
                                                  INACTIVE, UNCONFIGURED,
                                                  LifecycleManagerConfig, ManagedNode)

CONFIG = LifecycleManagerConfig(managed_nodes=("planner",), check_period_s=0.5,
                                state_timeout_s=2.0, transition_timeout_s=30.0,
                                retry_delay_s=3.0)


def ask(node, now, expected_kind):
    request = node.next_request(now)
    assert request is not None and request.kind == expected_kind, request
    return request


def bring_up(node, now):
    """Answer a state request with 'unconfigured', then configure and activate successfully."""
    request = ask(node, now, GET_STATE)
    assert "configuring and activating" in node.answered(request.number, now, UNCONFIGURED)
    request = ask(node, now, CONFIGURE)
    node.answered(request.number, now, success=True)
    assert node.state == INACTIVE
    request = ask(node, now, ACTIVATE)
    return node.answered(request.number, now, success=True)


def test_an_unconfigured_node_is_configured_then_activated_and_then_only_watched():
    node = ManagedNode("planner", CONFIG)
    assert bring_up(node, 0.0) == "planner: active"
    assert node.state == ACTIVE and not node.bringing_up and node.activations == 1
    assert node.next_request(0.1) is None  # nothing until the next check period
    request = ask(node, 0.5, GET_STATE)
    assert node.answered(request.number, 0.5, ACTIVE) == ""
    assert node.next_request(0.6) is None


def test_a_respawned_node_is_brought_up_again():
    node = ManagedNode("planner", CONFIG)
    bring_up(node, 0.0)
    ask(node, 0.5, GET_STATE)  # the process was killed: no answer
    assert node.expire(2.0) == "" and node.next_request(2.0) is None
    assert node.expire(2.6) == "planner: not answering"  # timed out at 2.5
    assert node.state is None
    request = ask(node, 2.6, GET_STATE)
    assert node.failed(request.number, 2.7) == ""  # 'not answering' is logged once
    line = bring_up(node, 3.5)  # the respawned process answers, unconfigured
    assert line == "planner: active again (brought up 2 times)"
    assert node.activations == 2


def test_a_deliberately_deactivated_node_is_left_inactive():
    node = ManagedNode("planner", CONFIG)
    bring_up(node, 0.0)
    request = ask(node, 0.5, GET_STATE)
    node.answered(request.number, 0.5, INACTIVE)  # ros2 lifecycle set /planner deactivate
    for now in (1.0, 1.5, 2.0):
        request = ask(node, now, GET_STATE)
        node.answered(request.number, now, INACTIVE)
    assert node.activations == 1


def test_a_refused_transition_is_retried_after_the_delay():
    node = ManagedNode("planner", CONFIG)
    request = ask(node, 0.0, GET_STATE)
    node.answered(request.number, 0.0, UNCONFIGURED)
    request = ask(node, 0.0, CONFIGURE)
    assert "retrying in 3 s" in node.answered(request.number, 0.1, success=False)
    request = ask(node, 0.1, GET_STATE)  # asks where it is first
    node.answered(request.number, 0.1, UNCONFIGURED)
    for now in (0.6, 1.1, 2.9):  # polls only, until the retry is due
        request = ask(node, now, GET_STATE)
        node.answered(request.number, now, UNCONFIGURED)
    ask(node, 3.1, CONFIGURE)


def test_a_late_answer_to_an_abandoned_request_is_ignored():
    node = ManagedNode("planner", CONFIG)
    old = ask(node, 0.0, GET_STATE)
    node.expire(2.1)
    new = ask(node, 2.1, GET_STATE)  # the first one timed out
    assert node.answered(old.number, 2.2, ACTIVE) == "" and node.state is None
    node.answered(new.number, 2.2, UNCONFIGURED)
    assert node.bringing_up


@pytest.mark.parametrize("changes, message", [
    (dict(managed_nodes=()), "empty"),
    (dict(managed_nodes=("a", "a")), "duplicates"),
    (dict(check_period_s=0.0), "check_period_s"),
    (dict(retry_delay_s=-1.0), "retry_delay_s"),
])
def test_config_validation(changes, message):
    values = dict(managed_nodes=("planner",))
    values.update(changes)
    with pytest.raises(ValueError, match=message):
        LifecycleManagerConfig(**values).validate()
