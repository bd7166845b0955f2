"""Probabilistic ensemble of MLPs predicting the (normalised) state delta, PETS-style."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from mbrl_ros.core.checkpoint import CheckpointError, PayloadCheckpoints
from mbrl_ros.core.dynamics_model import (DynamicsModel, ProgressCallback, as_model_input,
                                          broadcast_inputs, encode_angles,
                                          relative_actions, relative_angle_mask,
                                          wrapped_compose, wrapped_difference)
from mbrl_ros.core.ensemble_config import ARCHITECTURE_FIELDS, EnsembleConfig
from mbrl_ros.core.ensemble_kernel import BaseFn, EnsembleTensors, MeanStepKernel
from mbrl_ros.core.ensemble_layers import EnsembleMLP
from mbrl_ros.core.model_training import FitReport, fit_dynamics
from mbrl_ros.core.normalizer import Normalizer
from mbrl_ros.core.types import TransitionBatch

__all__ = ["ARCHITECTURE_FIELDS", "EnsembleConfig", "ProbabilisticEnsemble"]
"""``EnsembleConfig`` and ``ARCHITECTURE_FIELDS`` live in ``ensemble_config``; re-exported."""


class ProbabilisticEnsemble(torch.nn.Module, PayloadCheckpoints, DynamicsModel):
    """Ensemble of Gaussian MLPs ``(state, action) -> next_state``.

    Each member predicts the normalised target ``delta = next_state - base`` (angle dims wrapped;
    ``base = state`` here, the nominal prediction for :class:`ResidualDynamics`) with a
    log-variance softly bounded by learned per-member limits (PETS). Inputs are the state with
    wrapping angles replaced by (sin, cos), and the action, z-scored.
    """

    def __init__(self, state_dim: int, action_dim: int,
                 config: EnsembleConfig = EnsembleConfig(),
                 device: torch.device | str = "cpu", seed: int = 0) -> None:
        torch.nn.Module.__init__(self)
        config.validate()
        if state_dim < 1 or action_dim < 1:
            raise ValueError(f"state_dim and action_dim must be >= 1, got {state_dim}, "
                             f"{action_dim}")
        if any(i >= state_dim for i in config.angle_wrap):
            raise ValueError(f"angle_wrap {config.angle_wrap} out of range for "
                             f"state_dim {state_dim}")
        if config.relative_action and (len(config.relative_action) != action_dim
                                       or max(config.relative_action) >= state_dim):
            raise ValueError(f"relative_action needs {action_dim} state indices below "
                             f"{state_dim}, got {config.relative_action}")
        self.config = config
        self._state_dim, self._action_dim = state_dim, action_dim
        self.register_buffer("relative_index", torch.tensor(
            list(config.relative_action), dtype=torch.long, device=torch.device(device)),
            persistent=False)  # the config carries it
        self._device = torch.device(device)
        self.use_elites = config.use_elites
        angle = sorted(config.angle_wrap)
        self.register_buffer("angle_index", torch.tensor(angle, dtype=torch.long,
                                                         device=self._device))
        self.register_buffer("plain_index", torch.tensor(
            [i for i in range(state_dim) if i not in angle], dtype=torch.long,
            device=self._device))
        angle_mask = torch.zeros(state_dim, dtype=torch.bool)
        angle_mask[angle] = True
        self.register_buffer("angle_mask", angle_mask.to(self._device))
        self.input_dim = state_dim + len(angle) + action_dim
        generator = torch.Generator().manual_seed(seed)
        self.net = EnsembleMLP(config.num_members, self.input_dim, config.hidden_sizes,
                               2 * state_dim, config.activation, self._device, generator)
        shape = (config.num_members, 1, state_dim)
        self.max_logvar = torch.nn.Parameter(
            torch.full(shape, config.max_logvar_init, device=self._device))
        self.min_logvar = torch.nn.Parameter(
            torch.full(shape, config.min_logvar_init, device=self._device))
        self.input_normalizer = Normalizer(self.input_dim, config.normalizer_min_std,
                                           self._device)
        self.target_normalizer = Normalizer(state_dim, config.normalizer_min_std, self._device)
        self.register_buffer("elites", torch.arange(config.num_elites, device=self._device))
        self.num_transitions = 0
        """Transitions used by the latest fit."""
        self._kernels: Dict[tuple, Tuple[tuple, MeanStepKernel]] = {}
        """:meth:`mean_kernel`'s kernels by (base, dtype, chunk rows, inference mode), each
        with the versions of the tensors it was built from."""
        self.metrics: Dict[str, float] = {}
        """Held-out metrics of the latest fit (``validation_nll``, ``validation_mse``, ...)."""

    # ----------------------------------------------------------------- interface attributes
    @property
    def state_dim(self) -> int:
        return self._state_dim

    @property
    def action_dim(self) -> int:
        return self._action_dim

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def num_members(self) -> int:
        """Members ``predict`` returns: ``num_elites`` if :attr:`use_elites`, else all."""
        return self.config.num_elites if self.use_elites else self.config.num_members

    @property
    def ensemble(self) -> "ProbabilisticEnsemble":
        """The trainable network (itself; a residual model returns its inner ensemble)."""
        return self

    # ------------------------------------------------------------------------ encodings
    def encode_inputs(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Raw network inputs ``[..., input_dim]`` from ``state [..., S]``, ``action [..., A]``."""
        if len(self.relative_index):
            action = relative_actions(action, state, self.relative_index, relative_angle_mask(
                self.relative_index, self.angle_mask))
        return encode_angles(state, action, self.angle_index, self.plain_index)

    def difference(self, target: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """``target - base`` with angle dims wrapped to [-pi, pi); ``[..., S]``."""
        return wrapped_difference(target, base, self.angle_index, self.angle_mask)

    def compose(self, base: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``base + delta`` with angle dims wrapped to [-pi, pi); ``[..., S]``."""
        return wrapped_compose(base, delta, self.angle_index, self.angle_mask)

    def _active_members(self, use_elites: Optional[bool]) -> Optional[torch.Tensor]:
        elites = self.use_elites if use_elites is None else use_elites
        return self.elites if elites else None

    def forward_normalized(self, inputs: torch.Tensor, members: Optional[torch.Tensor] = None
                           ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Network output in normalised target units.

        Args:
            inputs: ``[M, N, input_dim]`` normalised inputs.
            members: member indices (``M = len(members)``), or None for all members.

        Returns:
            ``(mean, logvar)``, each ``[M, N, state_dim]``; logvar softly bounded.
        """
        out = self.net(inputs, members)
        mean, logvar = out[..., :self._state_dim], out[..., self._state_dim:]
        max_lv = self.max_logvar if members is None else self.max_logvar[members]
        min_lv = self.min_logvar if members is None else self.min_logvar[members]
        logvar = max_lv - torch.nn.functional.softplus(max_lv - logvar)
        logvar = min_lv + torch.nn.functional.softplus(logvar - min_lv)
        return mean, logvar

    def predict_delta(self, state: torch.Tensor, action: torch.Tensor,
                      use_elites: Optional[bool] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Predicted target (delta from the base) mean and variance in raw units.

        Args: ``state [M, N, S]``, ``action [M, N, A]`` (already broadcast).
        Returns: ``(delta_mean, delta_var)``, each ``[M, N, S]``.
        """
        inputs = self.input_normalizer.normalize(self.encode_inputs(state, action))
        mean, logvar = self.forward_normalized(inputs, self._active_members(use_elites))
        std = self.target_normalizer.std
        return self.target_normalizer.denormalize(mean), torch.exp(logvar) * std * std

    def mean_kernel(self, base: Optional[BaseFn] = None, dtype: torch.dtype = torch.float32,
                    chunk_rows: int = 0) -> MeanStepKernel:
        """The planners' fused next-state-mean step over the active members (elites when
        :attr:`use_elites`), a snapshot of the current weights; ``base`` replaces the state as
        what the delta is added to (a nominal model). The same kernel (and its buffers) is
        returned until a weight, a normaliser, the elites or :attr:`use_elites` change, so a
        planner may ask for it on every plan."""
        key = (base, dtype, chunk_rows, torch.is_inference_mode_enabled())
        version = (self.use_elites, *((id(t), t.data_ptr(), t._version)
                                      for t in (*self.parameters(), *self.buffers())))
        cached = self._kernels.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        kernel = self._build_kernel(base, dtype, chunk_rows)
        self._kernels[key] = (version, kernel)
        return kernel

    def _build_kernel(self, base: Optional[BaseFn], dtype: torch.dtype,
                      chunk_rows: int) -> MeanStepKernel:
        members = self._active_members(None)
        weights, biases = list(self.net.weights), list(self.net.biases)
        if members is not None:
            weights, biases = [w[members] for w in weights], [b[members] for b in biases]
        tensors = EnsembleTensors(
            weights=weights, biases=biases, input_mean=self.input_normalizer.mean,
            input_std=self.input_normalizer.std, target_mean=self.target_normalizer.mean,
            target_std=self.target_normalizer.std, angle_index=self.angle_index,
            plain_index=self.plain_index, relative_index=self.relative_index,
            activation=self.config.activation)
        with torch.no_grad():
            return MeanStepKernel(tensors, base, dtype, chunk_rows)

    # ------------------------------------------------------------------------ interface
    def predict(self, state: torch.Tensor, action: torch.Tensor, grad: bool = False,
                use_elites: Optional[bool] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Next-state ``(mean, var)``, each ``[E, N, state_dim]``.

        ``state`` is ``[E, N, S]`` or ``[N, S]``, ``action`` ``[E, N, A]`` or ``[N, A]``, where
        ``E`` is :attr:`num_members` (or the elites/all members when ``use_elites`` is given).
        Wrapping angles of the mean are wrapped to [-pi, pi). Inputs are cast to float32 on
        :attr:`device` (free when they already are).
        """
        elites = self.use_elites if use_elites is None else use_elites
        members = self.config.num_elites if elites else self.config.num_members
        state, action = as_model_input(state, self._device), as_model_input(action, self._device)
        state, action = broadcast_inputs(state, action, members, self._state_dim,
                                         self._action_dim)
        with torch.set_grad_enabled(grad):
            delta_mean, delta_var = self.predict_delta(state, action, elites)
            return self.compose(state, delta_mean), delta_var

    def disagreement(self, mean: torch.Tensor) -> torch.Tensor:
        """Mean over state dims of the across-member variance of ``mean [E, ..., S]``,
        in units of the training-target std (angle dims wrapped). Returns ``[...]``."""
        spread = self.difference(mean, mean[:1])
        variance = spread.var(dim=0, unbiased=False)
        return (variance / self.target_normalizer.std.square()).mean(dim=-1)

    def training_targets(self, batch: TransitionBatch) -> np.ndarray:
        """``[N, S]`` raw training targets: the wrapped delta ``next_state - state``."""
        with torch.no_grad():
            state = torch.as_tensor(batch.state, device=self._device)
            next_state = torch.as_tensor(batch.next_state, device=self._device)
            return self.difference(next_state, state).cpu().numpy()

    def member_losses(self, inputs: torch.Tensor, targets: torch.Tensor,
                      members: Optional[torch.Tensor] = None
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-member Gaussian NLL and MSE, normalised units.

        Args: ``inputs [M, N, input_dim]``, ``targets [M, N, S]`` (both normalised).
        Returns: ``(nll [M], mse [M])``, each averaged over rows and state dims
        (the NLL omits the constant ``0.5 log 2 pi``).
        """
        mean, logvar = self.forward_normalized(inputs, members)
        sq_err = (mean - targets).square()
        nll = 0.5 * (sq_err * torch.exp(-logvar) + logvar).mean(dim=(1, 2))
        return nll, sq_err.mean(dim=(1, 2))

    def logvar_bound_penalty(self) -> torch.Tensor:
        """Scalar that keeps the learned log-variance bounds tight (PETS)."""
        return self.config.logvar_bound_coef * (self.max_logvar.sum() - self.min_logvar.sum())

    def loss(self, batch: TransitionBatch) -> torch.Tensor:
        """Scalar mean Gaussian NLL of ``batch`` over all members (normalised units)."""
        return self.target_loss(batch, self.training_targets(batch))

    def target_loss(self, batch: TransitionBatch, targets: np.ndarray) -> torch.Tensor:
        """Scalar mean Gaussian NLL of raw ``targets [N, S]`` given ``batch``'s inputs."""
        state = torch.as_tensor(batch.state, device=self._device)
        action = torch.as_tensor(batch.action, device=self._device)
        targets = torch.as_tensor(targets, dtype=torch.float32, device=self._device)
        inputs = self.input_normalizer.normalize(self.encode_inputs(state, action))
        members = self.config.num_members
        nll, _ = self.member_losses(inputs.unsqueeze(0).expand(members, -1, -1),
                                    self.target_normalizer.normalize(targets)
                                    .unsqueeze(0).expand(members, -1, -1))
        return nll.mean()

    def fit(self, batch: TransitionBatch, seed: int = 0,
            progress: Optional[ProgressCallback] = None,
            config: Optional[EnsembleConfig] = None) -> FitReport:
        """Train on ``batch``; see :func:`mbrl_ros.core.model_training.fit_dynamics`."""
        return fit_dynamics(self, batch, config=config, seed=seed, progress=progress)

    # ----------------------------------------------------------------------- checkpoints
    def checkpoint_payload(self) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        """``(tensors, header)`` describing this ensemble (used by ``save`` and residuals)."""
        header = {
            "config": self.config.to_dict(), "state_dim": self._state_dim,
            "action_dim": self._action_dim, "num_transitions": int(self.num_transitions),
            "metrics": dict(self.metrics), "elites": self.elites.tolist(),
            "input_normalizer": self.input_normalizer.stats(),
            "target_normalizer": self.target_normalizer.stats(),
        }
        return dict(self.state_dict()), header

    @classmethod
    def from_payload(cls, tensors: Mapping[str, torch.Tensor], header: Mapping[str, Any],
                     device: Optional[torch.device | str] = None) -> "ProbabilisticEnsemble":
        """Rebuild from :meth:`checkpoint_payload` output. Raises CheckpointError."""
        try:
            config = EnsembleConfig.from_dict(header["config"])
            model = cls(int(header["state_dim"]), int(header["action_dim"]), config,
                        device=device or "cpu")
            model.load_state_dict(dict(tensors), strict=True)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint does not describe a valid ensemble: {exc}") \
                from exc
        model.num_transitions = int(header.get("num_transitions", 0))
        model.metrics = dict(header.get("metrics", {}))
        return model
