"""Residual dynamics: an analytical nominal model plus a learned ensemble correction."""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Protocol, Tuple

import numpy as np
import torch

from mbrl_ros.core.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from mbrl_ros.core.dynamics_model import (DynamicsModel, ProgressCallback, as_model_input,
                                          set_operating_point,
                                          broadcast_inputs)
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.ensemble_kernel import MeanStepKernel
from mbrl_ros.core.model_training import FitReport, fit_dynamics
from mbrl_ros.core.types import TransitionBatch


class NominalModel(Protocol):
    """A batched analytical one-step model (e.g. ``mbrl_ros.robots.analytical``).

    ``step(state [N, S], action [N, A]) -> next_state [N, S]`` on torch tensors. An optional
    JSON-friendly ``descriptor`` attribute names it in residual checkpoints.
    """

    def step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor: ...


def nominal_descriptor(nominal: Any) -> Any:
    """The nominal's ``descriptor`` attribute, or its class path when it has none."""
    descriptor = getattr(nominal, "descriptor", None)
    if descriptor is None:
        cls = type(nominal)
        return {"class": f"{cls.__module__}.{cls.__qualname__}"}
    return descriptor


def same_nominal(stored: Any, given: Any) -> bool:
    """Whether two nominal descriptors describe the same model: same class, and numbers in the
    fields both name equal to 1e-6 (an old checkpoint without a descriptor passes)."""
    if not isinstance(stored, Mapping) or not isinstance(given, Mapping):
        return True
    if stored.get("class") != given.get("class"):
        return False
    for key in set(stored) & set(given):
        try:
            a = np.asarray(stored[key], dtype=float)
            b = np.asarray(given[key], dtype=float)
        except (TypeError, ValueError):
            if stored[key] != given[key]:
                return False
            continue
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-6, atol=1e-9):
            return False
    return True


