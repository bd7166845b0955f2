"""What ``lifecycle_manager`` decides, without ROS: which request to send each managed node next.

The manager asks every managed node for its lifecycle state every ``check_period_s``. A node it
finds unconfigured (one that just started, or was respawned after a crash) is brought up:
configure, then activate, a failed transition retried after ``retry_delay_s``. A node that is
inactive without the manager having left it so (an operator's ``ros2 lifecycle set <node>
deactivate``) is left alone, and so is a finalized one. A node that does not answer in time is
"not answering" until it does again.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

GET_STATE, CONFIGURE, ACTIVATE = "get_state", "configure", "activate"
"""The requests the manager sends."""
UNCONFIGURED, INACTIVE, ACTIVE, FINALIZED = "unconfigured", "inactive", "active", "finalized"
"""Primary lifecycle states, by the labels ``lifecycle_msgs/srv/GetState`` answers with."""
TRANSITION_FOR = {UNCONFIGURED: CONFIGURE, INACTIVE: ACTIVATE}
"""The transition that brings a node in a state one step closer to active."""
GOAL_OF = {CONFIGURE: INACTIVE, ACTIVATE: ACTIVE}
"""The state a successful transition leaves a node in."""


@dataclass(frozen=True)
class LifecycleManagerConfig:
    """Settings of ``lifecycle_manager``."""

    managed_nodes: Tuple[str, ...] = ()
    """Lifecycle nodes to configure and activate, by name (relative names are in the
    manager's namespace), e.g. [safety_gate, planner]. Each is brought up as soon as it
    answers, independently of the others."""
    check_period_s: float = field(default=0.5, metadata={"range": (0.01, 60.0)})
    """How often each node's lifecycle state is asked for [s]: how soon a respawned node is
    found."""
    state_timeout_s: float = field(default=1.0, metadata={"range": (0.01, 60.0)})
    """A node that does not answer a state request within this is "not answering" [s]."""
    transition_timeout_s: float = field(default=60.0, metadata={"range": (0.1, 600.0)})
    """Longest wait for a configure or activate transition [s] (the planner's configure builds
    its robot model and controller)."""
    retry_delay_s: float = field(default=2.0, metadata={"range": (0.0, 600.0)})
    """Wait before retrying a failed transition [s]."""

    def validate(self) -> None:
        """Raise ValueError on an unusable setting."""
        if not self.managed_nodes:
            raise ValueError("managed_nodes is empty: name the lifecycle nodes to manage")
        if len(set(self.managed_nodes)) != len(self.managed_nodes):
            raise ValueError(f"managed_nodes has duplicates: {list(self.managed_nodes)}")
        if any(not name for name in self.managed_nodes):
            raise ValueError("managed_nodes has an empty name")
        for name in ("check_period_s", "state_timeout_s", "transition_timeout_s"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.retry_delay_s < 0.0:
            raise ValueError(f"retry_delay_s must be >= 0, got {self.retry_delay_s}")


@dataclass(frozen=True)
class Request:
    """One request in flight to a managed node."""

    kind: str
    """GET_STATE, CONFIGURE or ACTIVATE."""
    number: int
    """Identifies the answer (a late answer to an abandoned request is ignored)."""
    deadline: float
    """When it is abandoned (the node is then "not answering")."""


class ManagedNode:
    """The manager's view of one managed node: its last known state and what to ask next.

    Times are seconds on one monotonic clock. Call :meth:`expire` then :meth:`next_request`
    often (every check period and after every answer), and :meth:`answered` or :meth:`failed`
    with each outcome; they return a line worth logging ('' when nothing changed)."""

    def __init__(self, name: str, config: LifecycleManagerConfig) -> None:
        self.name = name
        self.config = config
        self.state: Optional[str] = None
        """The node's last known primary state; None: unknown or not answering."""
        self.bringing_up = False
        """True from finding the node unconfigured until it is active."""
        self.activations = 0
        """How often the manager brought this node up to active (more than 1: respawns)."""
        self.pending: Optional[Request] = None
        self._numbers = itertools.count(1)
        self._next_poll = -math.inf
        self._retry_at = -math.inf

    def expire(self, now: float) -> str:
        """Abandon the pending request if its deadline has passed (as :meth:`failed`)."""
        if self.pending is None or now < self.pending.deadline:
            return ""
        return self.failed(self.pending.number, now)

    def next_request(self, now: float) -> Optional[Request]:
        """The request to send now (remembered as pending), or None (one is pending)."""
        if self.pending is not None:
            return None
        kind = None
        if self.bringing_up and now >= self._retry_at:
            kind = TRANSITION_FOR.get(self.state or "")
        if kind is None and now >= self._next_poll:
            kind, self._next_poll = GET_STATE, now + self.config.check_period_s
        if kind is None:
            return None
        timeout = self.config.state_timeout_s if kind == GET_STATE \
            else self.config.transition_timeout_s
        self.pending = Request(kind, next(self._numbers), now + timeout)
        return self.pending

    def answered(self, number: int, now: float, state: str = "", success: bool = False) -> str:
        """The answer to request ``number``: the state (GET_STATE) or whether the transition
        succeeded."""
        request = self._take(number)
        if request is None:
            return ""
        if request.kind == GET_STATE:
            return self._observed(state)
        if success:
            self.state = GOAL_OF[request.kind]
            if self.state == ACTIVE:
                self.bringing_up = False
                self.activations += 1
                return f"{self.name}: active" + (
                    f" again (brought up {self.activations} times)"
                    if self.activations > 1 else "")
            return f"{self.name}: configured"
        return self._transition_failed(request, now, "refused")

    def failed(self, number: int, now: float) -> str:
        """Request ``number`` got no answer (timed out, or the node's service is gone)."""
        request = self._take(number)
        if request is None:
            return ""
        if request.kind != GET_STATE:
            return self._transition_failed(request, now, "got no answer")
        was, self.state = self.state, None
        return f"{self.name}: not answering" if was is not None else ""

    def _take(self, number: int) -> Optional[Request]:
        request = self.pending
        if request is None or request.number != number:
            return None  # a late answer to an abandoned request
        self.pending = None
        return request

    def _observed(self, state: str) -> str:
        was, self.state = self.state, state
        if state == UNCONFIGURED and not self.bringing_up:
            self.bringing_up = True
            return f"{self.name}: unconfigured" + (" (restarted?)" if self.activations else "") \
                + ": configuring and activating it"
        if state == ACTIVE and self.bringing_up:
            self.bringing_up = False  # activated by someone else
        if state != was and was is None and state != UNCONFIGURED:
            return f"{self.name}: answering, {state}"
        return ""

    def _transition_failed(self, request: Request, now: float, how: str) -> str:
        self.state = None  # ask again before the retry
        self._next_poll = now
        self._retry_at = now + self.config.retry_delay_s
        return (f"{self.name}: {request.kind} {how}; retrying in "
                f"{self.config.retry_delay_s:g} s")
