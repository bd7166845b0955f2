"""Gaussian-process dynamics for the tiny-data regime (PILCO's family), fitted with gpytorch.

One independent GP per state dimension (batched with gpytorch's batch shape, ARD RBF or
Matern-5/2 kernel, zero mean) predicts the state delta ``next_state - state`` (angle dims
wrapped) from the state (wrapping angles as sin / cos, the encoding of the ensemble) and the
action; inputs and targets are z-scored. Up to ``max_exact_points`` transitions the GP is
exact (hyperparameters by maximising the marginal likelihood); beyond, a sparse variational
GP (SVGP, ``num_inducing`` learned inducing points, minibatch ELBO) keeps the fit and the
predictions linear in the data.

How the planner sees the GP's uncertainty: as ``num_members`` *posterior function samples*.
The planner and the safety gate judge a plan by the spread of its members' next-state means
(``model_disagreement``), and every rollout step only asks the members for their means. So
each member here is one fixed, smooth function drawn from the GP posterior by pathwise
conditioning (Wilson et al. 2020, "Efficiently sampling functions from Gaussian process
posteriors"): ``f_e(x) = prior_e(x) + k(x, Z) c_e``, where ``prior_e`` is a prior draw in
random Fourier features (``num_random_features``) and ``c_e`` conditions it on the data
(exact: ``Z = X``, ``c_e = (K + noise I)^-1 (y - prior_e(X) - eps_e)``; sparse: ``Z`` the
inducing points, ``c_e = K_ZZ^-1 (u_e - prior_e(Z))`` with ``u_e ~ q(u)``). A member is a
deterministic function, so a trajectory through it is consistent over the horizon (the
trajectory sampling of PETS with fixed per-member functions instead of per-step noise), the
members' mean is the GP mean and their spread is the GP's posterior variance: near the data
they agree, away from it they fan out to the prior, and the planner's disagreement penalty
and the gate see exactly that. The draws are fixed between fits (redrawn by each fit from its
seed), so planning is deterministic for a fitted model. ``predict`` returns, as each member's
variance, the learned observation noise (aleatoric). :meth:`GPDynamics.posterior` gives the
analytic posterior mean and variance for tools and tests.

The model has no fused ``mean_kernel``: the planner's rollouts call :meth:`GPDynamics.predict`
(see ``mbrl_ros.core.planning.rollout.mean_kernel``). Cost per step is ``O(R * M)`` kernel
evaluations per output dimension for ``R`` rows and ``M`` training (or inducing) points.
Checkpoints (:meth:`GPDynamics.save` / :meth:`GPDynamics.load`, class ``"GPDynamics"`` in
:mod:`mbrl_ros.core.checkpoint`'s format) hold the prediction tensors themselves (support
points, conditioning weights, random features and prior weights of every member, Cholesky
factors, normalisers) and the float64 hyperparameters a warm-started fit continues from, so a
loaded model predicts exactly what the saved one did, with the same member draws.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import gpytorch
import numpy as np
import torch

from mbrl_ros.core.checkpoint import CheckpointError, PayloadCheckpoints
from mbrl_ros.core.dynamics_model import (ProgressCallback, as_model_input, broadcast_inputs,
                                          encode_angles, wrapped_compose, wrapped_difference)
from mbrl_ros.core.gp_dynamics_config import GPDynamicsConfig
from mbrl_ros.core.normalizer import Normalizer
from mbrl_ros.core.types import TransitionBatch

__all__ = ["GPDynamics", "GPDynamicsConfig", "GPFitReport", "fit_gp_dynamics"]

logger = logging.getLogger(__name__)

FIT_DTYPE = torch.float64
"""Precision of the fit and of the posterior's linear algebra (predictions run in float32)."""
MATERN_NU = 2.5
"""Smoothness of the "matern52" kernel."""
SQRT5 = math.sqrt(5.0)
"""Matern-5/2 constant."""
MIN_FIT_POINTS = 2
"""A fit needs at least this many finite transitions."""
ARCHITECTURE_FIELDS = ("num_members", "kernel", "angle_wrap", "num_random_features")
"""Config fields a fit config must share with the model's."""
SAMPLE_TENSORS = ("support", "coeff", "mean_coeff", "factor", "root", "omega", "phase",
                  "prior_weights")
"""Fields of :class:`PosteriorSamples` stored in a checkpoint (``root``: sparse GP only)."""
HYPER_FIELDS = ("lengthscale", "outputscale", "noise")
"""Fields of :class:`Hyperparameters` stored in a checkpoint."""


# --------------------------------------------------------------------------- kernel algebra
def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2`` for ``a [B, R, D]``, ``b [B, M, D]`` -> ``[B, R, M]`` (>= 0)."""
    cross = torch.baddbmm(b.square().sum(-1).unsqueeze(1), a, b.transpose(1, 2), alpha=-2.0)
    return (cross + a.square().sum(-1).unsqueeze(-1)).clamp_min_(0.0)


def kernel_values(kind: str, sq_dist: torch.Tensor) -> torch.Tensor:
    """Unit-scale stationary kernel of lengthscale-scaled squared distances (same shape);
    matches gpytorch's ``RBFKernel`` and ``MaternKernel(nu=2.5)``."""
    if kind == "rbf":
        return torch.exp(-0.5 * sq_dist)
    r = SQRT5 * torch.sqrt(sq_dist + torch.finfo(sq_dist.dtype).tiny)
    return (1.0 + r + r.square() / 3.0) * torch.exp(-r)


