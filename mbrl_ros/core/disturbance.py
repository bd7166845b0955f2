"""Offset-free MPC: an integrating disturbance estimate added to the model's predictions.

A learned model from a minute of data is biased somewhere, and a model-based controller
settles where its *model* says the goal is reached, which is off by that bias (a steady-state
error of 1-2 cm for the arm after 60 s of data). The textbook remedy (offset-free MPC, e.g.
Pannocchia & Rawlings 2003) adds a constant disturbance ``d`` to every one-step prediction and
estimates it from the last prediction error:

    d <- clip(d + gain * (x_measured - x_predicted), -max_offset, max_offset)

so the planner acts on the model *plus* what it has been getting wrong lately. ``gain`` in
(0, 1] trades noise rejection for speed; the estimate is dropped whenever the comparison is
not valid (a missed tick, a new model, an episode reset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

from mbrl_ros.core.dynamics_model import wrap_angle


@dataclass(frozen=True)
class DisturbanceConfig:
    """Settings of the offset-free disturbance estimate (``gain`` 0 disables it)."""

    gain: float = 0.0
    """Fraction of each one-step prediction error added to the estimate, in [0, 1]."""
    max_offset: Tuple[float, ...] = (0.05,)
    """Bound on each state dim's estimate (state units): one value or one per state dim."""
    period_tolerance: float = 0.5
    """An update needs the time since the last plan within (1 +- this) x the model period."""
    jump_threshold: float = 0.3
    """A prediction error larger than this in any state dim (state units) is an event, not a
    model bias (a reset, a push, the safety gate's fallback): the estimate restarts at zero."""

    def validate(self) -> "DisturbanceConfig":
        """Raise ValueError on out-of-range settings; return self."""
        if not 0.0 <= self.gain <= 1.0:
            raise ValueError(f"DisturbanceConfig.gain must be in [0, 1], got {self.gain}")
        if not self.max_offset or any(not v >= 0.0 for v in self.max_offset):
            raise ValueError("DisturbanceConfig.max_offset needs values >= 0, "
                             f"got {self.max_offset}")
        if not self.jump_threshold > 0.0:
            raise ValueError("DisturbanceConfig.jump_threshold must be > 0, "
                             f"got {self.jump_threshold}")
        if not 0.0 < self.period_tolerance < 1.0:
            raise ValueError("DisturbanceConfig.period_tolerance must be in (0, 1), "
                             f"got {self.period_tolerance}")
        return self

    @property
    def enabled(self) -> bool:
        """True when the estimate is in use."""
        return self.gain > 0.0


class OffsetDynamics:
    """A dynamics model whose mean predictions are shifted by a disturbance estimate.

    Same interface as the wrapped model (``predict``, sizes, device); anything else is
    delegated to it. The estimate starts at zero and is updated with :meth:`update`.
    ``angle_dims``: state dims that are wrapping angles (continuous joints), whose prediction
    errors are wrapped to ``[-pi, pi)``, so crossing ``+-pi`` is no error of a turn.
    """

    def __init__(self, model, config: DisturbanceConfig, angle_dims: Sequence[int] = ()) -> None:
        self.model = model
        self.config = config.validate()
        self.state_dim, self.action_dim = int(model.state_dim), int(model.action_dim)
        self.num_members, self.device = int(model.num_members), model.device
        bound = torch.as_tensor(config.max_offset, dtype=torch.float32, device=self.device)
        if bound.numel() not in (1, self.state_dim):
            raise ValueError(f"max_offset needs 1 or {self.state_dim} values, "
                             f"got {bound.numel()}")
        self.bound = bound.expand(self.state_dim).clone()
        self.offset = torch.zeros(self.state_dim, device=self.device)
        """[S] current disturbance estimate, added to every mean prediction."""
        self._expected: Optional[torch.Tensor] = None
        self._expected_at: Optional[float] = None
        angle_mask = torch.zeros(self.state_dim, dtype=torch.bool, device=self.device)
        angle_mask[list(angle_dims)] = True
        self._angle_mask = angle_mask if bool(angle_mask.any()) else None

    def __getattr__(self, name):
        # only reached for attributes not set above: delegate to the wrapped model
        return getattr(self.__dict__["model"], name)

    def predict(self, state: torch.Tensor, action: torch.Tensor, **kwargs):
        """The wrapped model's ``(mean, var)`` with ``mean + offset`` (``kwargs``, e.g.
        ``grad``, go to the wrapped model)."""
        mean, var = self.model.predict(state, action, **kwargs)
        return mean + self.offset, var

    def reset(self) -> None:
        """Forget the estimate and the pending prediction."""
        self.offset.zero_()
        self._expected, self._expected_at = None, None

    def expect(self, predicted_next: torch.Tensor, stamp: float) -> None:
        """Remember the plan's predicted next state [S] (made at time ``stamp`` [s])."""
        self._expected = predicted_next.detach().to(self.device, torch.float32).reshape(-1)
        self._expected_at = float(stamp)

    def update(self, measured: torch.Tensor, stamp: float, period_s: float) -> bool:
        """Fold in the error of the last prediction if it is one model period old.

        Returns whether the estimate changed. A non-finite error or one above
        ``jump_threshold`` resets the estimate.
        """
        expected, expected_at = self._expected, self._expected_at
        self._expected = None
        if expected is None or expected_at is None:
            return False
        elapsed = float(stamp) - expected_at
        if abs(elapsed - period_s) > self.config.period_tolerance * period_s:
            return False
        error = measured.to(self.device, torch.float32).reshape(-1) - expected
        if self._angle_mask is not None:
            error = torch.where(self._angle_mask, wrap_angle(error), error)
        if not bool(torch.isfinite(error).all()) or \
                float(error.abs().max()) > self.config.jump_threshold:
            self.reset()
            return False
        self.offset = torch.maximum(torch.minimum(self.offset + self.config.gain * error,
                                                  self.bound), -self.bound)
        return True


__all__ = ["DisturbanceConfig", "OffsetDynamics"]
