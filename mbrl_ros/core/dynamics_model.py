"""The interface every learned dynamics model offers to planners, trainers and tools.

A ``DynamicsModel`` is an ensemble of ``num_members`` one-step models
``next_state ~ N(mean, var)``. Planners call :meth:`DynamicsModel.predict` thousands of times per
control step, so implementations evaluate all members in one batched forward pass.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

from mbrl_ros.core.types import TransitionBatch

ProgressCallback = Callable[[int, Dict[str, float]], None]
"""``progress(epoch, metrics)``: called after every training epoch with that epoch's metrics."""


class DynamicsModel(abc.ABC):
    """Abstract base of learned (or partly learned) one-step dynamics models.

    Attributes (read-only properties in implementations):
        state_dim: size of the state vector.
        action_dim: size of the action vector.
        num_members: ensemble members that :meth:`predict` returns (the leading ``E`` axis).
        device: torch device the model lives on; ``predict`` returns tensors there.
    """

    state_dim: int
    action_dim: int
    num_members: int
    device: torch.device

    @abc.abstractmethod
    def predict(self, state: torch.Tensor, action: torch.Tensor,
                grad: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Next-state distribution for every member.

        Args:
            state: ``[E, N, state_dim]`` (one row set per member) or ``[N, state_dim]``
                (the same states for every member).
            action: ``[E, N, action_dim]`` or ``[N, action_dim]``.
            grad: keep the autograd graph (default: evaluated under ``torch.no_grad``).

        Returns:
            ``(mean, var)``, each ``[E, N, state_dim]`` on :attr:`device`: the mean and
            (aleatoric) variance of the next state predicted by each member.
        """

    @abc.abstractmethod
    def disagreement(self, mean: torch.Tensor) -> torch.Tensor:
        """Epistemic disagreement of predicted next-state means.

        Args:
            mean: ``[E, ..., state_dim]`` means returned by :meth:`predict`.

        Returns:
            ``[...]``: the variance across members of each state dimension, in normalised
            units (divided by the squared std of the training targets), averaged over state
            dimensions. Wrapping angles use wrapped differences.
        """

    @abc.abstractmethod
    def loss(self, batch: TransitionBatch) -> torch.Tensor:
        """Scalar mean Gaussian NLL of ``batch`` (normalised units), averaged over members."""

    @abc.abstractmethod
    def fit(self, batch: TransitionBatch, seed: int = 0,
            progress: Optional[ProgressCallback] = None) -> Any:
        """Train on ``batch`` (warm-starting from the current weights); see
        :func:`mbrl_ros.core.model_training.fit_dynamics`, whose
        :class:`~mbrl_ros.core.model_training.FitReport` it returns (not imported here: this
        interface sits below the trainer)."""

    @abc.abstractmethod
    def save(self, path: str, metadata: Optional[Mapping[str, Any]] = None) -> str:
        """Write a checkpoint atomically; returns its sha256 hex digest."""

    @classmethod
    @abc.abstractmethod
    def load(cls, path: str, expected_sha256: Optional[str] = None,
             device: Optional[torch.device | str] = None, **kwargs: Any) -> "DynamicsModel":
        """Read a checkpoint written by :meth:`save` (no code is unpickled)."""


def set_operating_point(model: Any, positions: Optional[Any]) -> None:
    """Pass joint positions [J] to a model (or nominal model) that linearises about the
    robot's pose (``set_operating_point``); models without one ignore it."""
    setter = getattr(model, "set_operating_point", None)
    if setter is not None:
        setter(positions)


def as_model_input(x: Any, device: torch.device) -> torch.Tensor:
    """``x`` as a float32 tensor on ``device`` (no copy when it already is one)."""
    return torch.as_tensor(x, dtype=torch.float32, device=device)


def broadcast_inputs(state: torch.Tensor, action: torch.Tensor, num_members: int,
                     state_dim: int, action_dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Check sizes and expand ``[N, dim]`` inputs to ``[E, N, dim]`` (views, no copy).

    Raises:
        ValueError: on a wrong number of dimensions, members, rows or features.
    """
    if state.dim() == 2:
        state = state.unsqueeze(0).expand(num_members, -1, -1)
    if action.dim() == 2:
        action = action.unsqueeze(0).expand(num_members, -1, -1)
    if state.dim() != 3 or action.dim() != 3:
        raise ValueError(f"state/action must be [E, N, dim] or [N, dim], got "
                         f"{tuple(state.shape)} and {tuple(action.shape)}")
    if state.shape[0] != num_members or action.shape[0] != num_members:
        raise ValueError(f"expected {num_members} members, got state {tuple(state.shape)} "
                         f"and action {tuple(action.shape)}")
    if state.shape[2] != state_dim or action.shape[2] != action_dim:
        raise ValueError(f"expected state_dim {state_dim} and action_dim {action_dim}, got "
                         f"{state.shape[2]} and {action.shape[2]}")
    if state.shape[1] != action.shape[1]:
        raise ValueError(f"state has {state.shape[1]} rows, action has {action.shape[1]}")
    return state, action


def wrap_angle(x: torch.Tensor) -> torch.Tensor:
    """Wrap angles (any shape) to ``[-pi, pi)``."""
    return torch.remainder(x + torch.pi, 2.0 * torch.pi) - torch.pi


def relative_actions(action: torch.Tensor, state: torch.Tensor, relative_index: torch.Tensor,
                     relative_angles: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``action - state[..., relative_index]``: actions as offsets from the state dims they
    command (e.g. position targets from the joint positions), with the offsets from wrapping
    angles (``relative_angles [A]`` bool; None: none) wrapped to ``[-pi, pi)``, so a target
    across ``+-pi`` from a continuous joint's angle is the short way round."""
    action = action - state.index_select(-1, relative_index)
    if relative_angles is None:
        return action
    return torch.where(relative_angles, wrap_angle(action), action)


def relative_angle_mask(relative_index: torch.Tensor, angle_mask: torch.Tensor
                        ) -> Optional[torch.Tensor]:
    """``[A]`` which relative actions are offsets from wrapping angles (None: none)."""
    if len(relative_index) == 0:
        return None
    mask = angle_mask.index_select(0, relative_index)
    return mask if bool(mask.any()) else None


def encode_angles(state: torch.Tensor, action: torch.Tensor, angle_index: torch.Tensor,
                  plain_index: torch.Tensor) -> torch.Tensor:
    """Model inputs ``[..., S + len(angles) + A]``: the plain state dims, sin and cos of the
    angle dims (``angle_index``), then the action; ``[state, action]`` without angles."""
    if len(angle_index) == 0:
        return torch.cat([state, action], dim=-1)
    angles = state.index_select(-1, angle_index)
    return torch.cat([state.index_select(-1, plain_index), torch.sin(angles), torch.cos(angles),
                      action], dim=-1)


def wrapped_difference(target: torch.Tensor, base: torch.Tensor, angle_index: torch.Tensor,
                       angle_mask: torch.Tensor) -> torch.Tensor:
    """``target - base`` with the angle dims (``angle_index``, as ``angle_mask [S]``) wrapped
    to [-pi, pi); no extra work without angles."""
    delta = target - base
    if len(angle_index) == 0:
        return delta
    return torch.where(angle_mask, wrap_angle(delta), delta)


def wrapped_compose(base: torch.Tensor, delta: torch.Tensor, angle_index: torch.Tensor,
                    angle_mask: torch.Tensor) -> torch.Tensor:
    """``base + delta`` with the angle dims (``angle_index``, as ``angle_mask [S]``) wrapped
    to [-pi, pi); no extra work without angles."""
    out = base + delta
    if len(angle_index) == 0:
        return out
    return torch.where(angle_mask, wrap_angle(out), out)