def _gpytorch_kernel(kind: str, input_dim: int, outputs: int) -> gpytorch.kernels.Kernel:
    shape = torch.Size([outputs])
    base = (gpytorch.kernels.RBFKernel(ard_num_dims=input_dim, batch_shape=shape)
            if kind == "rbf" else
            gpytorch.kernels.MaternKernel(nu=MATERN_NU, ard_num_dims=input_dim,
                                          batch_shape=shape))
    return gpytorch.kernels.ScaleKernel(base, batch_shape=shape)


class _ExactGP(gpytorch.models.ExactGP):
    """Batch of independent exact GPs: ``x [S, N, D]``, ``y [S, N]``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor,
                 likelihood: gpytorch.likelihoods.GaussianLikelihood,
                 kernel: gpytorch.kernels.Kernel) -> None:
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ZeroMean(batch_shape=y.shape[:1])
        self.covar_module = kernel

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x),
                                                         self.covar_module(x))


class _SparseGP(gpytorch.models.ApproximateGP):
    """Batch of independent SVGPs (whitened, learned inducing points ``[S, M, D]``)."""

    def __init__(self, inducing: torch.Tensor, kernel: gpytorch.kernels.Kernel) -> None:
        shape = inducing.shape[:1]
        distribution = gpytorch.variational.CholeskyVariationalDistribution(
            inducing.shape[1], batch_shape=shape)
        strategy = gpytorch.variational.VariationalStrategy(
            self, inducing, distribution, learn_inducing_locations=True)
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ZeroMean(batch_shape=shape)
        self.covar_module = kernel

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x),
                                                         self.covar_module(x))


@dataclass
class Hyperparameters:
    """Kernel hyperparameters per output dimension (standardised units)."""

    lengthscale: torch.Tensor
    """``[S, D]`` ARD lengthscales."""
    outputscale: torch.Tensor
    """``[S]`` signal variances."""
    noise: torch.Tensor
    """``[S]`` observation-noise variances."""


@dataclass
class PosteriorSamples:
    """Everything :meth:`GPDynamics.predict` needs, float32 on the model's device.

    ``S`` outputs, ``E`` members, ``M`` support points (training or inducing inputs), ``D``
    encoded inputs, ``F`` random features. Support and random frequencies are already divided
    by the lengthscales.
    """

    kind: str
    hyper: Hyperparameters
    support: torch.Tensor
    """``[S, M, D]`` scaled support points."""
    coeff: torch.Tensor
    """``[S, E, M, 1]`` each member's conditioning weights."""
    mean_coeff: torch.Tensor
    """``[S, M, 1]`` weights of the posterior mean."""
    factor: torch.Tensor
    """``[S, M, M]`` lower Cholesky factor ``L`` of ``K + noise I`` (exact) or ``K_ZZ``."""
    root: Optional[torch.Tensor]
    """``[S, M, M]`` sparse GP: the whitened variational covariance's factor ``L_v``;
    posterior variance ``outputscale - |a|^2 + |L_v^T a|^2`` with ``a = L^-1 k`` (exact: the
    last term is absent)."""
    omega: torch.Tensor
    """``[S, D, F]`` random Fourier frequencies."""
    phase: torch.Tensor
    """``[S, 1, 1, F]`` random phases."""
    prior_weights: torch.Tensor
    """``[S, E, F, 1]`` each member's prior feature weights (scale included)."""
    sparse: bool = False


@dataclass
class GPFitReport:
    """What one call of :func:`fit_gp_dynamics` did (losses per data point, standardised)."""

    sparse: bool = False
    """True when the sparse variational GP was fitted (more than ``max_exact_points``)."""
    iterations_run: int = 0
    stopped_early: bool = False
    loss: List[float] = field(default_factory=list)
    """Per step: negative marginal log likelihood (exact) or ELBO (sparse) per point, summed
    over output dimensions."""
    num_train: int = 0
    num_dropped: int = 0
    """Rows dropped because a field or the target was not finite."""
    train_rmse: float = float("nan")
    """RMSE of the posterior mean on the training data (standardised units)."""
    lengthscale: List[List[float]] = field(default_factory=list)
    noise: List[float] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> Dict[str, Any]:
        """Plain dict (JSON-friendly)."""
        return dict(self.__dict__)


