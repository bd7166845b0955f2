"""The planners' rollout kernel: an ensemble's next-state mean in one fused pass.

Planning uses only the members' mean predictions, so the kernel drops the log-variance head,
folds the input z-scoring into the first layer and the target de-normalisation into the last
one, and runs every layer as one ``addmm`` per member (bias fused) into preallocated buffers,
followed by an in-place activation. Rows can be processed in blocks (``chunk_rows``) so each
block's activations stay in cache through all layers. Weights may be cast to bfloat16
(``dtype``); states stay float32.

A kernel is a snapshot of the weights when it was built; the model hands out a new one when
its weights change (the planner asks for one per planning call).
This module knows nothing of the model classes; they build kernels from their own tensors
(:meth:`mbrl_ros.core.ensemble.ProbabilisticEnsemble.mean_kernel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from mbrl_ros.core.dynamics_model import relative_actions, relative_angle_mask, wrap_angle

BaseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``base(state [..., S], action [..., A]) -> [..., S]``: what the learned delta is added to
(the state itself for a plain ensemble, the nominal model's prediction for a residual one)."""


def _silu(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.silu(x, inplace=True)


def _elu(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.elu(x, inplace=True)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return x.copy_(torch.nn.functional.gelu(x))


IN_PLACE_ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": _silu, "relu": torch.relu_, "elu": _elu, "gelu": _gelu, "tanh": torch.tanh_}
"""In-place versions of :data:`mbrl_ros.core.ensemble_layers.ACTIVATIONS` (same names)."""


@dataclass(frozen=True)
class EnsembleTensors:
    """What a kernel is built from: an ensemble's weights and its encodings (raw tensors)."""

    weights: Sequence[torch.Tensor]
    """Per layer ``[E, in, out]``; the last layer's first ``state_dim`` outputs are the mean."""
    biases: Sequence[torch.Tensor]
    """Per layer ``[E, 1, out]``."""
    input_mean: torch.Tensor
    input_std: torch.Tensor
    target_mean: torch.Tensor
    target_std: torch.Tensor
    angle_index: torch.Tensor
    """State dims that wrap (encoded as sin, cos; wrapped to [-pi, pi) after each step)."""
    plain_index: torch.Tensor
    """The other state dims, in the order the network sees them."""
    relative_index: torch.Tensor
    """State dims subtracted from the actions before encoding (empty: absolute actions)."""
    activation: str


class MeanStepKernel:
    """``step(state, action, out)``: the members' next-state means, fused (see module doc)."""

    def __init__(self, tensors: EnsembleTensors, base: Optional[BaseFn] = None,
                 dtype: torch.dtype = torch.float32, chunk_rows: int = 0) -> None:
        if chunk_rows < 0:
            raise ValueError(f"chunk_rows must be >= 0 (0: no blocks), got {chunk_rows}")
        if tensors.activation not in IN_PLACE_ACTIVATIONS:
            raise ValueError(f"no in-place kernel for activation {tensors.activation!r}")
        self.dtype, self.chunk_rows, self.base = dtype, chunk_rows, base
        self.activation = IN_PLACE_ACTIVATIONS[tensors.activation]
        self.angle_index, self.plain_index = tensors.angle_index, tensors.plain_index
        self.relative_index = tensors.relative_index
        angle_mask = torch.zeros(int(tensors.target_mean.shape[-1]), dtype=torch.bool,
                                 device=tensors.relative_index.device)
        angle_mask[tensors.angle_index.to(angle_mask.device)] = True
        self.relative_angles = relative_angle_mask(self.relative_index, angle_mask)
        """[A] relative actions that are offsets from wrapping angles (None: none)."""
        self.state_dim = int(tensors.target_mean.shape[-1])
        self.num_members = int(tensors.weights[0].shape[0])
        self.weights, self.biases = self._fold(tensors)
        self._scratch: Dict[Tuple[str, int], torch.Tensor] = {}

    def _fold(self, t: EnsembleTensors) -> Tuple[list, list]:
        """Input z-scoring into layer 0, target de-normalisation into the mean head."""
        weights = [w.detach() for w in t.weights]
        biases = [b.detach() for b in t.biases]
        first = weights[0] / t.input_std[:, None]
        biases[0] = biases[0] - ((t.input_mean / t.input_std) @ weights[0]).unsqueeze(1)
        weights[0] = first
        state_dim = self.state_dim
        weights[-1] = weights[-1][..., :state_dim] * t.target_std
        biases[-1] = biases[-1][..., :state_dim] * t.target_std + t.target_mean
        # copies, also of the layers folding leaves as they are: a snapshot of the weights
        return ([w.to(self.dtype, copy=True).contiguous() for w in weights],
                [b.to(self.dtype, copy=True).contiguous() for b in biases])

    def _buffer(self, name: str, shape: Tuple[int, ...]) -> torch.Tensor:
        """A scratch tensor reused across steps (allocated once per name and shape)."""
        key = (name, *shape)
        buffer = self._scratch.get(key)
        if buffer is None:
            buffer = torch.empty(shape, dtype=self.dtype, device=self.weights[0].device)
            self._scratch[key] = buffer
        return buffer

    def encode(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Raw network inputs ``[M, R, in]`` in the kernel's dtype (the z-scoring is folded
        into the weights)."""
        if len(self.relative_index):
            action = relative_actions(action, state, self.relative_index, self.relative_angles)
        members, rows = max(state.shape[0], action.shape[0]), state.shape[1]
        width = self.weights[0].shape[1]
        inputs = self._buffer("inputs", (members, rows, width))
        action_dim = action.shape[-1]
        if len(self.angle_index) == 0:
            inputs[..., :width - action_dim] = state
        else:
            plain = len(self.plain_index)
            angles = state.index_select(-1, self.angle_index)
            inputs[..., :plain] = state.index_select(-1, self.plain_index)
            inputs[..., plain:plain + len(self.angle_index)] = torch.sin(angles)
            inputs[..., plain + len(self.angle_index):width - action_dim] = torch.cos(angles)
        inputs[..., width - action_dim:] = action
        return inputs

    def delta(self, inputs: torch.Tensor) -> torch.Tensor:
        """Predicted mean deltas ``[E, R, S]`` (raw units, the kernel's dtype) of inputs
        ``[E, R, in]``, in blocks of ``chunk_rows`` rows."""
        members, rows, _ = inputs.shape
        out = self._buffer("delta", (members, rows, self.state_dim))
        block = self.chunk_rows if 0 < self.chunk_rows < rows else rows
        last = len(self.weights) - 1
        for start in range(0, rows, block):
            stop = min(start + block, rows)
            x = inputs[:, start:stop]
            for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
                if i == last:
                    target = out if block == rows else self._buffer(
                        "head", (members, stop - start, self.state_dim))
                else:
                    width = weight.shape[-1]
                    target = self._buffer(f"hidden{i}", (members, stop - start, width))
                for member in range(members):  # faster than bmm + bias at these sizes
                    torch.addmm(bias[member], x[member], weight[member], out=target[member])
                if i < last:
                    self.activation(target)
                x = target
            if block != rows:
                out[:, start:stop] = x
        return out

    def step(self, state: torch.Tensor, action: torch.Tensor,
             out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Next-state means ``[E, R, S]`` (float32) for ``state`` ``[E, R, S]`` or ``[R, S]``
        and ``action`` ``[E, R, A]`` or ``[R, A]``; written into ``out`` when given."""
        members = self.num_members
        if state.dim() == 2:
            state = state.unsqueeze(0).expand(members, -1, -1)
        if action.dim() == 2:
            action = action.unsqueeze(0).expand(members, -1, -1)
        delta = self.delta(self.encode(state, action))
        base = state if self.base is None else self.base(state, action)
        if out is None:
            out = torch.empty(base.shape, dtype=torch.float32, device=base.device)
        torch.add(base, delta, out=out)
        if len(self.angle_index):
            out.index_copy_(-1, self.angle_index,
                            wrap_angle(out.index_select(-1, self.angle_index)))
        return out
