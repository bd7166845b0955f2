"""Building blocks of the latent world model: batched LayerNorm + Mish MLPs, simplicial
normalisation, symlog two-hot regression and a running scale (as in TD-MPC2)."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F

INIT_STD = 0.02
"""Std of the truncated-normal weight initialisation (TD-MPC2's ``weight_init``)."""
PERCENTILES = (0.05, 0.95)
"""The running scale tracks the spread between these quantiles of Q."""
MIN_SCALE = 1.0
"""The running scale never divides by less than this."""
MISH_EXP_CLAMP = 20.0
"""Mish is computed from exp(x) clamped here (its output is x to float precision beyond)."""


class _Mish(torch.autograd.Function):
    """Mish with a hand-written backward (one saved tensor, a few element-wise ops)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        e = torch.exp(x.clamp(max=MISH_EXP_CLAMP))
        n = e * (e + 2.0)
        ctx.save_for_backward(x)
        return x * n / (n + 2.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        e = torch.exp(x.clamp(max=MISH_EXP_CLAMP))
        n = e * (e + 2.0)
        t = n / (n + 2.0)  # tanh(softplus(x))
        # d/dx x tanh(softplus(x)) = t + x (1 - t^2) sigmoid(x)
        return grad * (t + x * (1.0 - t * t) * (e / (1.0 + e)))


def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish, ``x tanh(softplus(x))``, in the closed form ``x n / (n + 2)`` with
    ``n = e^x (e^x + 2)`` and an explicit gradient: the same values as ``F.mish``, several
    times faster on CPU."""
    return _Mish.apply(x)


def simnorm(x: torch.Tensor, group: int) -> torch.Tensor:
    """Simplicial normalisation: softmax over consecutive groups of ``group`` features."""
    shape = x.shape
    return F.softmax(x.reshape(*shape[:-1], shape[-1] // group, group), dim=-1).reshape(shape)


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) log(1 + |x|)``."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


class TwoHot:
    """Discrete regression in symlog space: ``num_bins`` evenly spaced bins over
    ``[vmin, vmax]``; a scalar is the soft two-hot mix of its neighbouring bins. With one bin it
    is plain regression of ``symlog(target)`` (MSE)."""

    def __init__(self, num_bins: int, vmin: float, vmax: float) -> None:
        self.num_bins, self.vmin, self.vmax = int(num_bins), float(vmin), float(vmax)
        self.bin_size = (self.vmax - self.vmin) / max(self.num_bins - 1, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Scalars ``[...]`` -> soft two-hot targets ``[..., num_bins]``."""
        x = torch.clamp(symlog(x), self.vmin, self.vmax)
        position = (x - self.vmin) / self.bin_size
        low = position.floor().clamp(max=self.num_bins - 1)
        offset = (position - low).unsqueeze(-1)
        low = low.long().unsqueeze(-1)
        target = torch.zeros(*x.shape, self.num_bins, dtype=x.dtype, device=x.device)
        target.scatter_(-1, low, 1.0 - offset)
        return target.scatter_add_(-1, (low + 1).clamp(max=self.num_bins - 1), offset)

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Network outputs ``[..., num_bins]`` -> scalars ``[...]``."""
        if self.num_bins == 1:
            return symexp(logits[..., 0])
        bins = torch.linspace(self.vmin, self.vmax, self.num_bins, dtype=logits.dtype,
                              device=logits.device)
        return symexp((F.softmax(logits, dim=-1) * bins).sum(-1))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-element loss ``[...]``: cross-entropy to the two-hot target (or symlog MSE)."""
        if self.num_bins == 1:
            return (logits[..., 0] - symlog(target)).square()
        return -(self.encode(target) * F.log_softmax(logits, dim=-1)).sum(-1)


ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mish": mish, "silu": F.silu}
"""Hidden-layer activations by name: Mish as TD-MPC2, or the cheaper SiLU."""


class NormedEnsembleMLP(torch.nn.Module):
    """``members`` MLPs evaluated in one ``baddbmm`` per layer; every hidden layer is
    Linear -> LayerNorm -> Mish (TD-MPC2's ``NormedLinear``), with optional dropout after the
    first. The output layer is linear, or Linear -> LayerNorm -> SimNorm when ``simnorm_dim``
    is set (the encoder and the dynamics, whose outputs are latents).

    Input ``[N, in]`` (shared by all members) or ``[E, N, in]``; output ``[E, N, out]``.
    """

    def __init__(self, members: int, input_dim: int, hidden: Sequence[int], output_dim: int,
                 simnorm_dim: int = 0, dropout: float = 0.0, zero_output: bool = False,
                 generator: Optional[torch.Generator] = None, activation: str = "mish"
                 ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of "
                             f"{sorted(ACTIVATIONS)}")
        self.members, self.simnorm_dim, self.dropout = members, int(simnorm_dim), dropout
        self.activation = ACTIVATIONS[activation]
        sizes = [input_dim, *hidden, output_dim]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        self.norm_weights = torch.nn.ParameterList()
        self.norm_biases = torch.nn.ParameterList()
        self.num_normed = len(hidden) + (1 if simnorm_dim else 0)
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            weight = torch.empty(members, fan_in, fan_out)
            torch.nn.init.trunc_normal_(weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD,
                                        generator=generator)
            if zero_output and i == len(sizes) - 2:
                weight.zero_()
            self.weights.append(torch.nn.Parameter(weight))
            self.biases.append(torch.nn.Parameter(torch.zeros(members, 1, fan_out)))
            if i < self.num_normed:
                self.norm_weights.append(torch.nn.Parameter(torch.ones(members, 1, fan_out)))
                self.norm_biases.append(torch.nn.Parameter(torch.zeros(members, 1, fan_out)))

    def forward(self, x: torch.Tensor, members: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Evaluate all members, or those indexed by ``members`` (long tensor)."""
        count = self.members if members is None else len(members)
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(count, *x.shape)
        last = len(self.weights) - 1
        for i in range(len(self.weights)):
            weight, bias = self.weights[i], self.biases[i]
            if members is not None:
                weight, bias = weight[members], bias[members]
            x = torch.baddbmm(bias, x, weight)
            if i == 0 and self.dropout > 0.0 and self.training:
                x = F.dropout(x, self.dropout, training=True)
            if i < self.num_normed:
                gain, shift = self.norm_weights[i], self.norm_biases[i]
                if members is not None:
                    gain, shift = gain[members], shift[members]
                x = F.layer_norm(x, x.shape[-1:]) * gain + shift
                x = simnorm(x, self.simnorm_dim) if i == last else self.activation(x)
        return x


class SingleMLP(NormedEnsembleMLP):
    """One :class:`NormedEnsembleMLP` member on inputs of any leading shape: ``[..., in]`` ->
    ``[..., out]``."""

    def __init__(self, input_dim: int, hidden: Sequence[int], output_dim: int,
                 simnorm_dim: int = 0, zero_output: bool = False,
                 generator: Optional[torch.Generator] = None, activation: str = "mish"
                 ) -> None:
        super().__init__(1, input_dim, hidden, output_dim, simnorm_dim, 0.0, zero_output,
                         generator, activation)

    def forward(self, x: torch.Tensor, members: Optional[torch.Tensor] = None) -> torch.Tensor:
        lead = x.shape[:-1]
        out = super().forward(x.reshape(1, -1, x.shape[-1]))
        return out.reshape(*lead, out.shape[-1])


class RunningScale(torch.nn.Module):
    """EMA of the 5-95 % spread of a batch of values (at least 1): the policy loss divides Q by
    it, so the entropy weight means the same whatever the scale of the returns."""

    def __init__(self, tau: float) -> None:
        super().__init__()
        self.tau = tau
        self.register_buffer("value", torch.ones(()))

    def update(self, x: torch.Tensor) -> None:
        """Move the scale toward the spread of ``x`` (any shape)."""
        q = torch.quantile(x.detach().reshape(-1).float(),
                           torch.tensor(PERCENTILES, device=x.device))
        self.value.lerp_(torch.clamp(q[1] - q[0], min=MIN_SCALE).to(self.value.dtype), self.tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.value