# ------------------------------------------------------------------------------ the model
class GPDynamics(PayloadCheckpoints):
    """GP dynamics ``(state, action) -> next_state`` exposed as ``num_members`` posterior
    function samples (the planner's duck-typed dynamics interface, see module docstring)."""

    def __init__(self, state_dim: int, action_dim: int,
                 config: GPDynamicsConfig = GPDynamicsConfig(),
                 device: torch.device | str = "cpu") -> None:
        config.validate()
        if state_dim < 1 or action_dim < 1:
            raise ValueError(f"state_dim and action_dim must be >= 1, got {state_dim}, "
                             f"{action_dim}")
        if any(i >= state_dim for i in config.angle_wrap):
            raise ValueError(f"angle_wrap {config.angle_wrap} out of range for "
                             f"state_dim {state_dim}")
        self.config = config
        self._state_dim, self._action_dim = state_dim, action_dim
        self._device = torch.device(device)
        angle = sorted(config.angle_wrap)
        self.angle_index = torch.tensor(angle, dtype=torch.long, device=self._device)
        self.plain_index = torch.tensor([i for i in range(state_dim) if i not in angle],
                                        dtype=torch.long, device=self._device)
        self.angle_mask = torch.zeros(state_dim, dtype=torch.bool, device=self._device)
        self.angle_mask[angle] = True
        self.input_dim = state_dim + len(angle) + action_dim
        self.input_normalizer = Normalizer(self.input_dim, config.normalizer_min_std,
                                           self._device)
        self.target_normalizer = Normalizer(state_dim, config.normalizer_min_std, self._device)
        self.samples: Optional[PosteriorSamples] = None
        """The fitted posterior and its member draws (None until the first fit)."""
        self.hyper: Optional[Hyperparameters] = None
        """The latest fit's hyperparameters (float64, CPU; warm start of the next fit)."""
        self.num_transitions = 0
        self.metrics: Dict[str, float] = {}
        """Summary of the latest fit (``train_rmse``, ``final_loss``, ``iterations_run``,
        ``sparse``), stored in checkpoints."""

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
        """Posterior function samples ``predict`` returns (the leading ``E`` axis)."""
        return self.config.num_members

    @property
    def fitted(self) -> bool:
        return self.samples is not None

    # ------------------------------------------------------------------------ encodings
    def encode_inputs(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Raw GP inputs ``[..., input_dim]``: plain state dims, sin / cos of angle dims,
        action (the ensemble's encoding)."""
        return encode_angles(state, action, self.angle_index, self.plain_index)

    def difference(self, target: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """``target - base`` with angle dims wrapped to [-pi, pi)."""
        return wrapped_difference(target, base, self.angle_index, self.angle_mask)

    def compose(self, base: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``base + delta`` with angle dims wrapped to [-pi, pi)."""
        return wrapped_compose(base, delta, self.angle_index, self.angle_mask)

    def training_targets(self, batch: TransitionBatch) -> np.ndarray:
        """``[N, S]`` raw targets: the wrapped delta ``next_state - state``."""
        state = torch.as_tensor(batch.state, dtype=torch.float32)
        next_state = torch.as_tensor(batch.next_state, dtype=torch.float32)
        return self.difference(next_state.to(self._device),
                               state.to(self._device)).cpu().numpy()

    # ------------------------------------------------------------------------ prediction
    def _require_samples(self) -> PosteriorSamples:
        if self.samples is None:
            raise RuntimeError("GPDynamics has not been fitted yet (call fit first)")
        return self.samples

    def member_functions(self, inputs: torch.Tensor) -> torch.Tensor:
        """Every member's normalised delta at normalised inputs ``[E, R, D]`` -> ``[E, R, S]``."""
        post = self._require_samples()
        outputs, members = post.support.shape[0], inputs.shape[0]
        inv_length = (1.0 / post.hyper.lengthscale)[:, None, None, :]  # [S, 1, 1, D]
        scaled = (inputs.unsqueeze(0) * inv_length).reshape(outputs, -1, inputs.shape[-1])
        cross = kernel_values(post.kind, squared_distance(scaled, post.support))
        cross = (cross * post.hyper.outputscale[:, None, None]).view(
            outputs, members, inputs.shape[1], -1)  # [S, E, R, M]
        update = torch.matmul(cross, post.coeff)  # [S, E, R, 1]
        features = torch.cos(torch.matmul(inputs.unsqueeze(0), post.omega.unsqueeze(1))
                             + post.phase)  # [S, E, R, F]
        prior = torch.matmul(features, post.prior_weights)  # [S, E, R, 1]
        return (update + prior).squeeze(-1).permute(1, 2, 0)

    def predict(self, state: torch.Tensor, action: torch.Tensor,
                grad: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Next-state ``(mean, var)``, each ``[E, N, S]``: member ``e``'s function sample and
        the observation-noise variance (raw units). ``state [E, N, S]`` or ``[N, S]``,
        ``action [E, N, A]`` or ``[N, A]``; angle dims of the mean wrapped."""
        state, action = as_model_input(state, self._device), as_model_input(action, self._device)
        state, action = broadcast_inputs(state, action, self.num_members, self._state_dim,
                                         self._action_dim)
        post = self._require_samples()
        with torch.set_grad_enabled(grad):
            inputs = self.input_normalizer.normalize(self.encode_inputs(state, action))
            delta = self.target_normalizer.denormalize(self.member_functions(inputs))
            var = (post.hyper.noise * self.target_normalizer.std.square()).expand_as(delta)
            return self.compose(state, delta), var

    def posterior(self, state: torch.Tensor, action: torch.Tensor
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Analytic GP posterior of the *delta* at ``state [N, S]``, ``action [N, A]``:
        ``(mean, var)`` each ``[N, S]`` in raw units; ``var`` is the epistemic (latent
        function) variance, without the observation noise."""
        post = self._require_samples()
        state, action = as_model_input(state, self._device), as_model_input(action, self._device)
        with torch.no_grad():
            inputs = self.input_normalizer.normalize(self.encode_inputs(state, action))
            scaled = inputs.unsqueeze(0) / post.hyper.lengthscale[:, None, :]  # [S, N, D]
            cross = kernel_values(post.kind, squared_distance(scaled, post.support))
            cross = cross * post.hyper.outputscale[:, None, None]  # [S, N, M]
            mean = torch.matmul(cross, post.mean_coeff).squeeze(-1)  # [S, N]
            whitened = torch.linalg.solve_triangular(post.factor, cross.transpose(1, 2),
                                                     upper=False)  # [S, M, N]
            reduction = whitened.square().sum(1)
            if post.root is not None:
                reduction = reduction - torch.matmul(post.root.transpose(1, 2),
                                                     whitened).square().sum(1)
            var = (post.hyper.outputscale[:, None] - reduction).clamp_min(0.0)
            std = self.target_normalizer.std
            return (self.target_normalizer.denormalize(mean.T),
                    var.T * std.square())

    def disagreement(self, mean: torch.Tensor) -> torch.Tensor:
        """Mean over state dims of the across-member variance of ``mean [E, ..., S]``, in units
        of the training-target std (angle dims wrapped): the GP's posterior variance as the
        members sample it. Returns ``[...]``."""
        spread = self.difference(mean, mean[:1])
        variance = spread.var(dim=0, unbiased=False)
        return (variance / self.target_normalizer.std.square()).mean(dim=-1)

    def fit(self, batch: TransitionBatch, seed: int = 0,
            progress: Optional[ProgressCallback] = None,
            config: Optional[GPDynamicsConfig] = None) -> GPFitReport:
        """Fit on ``batch``; see :func:`fit_gp_dynamics`."""
        return fit_gp_dynamics(self, batch, config=config, seed=seed, progress=progress)

    # ----------------------------------------------------------------------- checkpoints
    def expected_shapes(self, support_points: int, sparse: bool) -> Dict[str, Tuple[int, ...]]:
        """Shapes of the stored prediction tensors for ``support_points`` (``M``) points."""
        s, e, d = self._state_dim, self.num_members, self.input_dim
        m, f = support_points, self.config.num_random_features
        shapes = {"hyper.lengthscale": (s, d), "hyper.outputscale": (s,), "hyper.noise": (s,),
                  "samples.support": (s, m, d), "samples.coeff": (s, e, m, 1),
                  "samples.mean_coeff": (s, m, 1), "samples.factor": (s, m, m),
                  "samples.omega": (s, d, f), "samples.phase": (s, 1, 1, f),
                  "samples.prior_weights": (s, e, f, 1)}
        if sparse:
            shapes["samples.root"] = (s, m, m)
        return shapes

    def checkpoint_payload(self) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        """``(tensors, header)`` describing this model: everything :meth:`predict` uses, as
        it uses it, and the float64 hyperparameters of the next warm-started fit."""
        tensors: Dict[str, torch.Tensor] = {
            "input_normalizer.mean": self.input_normalizer.mean,
            "input_normalizer.std": self.input_normalizer.std,
            "target_normalizer.mean": self.target_normalizer.mean,
            "target_normalizer.std": self.target_normalizer.std}
        layout: Dict[str, Any] = {"fitted": self.samples is not None}
        if self.samples is not None:
            post = self.samples
            layout.update(sparse=bool(post.sparse), kernel=post.kind,
                          support_points=int(post.support.shape[1]))
            for name in HYPER_FIELDS:
                tensors[f"hyper.{name}"] = getattr(post.hyper, name)
            for name in SAMPLE_TENSORS:
                value = getattr(post, name)
                if value is not None:
                    tensors[f"samples.{name}"] = value
        if self.hyper is not None:
            for name in HYPER_FIELDS:
                tensors[f"fit_hyper.{name}"] = getattr(self.hyper, name)
        header = {"config": self.config.to_dict(), "state_dim": self._state_dim,
                  "action_dim": self._action_dim, "num_transitions": int(self.num_transitions),
                  "metrics": dict(self.metrics), "layout": layout,
                  "input_normalizer": self.input_normalizer.stats(),
                  "target_normalizer": self.target_normalizer.stats()}
        return tensors, header

    @classmethod
    def from_payload(cls, tensors: Mapping[str, torch.Tensor], header: Mapping[str, Any],
                     device: Optional[torch.device | str] = None) -> "GPDynamics":
        """Rebuild from :meth:`checkpoint_payload` output. Raises CheckpointError when the
        header does not describe a GP or the tensors do not fit it."""
        try:
            config = GPDynamicsConfig.from_dict(header["config"])
            model = cls(int(header["state_dim"]), int(header["action_dim"]), config,
                        device=device or "cpu")
            layout = header["layout"]
            fitted = bool(layout["fitted"])
            sparse = bool(layout.get("sparse", False))
            expected = {f"{part}.{stat}": (size,) for part, size in (
                ("input_normalizer", model.input_dim), ("target_normalizer", model.state_dim))
                for stat in ("mean", "std")}
            if fitted:
                if layout["kernel"] != config.kernel:
                    raise ValueError(f"the samples' kernel {layout['kernel']!r} is not the "
                                     f"config's {config.kernel!r}")
                expected.update(model.expected_shapes(int(layout["support_points"]), sparse))
            if any(name.startswith("fit_hyper.") for name in tensors):
                hyper = model.expected_shapes(0, False)
                expected.update({f"fit_hyper.{name}": hyper[f"hyper.{name}"]
                                 for name in HYPER_FIELDS})
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"checkpoint does not describe a valid GP: {exc}") from exc
        if set(tensors) != set(expected):
            raise CheckpointError(f"GP checkpoint layout mismatch: tensors {sorted(tensors)}, "
                                  f"its header needs {sorted(expected)}")
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != tuple(shape):
                raise CheckpointError(f"GP checkpoint layout mismatch: {name!r} has shape "
                                      f"{tuple(tensors[name].shape)}, its header needs {shape}")
        model._restore(tensors, fitted, sparse, config.kernel)
        model.num_transitions = int(header.get("num_transitions", 0))
        model.metrics = dict(header.get("metrics", {}))
        return model

    def _restore(self, tensors: Mapping[str, torch.Tensor], fitted: bool, sparse: bool,
                 kind: str) -> None:
        """Set the normalisers, samples and fit hyperparameters from checked tensors."""
        def cast(name: str) -> torch.Tensor:
            return tensors[name].to(device=self._device, dtype=torch.float32).contiguous()

        for part in ("input_normalizer", "target_normalizer"):
            normalizer = getattr(self, part)
            normalizer.mean.copy_(cast(f"{part}.mean"))
            normalizer.std.copy_(cast(f"{part}.std"))
        if "fit_hyper.noise" in tensors:
            self.hyper = Hyperparameters(*(tensors[f"fit_hyper.{name}"].to(FIT_DTYPE).clone()
                                           for name in HYPER_FIELDS))
        if fitted:
            samples = {name: cast(f"samples.{name}") for name in SAMPLE_TENSORS
                       if f"samples.{name}" in tensors}
            samples.setdefault("root", None)
            # the solvers of the fit return it column-major; the same layout keeps the same
            # matmul path, hence bitwise the same posterior mean
            coeff = samples["mean_coeff"]  # [S, M, 1]
            samples["mean_coeff"] = torch.empty_strided(
                coeff.shape, (coeff.shape[1], 1, coeff.shape[1]), dtype=coeff.dtype,
                device=coeff.device).copy_(coeff)
            self.samples = PosteriorSamples(
                kind=kind, hyper=Hyperparameters(*(cast(f"hyper.{name}")
                                                   for name in HYPER_FIELDS)),
                sparse=sparse, **samples)


# -------------------------------------------------------------------------------- fitting
def _finite_rows(model: GPDynamics, batch: TransitionBatch
                 ) -> Tuple[TransitionBatch, np.ndarray, int]:
    finite = batch.finite_mask()
    kept = batch[finite]
    targets = model.training_targets(kept) if len(kept) else np.zeros((0, batch.state_dim))
    ok = np.isfinite(targets).all(axis=1)
    dropped = int((~finite).sum() + (~ok).sum())
    if dropped:
        logger.warning("fit_gp_dynamics: dropped %d of %d transitions with non-finite values",
                       dropped, len(batch))
    return kept[ok], targets[ok], dropped


def _init_hyper(kernel: gpytorch.kernels.ScaleKernel,
                likelihood: gpytorch.likelihoods.GaussianLikelihood,
                previous: Optional[Hyperparameters], config: GPDynamicsConfig) -> None:
    """Warm start from ``previous`` (same shapes) when enabled, else unit lengthscales and
    signal variances and ``initial_noise``."""
    if not config.warm_start or previous is None or (
            previous.lengthscale.shape != kernel.base_kernel.lengthscale.shape[::2]):
        kernel.base_kernel.lengthscale = torch.ones_like(kernel.base_kernel.lengthscale)
        kernel.outputscale = torch.ones_like(kernel.outputscale)
        likelihood.noise = torch.full_like(likelihood.noise, config.initial_noise)
        return
    kernel.base_kernel.lengthscale = previous.lengthscale.unsqueeze(1)
    kernel.outputscale = previous.outputscale
    likelihood.noise = previous.noise.clamp_min(2.0 * config.noise_floor).unsqueeze(-1)


def _read_hyper(kernel: gpytorch.kernels.ScaleKernel,
                likelihood: gpytorch.likelihoods.GaussianLikelihood) -> Hyperparameters:
    return Hyperparameters(lengthscale=kernel.base_kernel.lengthscale.detach()[:, 0].clone(),
                           outputscale=kernel.outputscale.detach().clone(),
                           noise=likelihood.noise.detach().reshape(-1).clone())


class _EarlyStop:
    """Relative-improvement patience on a (smoothed) loss."""

    def __init__(self, config: GPDynamicsConfig, smoothing: float) -> None:
        self.config, self.smoothing = config, smoothing
        self.best, self.smoothed, self.waited = math.inf, None, 0

    def __call__(self, loss: float) -> bool:
        self.smoothed = loss if self.smoothed is None else (
            self.smoothing * self.smoothed + (1.0 - self.smoothing) * loss)
        improved = not math.isfinite(self.best) or self.smoothed < (
            self.best - self.config.min_improvement * max(abs(self.best), 1.0))
        if improved:
            self.best, self.waited = self.smoothed, 0
        else:
            self.waited += 1
        return self.waited >= self.config.patience


def _optimise(step, params, config: GPDynamicsConfig, smoothing: float, report: GPFitReport,
              progress: Optional[ProgressCallback]) -> None:
    """Adam on ``step() -> loss`` for at most ``config.iterations`` steps, early stopping."""
    optimiser = torch.optim.Adam(params, lr=config.learning_rate)
    stop = _EarlyStop(config, smoothing)
    for iteration in range(config.iterations):
        optimiser.zero_grad(set_to_none=True)
        loss = step(iteration)
        loss.backward()
        optimiser.step()
        value = float(loss.detach())
        report.loss.append(value)
        report.iterations_run = iteration + 1
        if progress is not None:
            progress(iteration, {"loss": value})
        if iteration % config.log_every == 0:
            logger.info("gp fit step %d: loss %.4f", iteration, value)
        if stop(value):
            report.stopped_early = True
            break


def _fit_exact(x: torch.Tensor, y: torch.Tensor, kernel, likelihood, config, report,
               progress) -> None:
    """Marginal-likelihood fit of the exact GP (``x [N, D]``, ``y [S, N]``)."""
    outputs = y.shape[0]
    batched_x = x.unsqueeze(0).expand(outputs, -1, -1)
    gp = _ExactGP(batched_x, y, likelihood, kernel).to(FIT_DTYPE)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, gp)
    gp.train()
    likelihood.train()

    def step(_: int) -> torch.Tensor:
        return -mll(gp(batched_x), y).sum()

    _optimise(step, gp.parameters(), config, 0.0, report, progress)


def _fit_sparse(x: torch.Tensor, y: torch.Tensor, kernel, likelihood, config, report,
                progress, generator: torch.Generator) -> _SparseGP:
    """Minibatch ELBO fit of the SVGP; returns the fitted GP (its variational posterior)."""
    outputs, count = y.shape
    start = torch.randperm(count, generator=generator)[:config.num_inducing]
    inducing = x[start].unsqueeze(0).expand(outputs, -1, -1).clone()
    gp = _SparseGP(inducing, kernel).to(FIT_DTYPE)
    elbo = gpytorch.mlls.VariationalELBO(likelihood, gp, num_data=count)
    gp.train()
    likelihood.train()
    batch = min(config.batch_size, count)

    def step(_: int) -> torch.Tensor:
        rows = torch.randint(count, (batch,), generator=generator)
        inputs = x[rows].unsqueeze(0).expand(outputs, -1, -1)
        return -elbo(gp(inputs), y[:, rows]).sum()

    params = list(gp.parameters()) + list(likelihood.parameters())
    _optimise(step, params, config, config.loss_smoothing, report, progress)
    return gp


def _random_features(kind: str, hyper: Hyperparameters, members: int, features: int,
                     generator: torch.Generator) -> Tuple[torch.Tensor, ...]:
    """Frequencies ``[S, D, F]``, phases ``[S, F]`` and member weights ``[S, E, F]`` of prior
    function draws ``sqrt(2 s2 / F) sum_f w_f cos(omega_f . x + b_f)``."""
    outputs, dims = hyper.lengthscale.shape
    normal = torch.randn(outputs, dims, features, generator=generator, dtype=FIT_DTYPE)
    if kind != "rbf":  # Matern-nu spectral density: Student-t with 2 nu degrees of freedom
        shape = torch.full((outputs, 1, features), MATERN_NU, dtype=FIT_DTYPE)
        chi2_draw = 2.0 * torch._standard_gamma(shape, generator=generator)
        normal = normal * torch.sqrt(2.0 * MATERN_NU / chi2_draw)
    omega = normal / hyper.lengthscale.unsqueeze(-1)
    phase = 2.0 * math.pi * torch.rand(outputs, features, generator=generator, dtype=FIT_DTYPE)
    scale = torch.sqrt(2.0 * hyper.outputscale / features)[:, None, None]
    weights = scale * torch.randn(outputs, members, features, generator=generator,
                                  dtype=FIT_DTYPE)
    return omega, phase, weights


def _prior_at(points: torch.Tensor, omega: torch.Tensor, phase: torch.Tensor,
              weights: torch.Tensor) -> torch.Tensor:
    """Prior draws at ``points [S, M, D]`` (unscaled) -> ``[S, M, E]``."""
    features = torch.cos(torch.matmul(points, omega) + phase.unsqueeze(1))  # [S, M, F]
    return torch.matmul(features, weights.transpose(1, 2))


def _gram(kind: str, hyper: Hyperparameters, points: torch.Tensor) -> torch.Tensor:
    """``[S, M, M]`` kernel matrix at ``points [S, M, D]`` (unscaled)."""
    scaled = points / hyper.lengthscale.unsqueeze(1)
    return kernel_values(kind, squared_distance(scaled, scaled)) * hyper.outputscale[:, None,
                                                                                     None]


def _cholesky(matrix: torch.Tensor, jitter: float) -> torch.Tensor:
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype)
    factor, info = torch.linalg.cholesky_ex(matrix + jitter * eye)
    if bool((info != 0).any()):  # retry with more jitter once
        factor = torch.linalg.cholesky(matrix + 100.0 * jitter * eye)
    return factor


def _condition_exact(kind: str, hyper: Hyperparameters, x: torch.Tensor, y: torch.Tensor,
                     prior: torch.Tensor, config: GPDynamicsConfig,
                     generator: torch.Generator) -> Tuple[torch.Tensor, ...]:
    """Support, member weights ``[S, M, E]``, mean weights ``[S, M, 1]``, factor, root."""
    outputs = y.shape[0]
    points = x.unsqueeze(0).expand(outputs, -1, -1)
    gram = _gram(kind, hyper, points)
    gram = gram + torch.diag_embed(hyper.noise.unsqueeze(-1).expand(-1, x.shape[0]))
    factor = _cholesky(gram, config.jitter)
    noise = torch.randn(prior.shape, generator=generator, dtype=FIT_DTYPE) \
        * hyper.noise.sqrt()[:, None, None]
    coeff = torch.cholesky_solve(y.unsqueeze(-1) - prior - noise, factor)
    mean_coeff = torch.cholesky_solve(y.unsqueeze(-1), factor)
    return points, coeff, mean_coeff, factor, None


def _condition_sparse(kind: str, hyper: Hyperparameters, gp: _SparseGP,
                      prior_fn, members: int, config: GPDynamicsConfig,
                      generator: torch.Generator) -> Tuple[torch.Tensor, ...]:
    """As :func:`_condition_exact` for the whitened SVGP ``u = L_ZZ v``, ``v ~ q(v)``."""
    strategy = gp.variational_strategy
    points = strategy.inducing_points.detach()
    distribution = strategy._variational_distribution
    mean_v = distribution.variational_mean.detach().unsqueeze(-1)  # [S, M, 1]
    chol_v = distribution.chol_variational_covar.detach().tril()  # [S, M, M]
    factor = _cholesky(_gram(kind, hyper, points), config.jitter)
    draws = torch.randn(*mean_v.shape[:2], members, generator=generator, dtype=FIT_DTYPE)
    inducing_values = torch.matmul(factor, mean_v + torch.matmul(chol_v, draws))
    coeff = torch.cholesky_solve(inducing_values - prior_fn(points), factor)
    mean_coeff = torch.linalg.solve_triangular(factor.transpose(1, 2), mean_v, upper=True)
    return points, coeff, mean_coeff, factor, chol_v


def fit_gp_dynamics(model: GPDynamics, batch: TransitionBatch,
                    config: Optional[GPDynamicsConfig] = None, seed: int = 0,
                    progress: Optional[ProgressCallback] = None) -> GPFitReport:
    """Fit ``model`` to ``batch`` and redraw its members.

    Normalisers are refitted on the data; kernel hyperparameters (lengthscales, signal and
    noise variances per output) maximise the exact marginal likelihood (of at most
    ``max_hyper_points`` random transitions; the posterior conditions on all), or for more than
    ``max_exact_points`` transitions the SVGP's minibatch ELBO (inducing points and variational
    posterior too), with Adam for at most ``iterations`` steps and early stopping. The previous
    fit's hyperparameters are the starting point (``warm_start``). Rows with non-finite values
    are dropped with a warning. Deterministic for a given ``seed`` (and thread count).

    Args:
        model: the :class:`GPDynamics` to fit.
        batch: transitions (at least 2 finite rows).
        config: fit settings (default: the model's); ``ARCHITECTURE_FIELDS`` must match.
        seed: seeds the subsets, the sparse GP's minibatches and the member draws.
        progress: ``progress(step, {"loss": ...})`` after every optimiser step.

    Returns:
        A :class:`GPFitReport`.
    """
    config = (config or model.config).validate()
    for name in ARCHITECTURE_FIELDS:
        if getattr(config, name) != getattr(model.config, name):
            raise ValueError(f"fit config changes {name!r} ({getattr(model.config, name)} -> "
                             f"{getattr(config, name)})")
    if batch.state_dim != model.state_dim or batch.action_dim != model.action_dim:
        raise ValueError(f"batch dims ({batch.state_dim}, {batch.action_dim}) do not match "
                         f"the model ({model.state_dim}, {model.action_dim})")
    started = time.perf_counter()
    report = GPFitReport()
    batch, targets, report.num_dropped = _finite_rows(model, batch)
    if len(batch) < MIN_FIT_POINTS:
        raise ValueError(f"fit_gp_dynamics needs at least {MIN_FIT_POINTS} finite "
                         f"transitions, got {len(batch)}")
    report.num_train = len(batch)
    generator = torch.Generator().manual_seed(int(seed))
    device = model.device
    state = torch.as_tensor(batch.state, dtype=torch.float32, device=device)
    action = torch.as_tensor(batch.action, dtype=torch.float32, device=device)
    raw_inputs = model.encode_inputs(state, action)
    raw_targets = torch.as_tensor(targets, dtype=torch.float32, device=device)
    model.input_normalizer.fit(raw_inputs)
    model.target_normalizer.fit(raw_targets)
    x = model.input_normalizer.normalize(raw_inputs).detach().cpu().to(FIT_DTYPE)
    y = model.target_normalizer.normalize(raw_targets).detach().cpu().to(FIT_DTYPE).T
    outputs = model.state_dim
    kernel = _gpytorch_kernel(config.kernel, model.input_dim, outputs).to(FIT_DTYPE)
    likelihood = gpytorch.likelihoods.GaussianLikelihood(
        batch_shape=torch.Size([outputs]),
        noise_constraint=gpytorch.constraints.GreaterThan(config.noise_floor)).to(FIT_DTYPE)
    _init_hyper(kernel, likelihood, model.hyper, config)
    report.sparse = len(batch) > config.max_exact_points
    with gpytorch.settings.max_cholesky_size(config.max_exact_points + 1), \
            gpytorch.settings.cholesky_jitter(double_value=config.jitter), \
            gpytorch.settings.variational_cholesky_jitter(double_value=config.jitter):
        sparse_gp = None
        if report.sparse:
            # gpytorch draws the variational start from torch's global generator: seed it
            # here (restored after), so a sparse fit is deterministic for ``seed`` too
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                sparse_gp = _fit_sparse(x, y, kernel, likelihood, config, report, progress,
                                        generator)
        else:
            rows = torch.randperm(len(x), generator=generator)[:config.max_hyper_points]
            rows = rows.sort().values
            _fit_exact(x[rows], y[:, rows], kernel, likelihood, config, report, progress)
    with torch.no_grad():
        hyper = _read_hyper(kernel, likelihood)
        omega, phase, weights = _random_features(config.kernel, hyper, config.num_members,
                                                 config.num_random_features, generator)

        def prior_fn(points: torch.Tensor) -> torch.Tensor:
            return _prior_at(points, omega, phase, weights)

        if sparse_gp is None:
            support, coeff, mean_coeff, factor, root = _condition_exact(
                config.kernel, hyper, x, y, prior_fn(x.unsqueeze(0).expand(outputs, -1, -1)),
                config, generator)
        else:
            support, coeff, mean_coeff, factor, root = _condition_sparse(
                config.kernel, hyper, sparse_gp, prior_fn, config.num_members, config,
                generator)
    model.hyper = hyper
    model.samples = _to_samples(config.kernel, hyper, support,
                                coeff, mean_coeff, (factor, root), omega, phase, weights,
                                device, report.sparse)
    model.num_transitions = len(batch)
    with torch.no_grad():
        mean, _ = model.posterior(state, action)
        error = (mean - raw_targets) / model.target_normalizer.std
        report.train_rmse = float(error.square().mean().sqrt())
    report.lengthscale = hyper.lengthscale.tolist()
    report.noise = hyper.noise.tolist()
    report.seconds = time.perf_counter() - started
    model.metrics = {"train_rmse": report.train_rmse, "final_loss": report.loss[-1],
                     "iterations_run": report.iterations_run, "sparse": report.sparse,
                     "seed": int(seed)}
    logger.info("gp dynamics fit (%s) on %d transitions: %d steps%s, loss %.4f, train rmse "
                "%.4g (standardised), %.1f s", "sparse" if report.sparse else "exact",
                report.num_train, report.iterations_run,
                " (early stop)" if report.stopped_early else "", report.loss[-1],
                report.train_rmse, report.seconds)
    return report


def _to_samples(kind: str, hyper: Hyperparameters, support: torch.Tensor, coeff: torch.Tensor,
                mean_coeff: torch.Tensor,
                variance: Tuple[torch.Tensor, Optional[torch.Tensor]], omega: torch.Tensor,
                phase: torch.Tensor, weights: torch.Tensor, device: torch.device,
                sparse: bool) -> PosteriorSamples:
    """The float32 prediction tensors on ``device``; the support is lengthscale-scaled."""
    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=torch.float32).contiguous()

    scaled_support = support / hyper.lengthscale.unsqueeze(1)
    return PosteriorSamples(
        kind=kind,
        hyper=Hyperparameters(cast(hyper.lengthscale), cast(hyper.outputscale),
                              cast(hyper.noise)),
        support=cast(scaled_support), coeff=cast(coeff.transpose(1, 2).unsqueeze(-1)),
        mean_coeff=cast(mean_coeff), factor=cast(variance[0]),
        root=None if variance[1] is None else cast(variance[1]),
        omega=cast(omega), phase=cast(phase[:, None, None, :]),
        prior_weights=cast(weights.unsqueeze(-1)), sparse=sparse)
