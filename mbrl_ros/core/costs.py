"""Task cost terms for the planner, small separate units chosen by name (like nav2 MPPI critics).

Every term maps ``states: [N, H+1, S]`` and ``actions: [N, H, A]`` to per-step costs
``[N, H]``; state terms look at the predicted states ``states[:, 1:]`` (step 0 is the current
state, which the plan cannot change). :class:`TaskCost` sums the terms with a discount and is
the ``cost_fn(states, actions) -> [N]`` the planner takes. Build one from a list of specs::

    build_task_cost([{"name": "joint_position", "indices": [0, 1], "target": [0.3, -0.2]},
                     {"name": "effort", "weight": 1e-3}], state_dim=4, action_dim=2)
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, Mapping, Optional, Sequence, Union

import torch

logger = logging.getLogger(__name__)

Weight = Union[float, Sequence[float]]
ForwardKinematics = Callable[[torch.Tensor], torch.Tensor]
"""Batched FK: ``joint_positions [M, J] -> end-effector position [M, D]`` (D = 3 usually)."""


def _vector(values, length: int, name: str, device, allow_scalar: bool = True) -> torch.Tensor:
    """A finite float tensor ``[length]`` from a scalar or a sequence; ValueError otherwise."""
    tensor = torch.as_tensor(values, dtype=torch.float32, device=device).reshape(-1)
    if allow_scalar and tensor.numel() == 1:
        tensor = tensor.expand(length).clone()
    if tensor.numel() != length:
        raise ValueError(f"{name} needs {length} values, got {tensor.numel()}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite, got {tensor.tolist()}")
    return tensor


def _indices(indices: Sequence[int], size: int, name: str, device) -> Union[slice, torch.Tensor]:
    """Validated state indices: a slice when they are a contiguous ascending range (a view, no
    gather on the hot path), else a long tensor."""
    index = torch.as_tensor(list(indices), dtype=torch.long).reshape(-1)
    if index.numel() == 0 or bool((index < 0).any()) or bool((index >= size).any()):
        raise ValueError(f"{name} indices must be non-empty and in [0, {size}), "
                         f"got {index.tolist()}")
    first = int(index[0])
    if torch.equal(index, torch.arange(first, first + index.numel())):
        return slice(first, first + index.numel())
    return index.to(device)


def _count(index: Union[slice, torch.Tensor]) -> int:
    return index.stop - index.start if isinstance(index, slice) else index.numel()


class CostTerm:
    """Base of the cost terms: ``per_step(states [N, H+1, S], actions [N, H, A]) -> [N, H]``."""

    name = ""

    def per_step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class JointPositionCost(CostTerm):
    """``sum_j weight_j * (q_j - target_j)^2`` on the state dims ``indices`` (positions)."""

    name = "joint_position"

    def __init__(self, indices: Sequence[int], target: Sequence[float], weight: Weight = 1.0,
                 state_dim: Optional[int] = None, device=None) -> None:
        size = state_dim if state_dim is not None else max(indices) + 1
        self.indices = _indices(indices, size, self.name, device)
        self.weight = _vector(weight, _count(self.indices), f"{self.name}.weight", device)
        self.target = _vector(target, _count(self.indices), f"{self.name}.target", device, False)

    def set_target(self, target: Sequence[float]) -> None:
        """Replace the joint target ``[len(indices)]``; ValueError if wrong size or not finite."""
        self.target = _vector(target, _count(self.indices), f"{self.name}.target",
                              self.target.device, False)

    def per_step(self, states, actions):
        target = self.target if self.target.dim() == 1 else self.target.unsqueeze(1)
        error = states[:, 1:, self.indices] - target
        return error.square() @ self.weight

    def achieved(self, states: torch.Tensor) -> torch.Tensor:
        """The goal that ``states [N, S]`` reach (their joint positions): ``[N, len(indices)]``;
        a target of this value makes the term zero there (hindsight relabelling)."""
        return states[:, self.indices]


class EndEffectorCost(CostTerm):
    """``weight * ||fk(q) - target||^2``: end-effector position error via a batched FK."""

    name = "end_effector"

    def __init__(self, fk: ForwardKinematics, indices: Sequence[int], target: Sequence[float],
                 weight: float = 1.0, state_dim: Optional[int] = None, device=None) -> None:
        if fk is None:
            raise ValueError("end_effector cost needs a forward-kinematics callable (fk)")
        size = state_dim if state_dim is not None else max(indices) + 1
        self.fk = fk
        self.indices = _indices(indices, size, self.name, device)
        self.target = _vector(target, len(target), f"{self.name}.target", device, False)
        self.weight = float(weight)

    def set_target(self, target: Sequence[float]) -> None:
        """Replace the end-effector target ``[D]``."""
        self.target = _vector(target, self.target.shape[-1], f"{self.name}.target",
                              self.target.device, False)

    def per_step(self, states, actions):
        joints = states[:, 1:, self.indices]
        num_samples, horizon, num_joints = joints.shape
        position = self.fk(joints.reshape(num_samples * horizon, num_joints))
        size = self.target.shape[-1]
        if position.shape != (num_samples * horizon, size):
            raise ValueError(f"fk returned shape {tuple(position.shape)}, expected "
                             f"{(num_samples * horizon, size)}")
        target = self.target if self.target.dim() == 1 \
            else self.target.repeat_interleave(horizon, dim=0)
        error = (position - target).square().sum(dim=-1)
        return self.weight * error.view(num_samples, horizon)

    def achieved(self, states: torch.Tensor) -> torch.Tensor:
        """The goal that ``states [N, S]`` reach (their end-effector positions): ``[N, D]``."""
        return self.fk(states[:, self.indices])


class EffortCost(CostTerm):
    """``sum_a weight_a * action_a^2`` (control effort)."""

    name = "effort"

    def __init__(self, weight: Weight = 1.0, action_dim: int = 1, device=None) -> None:
        self.weight = _vector(weight, action_dim, f"{self.name}.weight", device)

    def per_step(self, states, actions):
        return actions.square() @ self.weight


class VelocityCost(CostTerm):
    """``sum_j weight_j * qdot_j^2`` on the state dims ``indices`` (velocities)."""

    name = "velocity"

    def __init__(self, indices: Sequence[int], weight: Weight = 1.0,
                 state_dim: Optional[int] = None, device=None) -> None:
        size = state_dim if state_dim is not None else max(indices) + 1
        self.indices = _indices(indices, size, self.name, device)
        self.weight = _vector(weight, _count(self.indices), f"{self.name}.weight", device)

    def per_step(self, states, actions):
        return states[:, 1:, self.indices].square() @ self.weight


class JointLimitCost(CostTerm):
    """Soft barrier near joint limits: ``weight * sum_j relu(margin - distance_to_limit_j)^2``.

    Zero while every joint is at least ``margin`` inside ``[lower, upper]``; grows
    quadratically closer to (and beyond) a limit. The planner's hard limits are separate.
    """

    name = "joint_limit"

    def __init__(self, indices: Sequence[int], lower: Sequence[float], upper: Sequence[float],
                 margin: Weight, weight: float = 1.0, state_dim: Optional[int] = None,
                 device=None) -> None:
        size = state_dim if state_dim is not None else max(indices) + 1
        self.indices = _indices(indices, size, self.name, device)
        count = _count(self.indices)
        self.lower = _vector(lower, count, f"{self.name}.lower", device, False)
        self.upper = _vector(upper, count, f"{self.name}.upper", device, False)
        self.margin = _vector(margin, count, f"{self.name}.margin", device)
        if bool((self.lower >= self.upper).any()) or bool((self.margin < 0).any()):
            raise ValueError("joint_limit needs lower < upper and margin >= 0")
        self.weight = float(weight)

    def per_step(self, states, actions):
        joints = states[:, 1:, self.indices]
        near_upper = (self.margin - (self.upper - joints)).clamp(min=0.0)
        near_lower = (self.margin - (joints - self.lower)).clamp(min=0.0)
        return self.weight * (near_upper.square() + near_lower.square()).sum(dim=-1)


class SmoothnessCost(CostTerm):
    """``weight * ||a_t - a_{t-1}||^2``; step 0 compares with the last applied action if set."""

    name = "smoothness"

    def __init__(self, weight: float = 1.0, action_dim: int = 1, device=None) -> None:
        self.weight = float(weight)
        self.action_dim = action_dim
        self.previous_action: Optional[torch.Tensor] = None

    def set_previous_action(self, action: Optional[Sequence[float]]) -> None:
        """Set the action applied last tick ``[A]`` (None: step 0 costs nothing)."""
        self.previous_action = (None if action is None else _vector(
            action, self.action_dim, f"{self.name}.previous_action", None, False))

    def per_step(self, states, actions):
        cost = torch.zeros(actions.shape[:2], dtype=actions.dtype, device=actions.device)
        cost[:, 1:] = (actions[:, 1:] - actions[:, :-1]).square().sum(dim=-1)
        if self.previous_action is not None:
            previous = self.previous_action.to(actions.device)
            cost[:, 0] = (actions[:, 0] - previous).square().sum(dim=-1)
        return self.weight * cost


COST_TERMS: Dict[str, type] = {term.name: term for term in (
    JointPositionCost, EndEffectorCost, EffortCost, VelocityCost, JointLimitCost,
    SmoothnessCost)}
"""Cost terms by name, as used in the ``costs`` list of a task config."""


class TaskCost:
    """Sum of cost terms, discounted over the horizon: ``(states, actions) -> [N]``."""

    def __init__(self, terms: Sequence[CostTerm], discount: float = 1.0) -> None:
        if not terms:
            raise ValueError("TaskCost needs at least one cost term")
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"TaskCost.discount must be in (0, 1], got {discount}")
        self.terms = list(terms)
        self.discount = float(discount)

    def term(self, name: str) -> CostTerm:
        """The first term called ``name`` (e.g. to ``set_target`` on a new goal)."""
        for term in self.terms:
            if term.name == name:
                return term
        raise KeyError(f"no cost term {name!r}; have {[t.name for t in self.terms]}")

    def set_previous_action(self, action: Optional[Sequence[float]]) -> None:
        """Tell every term that compares a plan's first action with the command sent last
        tick (those with a ``set_previous_action``, e.g. :class:`SmoothnessCost`) that
        command ``[A]``; None: forget it (their step 0 then costs nothing)."""
        for term in self.terms:
            setter = getattr(term, "set_previous_action", None)
            if callable(setter):
                setter(action)

    def per_step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``states: [N, H+1, S]``, ``actions: [N, H, A]`` -> summed per-step cost ``[N, H]``."""
        total = self.terms[0].per_step(states, actions)
        for term in self.terms[1:]:
            total = total + term.per_step(states, actions)
        return total

    def __call__(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``states: [N, H+1, S]``, ``actions: [N, H, A]`` -> ``[N]`` sum_t discount^t c_t."""
        per_step = self.per_step(states, actions)
        horizon = per_step.shape[1]
        discounts = self.discount ** torch.arange(horizon, dtype=per_step.dtype,
                                                  device=per_step.device)
        return per_step @ discounts


def build_task_cost(specs: Sequence[Mapping], state_dim: int, action_dim: int,
                    fk: Optional[ForwardKinematics] = None, discount: float = 1.0,
                    device=None) -> TaskCost:
    """Build a :class:`TaskCost` from specs ``[{"name": <term>, **arguments}, ...]``.

    Unknown names or arguments raise ValueError naming the offending spec.
    """
    terms = []
    for spec in specs:
        arguments = dict(spec)
        name = arguments.pop("name", None)
        if name not in COST_TERMS:
            raise ValueError(f"unknown cost term {name!r}; choose from {sorted(COST_TERMS)}")
        cls = COST_TERMS[name]
        if cls in (JointPositionCost, VelocityCost, JointLimitCost, EndEffectorCost):
            arguments["state_dim"] = state_dim
        if cls in (EffortCost, SmoothnessCost):
            arguments["action_dim"] = action_dim
        if cls is EndEffectorCost:
            arguments["fk"] = fk
        try:
            terms.append(cls(device=device, **arguments))
        except TypeError as error:
            raise ValueError(f"bad arguments for cost term {name!r}: {error}") from error
    return TaskCost(terms, discount)