class ResidualDynamics(DynamicsModel):
    """``next_state = f_nominal(state, action) + delta_phi(state, action)``.

    The ensemble learns the residual ``next_state - f_nominal(state, action)`` (angle dims
    wrapped), so with little data the prediction stays close to the analytical model.
    """

    def __init__(self, nominal: NominalModel, ensemble: ProbabilisticEnsemble,
                 descriptor: Any = None) -> None:
        if not callable(getattr(nominal, "step", None)):
            raise ValueError("nominal must have a step(state, action) -> next_state method")
        self.nominal = nominal
        self.ensemble_model = ensemble
        self.descriptor = nominal_descriptor(nominal) if descriptor is None else descriptor
        """JSON-friendly description of the nominal model, stored in checkpoints."""

    @classmethod
    def create(cls, nominal: NominalModel, state_dim: int, action_dim: int,
               config: EnsembleConfig = EnsembleConfig(), device: torch.device | str = "cpu",
               seed: int = 0, descriptor: Any = None) -> "ResidualDynamics":
        """Build a residual model with a fresh ensemble."""
        return cls(nominal, ProbabilisticEnsemble(state_dim, action_dim, config, device, seed),
                   descriptor)

    # ----------------------------------------------------------------- interface attributes
    @property
    def state_dim(self) -> int:
        return self.ensemble_model.state_dim

    @property
    def action_dim(self) -> int:
        return self.ensemble_model.action_dim

    @property
    def device(self) -> torch.device:
        return self.ensemble_model.device

    @property
    def num_members(self) -> int:
        """Members ``predict`` returns (elites or all, see :attr:`use_elites`)."""
        return self.ensemble_model.num_members

    @property
    def use_elites(self) -> bool:
        """Whether ``predict`` uses only the elite members."""
        return self.ensemble_model.use_elites

    @use_elites.setter
    def use_elites(self, value: bool) -> None:
        self.ensemble_model.use_elites = bool(value)

    @property
    def ensemble(self) -> ProbabilisticEnsemble:
        """The learned residual network."""
        return self.ensemble_model

    @property
    def config(self) -> EnsembleConfig:
        return self.ensemble_model.config

    # ------------------------------------------------------------------------ interface
    def set_operating_point(self, positions: Optional[np.ndarray]) -> None:
        """Pass the robot's current joint positions to a nominal model that linearises about
        an operating point (the planner, once per tick); None: each sample at its own."""
        set_operating_point(self.nominal, positions)

    def nominal_step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Nominal prediction for ``state [..., S]``, ``action [..., A]`` -> ``[..., S]``."""
        lead = state.shape[:-1]
        next_state = self.nominal.step(state.reshape(-1, self.state_dim),
                                       action.reshape(-1, self.action_dim))
        if tuple(next_state.shape) != (int(np.prod(lead)), self.state_dim):
            raise ValueError(f"nominal.step returned shape {tuple(next_state.shape)}, "
                             f"expected {(int(np.prod(lead)), self.state_dim)}")
        return next_state.to(state.dtype).reshape(*lead, self.state_dim)

    def predict(self, state: torch.Tensor, action: torch.Tensor, grad: bool = False,
                use_elites: Optional[bool] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Next-state ``(mean, var)``, each ``[E, N, state_dim]`` (see
        :meth:`ProbabilisticEnsemble.predict`); the variance is that of the residual."""
        ensemble = self.ensemble_model
        elites = ensemble.use_elites if use_elites is None else use_elites
        members = ensemble.config.num_elites if elites else ensemble.config.num_members
        state, action = as_model_input(state, self.device), as_model_input(action, self.device)
        shared = state.dim() == 2 and action.dim() == 2
        with torch.set_grad_enabled(grad):
            if shared:  # one nominal evaluation serves every member
                base = self.nominal_step(state, action).unsqueeze(0).expand(members, -1, -1)
            state, action = broadcast_inputs(state, action, members, self.state_dim,
                                             self.action_dim)
            if not shared:
                base = self.nominal_step(state, action)
            delta_mean, delta_var = ensemble.predict_delta(state, action, elites)
            return ensemble.compose(base, delta_mean), delta_var

    def mean_kernel(self, dtype: torch.dtype = torch.float32,
                    chunk_rows: int = 0) -> MeanStepKernel:
        """The planners' fused next-state-mean step: the nominal prediction plus the
        residual ensemble's mean (see :meth:`ProbabilisticEnsemble.mean_kernel`)."""
        return self.ensemble_model.mean_kernel(self.nominal_step, dtype, chunk_rows)

    def disagreement(self, mean: torch.Tensor) -> torch.Tensor:
        """See :meth:`ProbabilisticEnsemble.disagreement` (units of the residual's std)."""
        return self.ensemble_model.disagreement(mean)

    def training_targets(self, batch: TransitionBatch) -> np.ndarray:
        """``[N, S]`` residual targets ``next_state - f_nominal(state, action)`` (wrapped)."""
        device = self.device
        self.set_operating_point(None)  # every transition linearised at its own state
        with torch.no_grad():
            state = torch.as_tensor(batch.state, device=device)
            action = torch.as_tensor(batch.action, device=device)
            next_state = torch.as_tensor(batch.next_state, device=device)
            base = self.nominal_step(state, action)
            return self.ensemble_model.difference(next_state, base).cpu().numpy()

    def loss(self, batch: TransitionBatch) -> torch.Tensor:
        """Scalar mean Gaussian NLL of the residual targets over all members."""
        return self.ensemble_model.target_loss(batch, self.training_targets(batch))

    def fit(self, batch: TransitionBatch, seed: int = 0,
            progress: Optional[ProgressCallback] = None,
            config: Optional[EnsembleConfig] = None) -> FitReport:
        """Train the residual; see :func:`mbrl_ros.core.model_training.fit_dynamics`."""
        return fit_dynamics(self, batch, config=config, seed=seed, progress=progress)

    # ----------------------------------------------------------------------- checkpoints
    def save(self, path: str, metadata: Optional[Mapping[str, Any]] = None) -> str:
        """Write a checkpoint (class ``ResidualDynamics``, header ``nominal`` = descriptor)."""
        tensors, header = self.ensemble_model.checkpoint_payload()
        header["nominal"] = self.descriptor
        header["metadata"] = dict(metadata or {})
        return save_checkpoint(path, type(self).__name__, tensors, header)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: Optional[torch.device | str] = None,
                        nominal: Optional[NominalModel] = None,
                        nominal_factory: Optional[Callable[[Any], NominalModel]] = None
                        ) -> "ResidualDynamics":
        """Rebuild from a loaded checkpoint; needs ``nominal`` or ``nominal_factory``.

        Raises:
            CheckpointError: wrong class, no way to build the nominal model, or a ``nominal``
                that differs from the one the checkpoint was trained on.
        """
        header: Dict[str, Any] = checkpoint.require_class(cls.__name__)
        descriptor = header.get("nominal")
        if nominal is not None and not same_nominal(descriptor, nominal_descriptor(nominal)):
            raise CheckpointError(
                f"the checkpoint was trained on the nominal model {descriptor!r}, not on this "
                f"one {nominal_descriptor(nominal)!r}: the trainer and the planner must use the "
                "same model settings (command mode, servo gains, model period)")
        if nominal is None:
            if nominal_factory is None:
                raise CheckpointError(f"residual checkpoint needs its nominal model "
                                      f"{descriptor!r}: pass nominal= or nominal_factory=")
            nominal = nominal_factory(descriptor)
        ensemble = ProbabilisticEnsemble.from_payload(checkpoint.tensors, header, device)
        return cls(nominal, ensemble, descriptor)

    @classmethod
    def load(cls, path: str, expected_sha256: Optional[str] = None,
             device: Optional[torch.device | str] = None, **kwargs: Any) -> "ResidualDynamics":
        """Read a checkpoint; keyword args ``nominal`` / ``nominal_factory`` as in
        :meth:`from_checkpoint`."""
        return cls.from_checkpoint(load_checkpoint(path, expected_sha256), device,
                                   kwargs.get("nominal"), kwargs.get("nominal_factory"))
