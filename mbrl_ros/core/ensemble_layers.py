"""Batched ensemble layers: ``E`` independent MLPs, one ``torch.baddbmm`` per layer."""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

import torch

ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": torch.nn.functional.silu,
    "relu": torch.nn.functional.relu,
    "elu": torch.nn.functional.elu,
    "gelu": torch.nn.functional.gelu,
    "tanh": torch.tanh,
}
"""Activation functions selectable by name in configs."""


def check_activation(name: str) -> None:
    """Raise ValueError unless ``name`` is a key of :data:`ACTIVATIONS`."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")


class EnsembleMLP(torch.nn.Module):
    """``num_members`` MLPs with stacked weights.

    Layer ``i`` holds ``weight_i: [E, in, out]`` and ``bias_i: [E, 1, out]``; every parameter has
    the member axis first, so per-member weights can be copied with ``param[mask]``.
    """

    def __init__(self, num_members: int, input_dim: int, hidden_sizes: Sequence[int],
                 output_dim: int, activation: str, device: torch.device | str = "cpu",
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        check_activation(activation)
        self.num_members = num_members
        self.activation = ACTIVATIONS[activation]
        sizes = [input_dim, *hidden_sizes, output_dim]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            weight = torch.empty(num_members, fan_in, fan_out)
            # Truncated normal as in PETS / mbrl-lib: std 1 / (2 sqrt(fan_in)), cut at 2 std.
            std = 1.0 / (2.0 * math.sqrt(fan_in))
            torch.nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std,
                                        generator=generator)
            self.weights.append(torch.nn.Parameter(weight.to(device)))
            self.biases.append(torch.nn.Parameter(torch.zeros(num_members, 1, fan_out,
                                                              device=device)))

    def forward(self, x: torch.Tensor, members: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Evaluate the members.

        Args:
            x: ``[M, N, input_dim]`` with ``M = E``, or ``M = len(members)``.
            members: optional long tensor of member indices to evaluate (e.g. the elites).

        Returns:
            ``[M, N, output_dim]``.
        """
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if members is not None:
                weight, bias = weight[members], bias[members]
            x = torch.baddbmm(bias, x, weight)
            if i < last:
                x = self.activation(x)
        return x
