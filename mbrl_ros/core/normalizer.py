"""Per-feature affine normalisation (z-scoring) fitted on data, stored as torch buffers."""

from __future__ import annotations

from typing import Dict

import torch


class Normalizer(torch.nn.Module):
    """``normalize(x) = (x - mean) / std`` per feature.

    Features whose std is below ``min_std`` (constant features) get std 1, so they are only
    centred instead of being blown up.

    Until :meth:`fit` is called it is the identity (mean 0, std 1).
    """

    def __init__(self, size: int, min_std: float, device: torch.device | str = "cpu") -> None:
        super().__init__()
        if size <= 0:
            raise ValueError(f"Normalizer size must be positive, got {size}")
        if not min_std > 0.0:
            raise ValueError(f"Normalizer min_std must be positive, got {min_std}")
        self.size = size
        self.min_std = float(min_std)
        self.register_buffer("mean", torch.zeros(size, device=device))
        self.register_buffer("std", torch.ones(size, device=device))

    def fit(self, data: torch.Tensor) -> None:
        """Set mean/std from ``data: [N, size]`` (finite values only, N >= 1)."""
        if data.dim() != 2 or data.shape[1] != self.size:
            raise ValueError(f"Normalizer expects [N, {self.size}], got {tuple(data.shape)}")
        if data.shape[0] == 0 or not torch.isfinite(data).all():
            raise ValueError("Normalizer.fit needs at least one row of finite data")
        data = data.to(self.mean.device, torch.float64)
        self.mean.copy_(data.mean(0).to(self.mean.dtype))
        std = data.std(0, unbiased=False) if data.shape[0] > 1 else torch.zeros_like(data[0])
        std = torch.where(std < self.min_std, torch.ones_like(std), std)
        self.std.copy_(std.to(self.std.dtype))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [..., size]`` -> normalised ``[..., size]``."""
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`, ``[..., size]``."""
        return x * self.std + self.mean

    def stats(self) -> Dict[str, list]:
        """Mean and std as plain lists (for JSON headers and logs)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}
