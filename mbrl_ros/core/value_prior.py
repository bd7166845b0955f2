"""A learned value/policy as the planner uses it: which parts, bound to the current goal.

The migration path from pure MPC to TD-MPC-style planning is three settings
(:class:`ValuePriorConfig`): policy-prior trajectories among the planner's samples, the value
as the plan's terminal cost, and (never the default on hardware) the policy alone without
planning. :class:`PlanningPrior` wraps a :class:`~mbrl_ros.core.value_policy.ValuePolicy` into
the ``value(states) -> [N]`` and ``policy(states) -> [N, A]`` callables the planner takes, with
the task's goal (if any) bound in, and :func:`compatibility_error` says why a value/policy does
not belong to the planner's dynamics and task cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np
import torch

from mbrl_ros.core.value_policy import ValuePolicy

STAGE_MPC = "mpc"
"""Planning over the task cost alone (no value/policy in use)."""
STAGE_POLICY_PRIOR = "mpc+policy"
"""Planning with policy-prior trajectories among the samples."""
STAGE_VALUE = "mpc+value"
"""Planning with the learned value as terminal cost (no policy prior)."""
STAGE_FULL = "mpc+policy+value"
"""Planning with both: TD-MPC style."""
STAGE_POLICY_ONLY = "policy"
"""The policy's action, no planning."""

VALUE_POLICY_KIND = "value_policy"
"""``ModelUpdate.model_kind`` of a value/policy announcement on mbrl/model_update (its versions
are counted apart from the dynamics models')."""
COMPATIBILITY_KEYS = ("task", "task_cost_hash", "state_dim", "action_dim", "goal_dim",
                      "joints", "model_period_s")
"""What a value/policy checkpoint's metadata must share with the planner to be used."""


@dataclass(frozen=True)
class ValuePriorConfig:
    """Which parts of a deployed value/policy the planner uses (ROS parameters ``value.*``,
    settable at run time). All off: pure MPC over the task cost."""

    policy_prior: bool = False
    """Roll the learned policy out among the planner's samples (warm-starts the optimiser)."""
    terminal_value: bool = False
    """Add minus the learned value of the plan's last state to its cost; its Q members'
    disagreement counts in the plan's disagreement (what the gate judges)."""
    policy_only: bool = False
    """Send the policy's action without planning (commands carry the status "policy"). For
    experiments: never the default on hardware."""

    def validate(self) -> "ValuePriorConfig":
        """Nothing to check beyond the types; returns self."""
        return self

    def stage(self, available: bool) -> str:
        """The stage these settings give when a value/policy is (or is not) ``available``."""
        if not available:
            return STAGE_MPC
        if self.policy_only:
            return STAGE_POLICY_ONLY
        return {(False, False): STAGE_MPC, (True, False): STAGE_POLICY_PRIOR,
                (False, True): STAGE_VALUE,
                (True, True): STAGE_FULL}[(self.policy_prior, self.terminal_value)]


class PlanningPrior:
    """A loaded :class:`ValuePolicy` with the task's current goal bound in."""

    def __init__(self, agent: ValuePolicy, version: int) -> None:
        self.agent = agent
        self.version = int(version)
        self._goal: Optional[torch.Tensor] = None

    @property
    def needs_goal(self) -> bool:
        return self.agent.goal_dim > 0

    @property
    def ready(self) -> bool:
        """True when the value/policy can be evaluated (it has its goal, if it needs one)."""
        return not self.needs_goal or self._goal is not None

    def set_goal(self, goal: Optional[np.ndarray]) -> None:
        """The task's goal ``[G]`` (ignored by a value/policy without goals)."""
        if not self.needs_goal:
            return
        self._goal = None if goal is None else torch.as_tensor(
            np.asarray(goal, dtype=np.float32), device=self.agent.device)

    def value(self, states: torch.Tensor) -> torch.Tensor:
        """``[N, S] -> [N]``: the planner's terminal value (its terminal cost is minus this)."""
        return self.agent.value(states, self._goal)

    def policy(self, states: torch.Tensor) -> torch.Tensor:
        """``[N, S] -> [N, A]``: the policy's actions (physical units, within bounds)."""
        return self.agent.policy(states, self._goal)

    def disagreement(self, state: torch.Tensor) -> float:
        """The value's disagreement at ``state [S]`` (dimensionless, see
        :meth:`ValuePolicy.value_disagreement`)."""
        return float(self.agent.value_disagreement(state.reshape(1, -1), self._goal)[0])


def compatibility_error(metadata: Mapping[str, Any],
                        expected: Mapping[str, Any]) -> Optional[str]:
    """Why a value/policy whose checkpoint metadata is ``metadata`` does not fit a planner
    that expects ``expected`` (the :data:`COMPATIBILITY_KEYS` it knows); None if it fits."""
    for key in COMPATIBILITY_KEYS:
        if key not in expected:
            continue
        theirs, ours = metadata.get(key), expected[key]
        if isinstance(ours, (list, tuple)):
            theirs = list(theirs) if isinstance(theirs, (list, tuple)) else theirs
            ours = list(ours)
        if isinstance(ours, float) and isinstance(theirs, (int, float)):
            same = abs(float(theirs) - ours) <= 1e-9 * max(1.0, abs(ours))
        else:
            same = theirs == ours
        if not same:
            return f"its {key} is {theirs!r}, the planner's is {ours!r}"
    return None
