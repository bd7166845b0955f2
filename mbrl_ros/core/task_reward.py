"""The reward a value/policy learns from: minus the planner's own task cost, one step at a time.

Planner and learner then agree on what is good: a terminal value learned from this reward is in
the units of the planner's cost (``cost - value`` is what the planner minimises). For a task
with a goal (reaching), the goal is the target of one cost term (``goal_term``, e.g.
``end_effector``): the reward takes a goal per row, and :meth:`TaskReward.achieved_goal` gives
the goal a state reaches, for hindsight relabelling.

:func:`task_cost_hash` names a task cost by its settings (not its current goal), so a planner
can refuse a value learned for a different cost.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Optional

import torch

from mbrl_ros.core.costs import TaskCost


class TaskReward:
    """``reward(state [N, S], action [N, A], next_state [N, S], goal [N, G] | None) -> [N]``
    = minus the task cost of the step (the planner's per-step cost of ``next_state`` and
    ``action``; a smoothness term's first step costs nothing, as no earlier action is known).

    ``cost`` must be this reward's own :class:`TaskCost` (not the planner's): the goal term's
    target is swapped per call.
    """

    def __init__(self, cost: TaskCost, goal_term: Optional[str] = None) -> None:
        self.cost = cost
        self.term = None if goal_term is None else cost.term(goal_term)
        if self.term is not None and not hasattr(self.term, "achieved"):
            raise ValueError(f"cost term {goal_term!r} has no goal (no 'achieved' method)")
        self.goal_dim = 0 if self.term is None else int(self.term.target.shape[-1])
        """Values per goal (0: the task has none)."""

    def __call__(self, state: torch.Tensor, action: torch.Tensor, next_state: torch.Tensor,
                 goal: Optional[torch.Tensor] = None) -> torch.Tensor:
        states = torch.stack([state, next_state], dim=1)
        actions = action.unsqueeze(1)
        if self.term is None:
            if goal is not None:
                raise ValueError("this task has no goal")
            return -self.cost.per_step(states, actions)[:, 0]
        if goal is None or goal.shape != (len(state), self.goal_dim):
            raise ValueError(f"goal must be [{len(state)}, {self.goal_dim}], got "
                             f"{None if goal is None else tuple(goal.shape)}")
        saved = self.term.target
        self.term.target = goal.to(dtype=saved.dtype, device=saved.device)
        try:
            return -self.cost.per_step(states, actions)[:, 0]
        finally:
            self.term.target = saved

    def achieved_goal(self, states: torch.Tensor) -> torch.Tensor:
        """``[N, S] -> [N, G]``: the goal each state reaches (ValueError without a goal)."""
        if self.term is None:
            raise ValueError("this task has no goal")
        return self.term.achieved(states)


def task_cost_hash(task: str, settings: Mapping[str, Any]) -> str:
    """sha256 (hex) of a task's name and its cost settings (a JSON-friendly mapping, e.g. a
    cost config's fields): equal for a planner and a trainer configured alike."""
    text = json.dumps({"task": task, "cost": dict(settings)}, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()
