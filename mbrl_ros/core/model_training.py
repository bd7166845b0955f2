"""Training of dynamics ensembles: bootstrap, Gaussian NLL, held-out early stopping, elites."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from mbrl_ros.core.dynamics_model import ProgressCallback
from mbrl_ros.core.ensemble_config import ARCHITECTURE_FIELDS, EnsembleConfig
from mbrl_ros.core.types import TransitionBatch

Ensemble = Any
"""A :class:`~mbrl_ros.core.ensemble.ProbabilisticEnsemble` (not imported here: the ensemble's
``fit`` calls this module)."""

logger = logging.getLogger(__name__)


class TrainingCancelled(Exception):
    """``fit_dynamics`` stopped because ``should_stop()`` returned True; the model is then
    partly trained (weights and normalisers changed) and must be discarded by the caller."""


@dataclass
class FitReport:
    """What one call of :func:`fit_dynamics` did. Losses are in normalised target units."""

    epochs_run: int = 0
    """Epochs trained (early stopping may end before ``max_epochs``)."""
    stopped_early: bool = False
    """True when patience ran out before ``max_epochs``."""
    train_nll: List[float] = field(default_factory=list)
    """Per epoch: mean training NLL over members and minibatches."""
    train_mse: List[float] = field(default_factory=list)
    """Per epoch: mean training MSE over members and minibatches."""
    val_nll: List[float] = field(default_factory=list)
    """Per epoch: validation NLL, mean over members."""
    val_mse: List[float] = field(default_factory=list)
    """Per epoch: validation MSE, mean over members."""
    member_val_mse: List[float] = field(default_factory=list)
    """Per member: best validation MSE (the kept weights)."""
    member_val_nll: List[float] = field(default_factory=list)
    """Per member: validation NLL of the kept weights."""
    elites: List[int] = field(default_factory=list)
    """Indices of the elite members (lowest validation MSE first)."""
    best_val_mse: float = float("nan")
    """Validation MSE of the kept weights, mean over elites."""
    best_val_nll: float = float("nan")
    """Validation NLL of the kept weights, mean over elites."""
    num_train: int = 0
    """Transitions in the training split."""
    num_validation: int = 0
    """Transitions held out (0: validation used the training split)."""
    num_dropped: int = 0
    """Rows dropped because a field or the training target was not finite."""

    def as_dict(self) -> Dict[str, Any]:
        """Plain dict (JSON-friendly)."""
        return dict(self.__dict__)


def _check_config(model: Ensemble, config: EnsembleConfig) -> None:
    config.validate()
    for name in ARCHITECTURE_FIELDS:
        if getattr(config, name) != getattr(model.config, name):
            raise ValueError(f"fit config changes architecture field {name!r} "
                             f"({getattr(model.config, name)} -> {getattr(config, name)})")


def _evaluate(ensemble: Ensemble, inputs: torch.Tensor, targets: torch.Tensor,
              chunk: int) -> tuple:
    """Per-member (nll [E], mse [E]) on shared rows ``inputs [N, in]``, ``targets [N, S]``."""
    members = ensemble.config.num_members
    nll_sum = torch.zeros(members, device=inputs.device, dtype=torch.float64)
    mse_sum = torch.zeros_like(nll_sum)
    with torch.no_grad():
        for start in range(0, len(inputs), chunk):
            x = inputs[start:start + chunk].unsqueeze(0).expand(members, -1, -1)
            y = targets[start:start + chunk].unsqueeze(0).expand(members, -1, -1)
            nll, mse = ensemble.member_losses(x, y)
            nll_sum += nll.double() * len(x[0])
            mse_sum += mse.double() * len(x[0])
    return nll_sum / len(inputs), mse_sum / len(inputs)


def fit_dynamics(model: Any, batch: TransitionBatch, config: Optional[EnsembleConfig] = None,
                 seed: int = 0, progress: Optional[ProgressCallback] = None,
                 should_stop: Optional[Callable[[], bool]] = None) -> FitReport:
    """Fit a :class:`ProbabilisticEnsemble` or :class:`ResidualDynamics` to transitions.

    Warm-starts from the model's current weights (call again with more data to refine it);
    normalisers are refitted on the training split. Rows with non-finite values are dropped
    with a warning. Deterministic for a given ``seed`` (and torch thread count).

    Args:
        model: the model; its ``ensemble`` is trained on ``model.training_targets(batch)``.
        batch: ``N`` transitions (``N >= 2`` finite rows).
        config: training settings (default: the ensemble's own config); architecture fields
            must match the model's.
        seed: seeds the split, bootstrap and minibatch order.
        progress: ``progress(epoch, metrics)`` after each epoch (metrics: train_nll,
            train_mse, val_nll, val_mse).
        should_stop: checked before every minibatch; when it returns True, training stops
            at once with :class:`TrainingCancelled` (prompt shutdown of a trainer).

    Returns:
        A :class:`FitReport`. The model keeps, per member, the weights of its best validation
        epoch; its ``elites``, ``metrics`` and ``num_transitions`` are updated.
    """
    ensemble: Ensemble = model.ensemble
    config = config or ensemble.config
    _check_config(ensemble, config)
    if batch.state_dim != model.state_dim or batch.action_dim != model.action_dim:
        raise ValueError(f"batch dims ({batch.state_dim}, {batch.action_dim}) do not match "
                         f"the model ({model.state_dim}, {model.action_dim})")
    report = FitReport()
    finite = batch.finite_mask()
    batch = batch[finite]
    targets = model.training_targets(batch) if len(batch) else np.zeros((0, batch.state_dim))
    target_ok = np.isfinite(targets).all(axis=1)
    batch, targets = batch[target_ok], targets[target_ok]
    report.num_dropped = int((~finite).sum() + (~target_ok).sum())
    if report.num_dropped:
        logger.warning("fit_dynamics: dropped %d of %d transitions with non-finite values",
                       report.num_dropped, report.num_dropped + len(batch))
    if len(batch) < 2:
        raise ValueError(f"fit_dynamics needs at least 2 finite transitions, got {len(batch)}")

    device = ensemble.device
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    order = rng.permutation(len(batch))
    num_val = int(len(batch) * config.validation_fraction)
    num_val = num_val if len(batch) - num_val >= 1 else 0
    val_rows, train_rows = order[:num_val], order[num_val:]
    report.num_train, report.num_validation = len(train_rows), num_val

    state = torch.as_tensor(batch.state, device=device)
    action = torch.as_tensor(batch.action, device=device)
    raw_inputs = ensemble.encode_inputs(state, action)
    raw_targets = torch.as_tensor(targets, dtype=torch.float32, device=device)
    train_index = torch.as_tensor(train_rows, device=device)
    ensemble.input_normalizer.fit(raw_inputs[train_index])
    ensemble.target_normalizer.fit(raw_targets[train_index])
    inputs = ensemble.input_normalizer.normalize(raw_inputs)
    norm_targets = ensemble.target_normalizer.normalize(raw_targets)
    val_index = torch.as_tensor(val_rows, device=device) if num_val else train_index
    val_inputs, val_targets = inputs[val_index], norm_targets[val_index]
    train_inputs, train_targets = inputs[train_index], norm_targets[train_index]

    members, num_train = config.num_members, len(train_rows)
    if config.bootstrap:
        samples = torch.randint(num_train, (members, num_train), generator=generator)
    else:
        samples = torch.arange(num_train).unsqueeze(0).expand(members, -1)
    samples = samples.to(device)
    optimizer = torch.optim.Adam([
        {"params": list(ensemble.net.parameters()), "weight_decay": config.weight_decay},
        {"params": [ensemble.max_logvar, ensemble.min_logvar], "weight_decay": 0.0},
    ], lr=config.learning_rate)

    best_nll, best_mse = _evaluate(ensemble, val_inputs, val_targets, config.eval_batch_size)
    best_params = [p.detach().clone() for p in ensemble.parameters()]
    stale_epochs = 0
    tiny = float(np.finfo(np.float64).tiny)
    for epoch in range(1, config.max_epochs + 1):
        permutation = torch.argsort(torch.rand(members, num_train, generator=generator), dim=1)
        epoch_rows = samples.gather(1, permutation.to(device))
        nll_total, mse_total, steps = 0.0, 0.0, 0
        for start in range(0, num_train, config.batch_size):
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"training stopped on request in epoch {epoch}")
            rows = epoch_rows[:, start:start + config.batch_size]
            nll, mse = ensemble.member_losses(train_inputs[rows], train_targets[rows])
            loss = nll.sum() + ensemble.logvar_bound_penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            nll_total += float(nll.detach().mean())
            mse_total += float(mse.detach().mean())
            steps += 1
        val_nll, val_mse = _evaluate(ensemble, val_inputs, val_targets, config.eval_batch_size)
        improved = (best_mse - val_mse) / best_mse.clamp_min(tiny) > config.improvement_threshold
        if bool(improved.any()):
            with torch.no_grad():
                for best, param in zip(best_params, ensemble.parameters()):
                    best[improved] = param[improved]
            best_mse = torch.where(improved, val_mse, best_mse)
            best_nll = torch.where(improved, val_nll, best_nll)
            stale_epochs = 0
        else:
            stale_epochs += 1
        report.train_nll.append(nll_total / steps)
        report.train_mse.append(mse_total / steps)
        report.val_nll.append(float(val_nll.mean()))
        report.val_mse.append(float(val_mse.mean()))
        report.epochs_run = epoch
        if progress is not None:
            progress(epoch, {"train_nll": report.train_nll[-1],
                             "train_mse": report.train_mse[-1],
                             "val_nll": report.val_nll[-1], "val_mse": report.val_mse[-1]})
        if stale_epochs >= config.patience:
            report.stopped_early = epoch < config.max_epochs
            break

    with torch.no_grad():
        for best, param in zip(best_params, ensemble.parameters()):
            param.copy_(best)
    elites = torch.argsort(best_mse)[:config.num_elites]
    ensemble.elites.copy_(elites.to(ensemble.elites.device))
    report.elites = elites.tolist()
    report.member_val_mse = best_mse.tolist()
    report.member_val_nll = best_nll.tolist()
    report.best_val_mse = float(best_mse[elites].mean())
    report.best_val_nll = float(best_nll[elites].mean())
    ensemble.num_transitions = len(batch)
    ensemble.metrics = {"validation_nll": report.best_val_nll,
                        "validation_mse": report.best_val_mse,
                        "epochs_run": float(report.epochs_run)}
    logger.info("fit_dynamics: %d transitions, %d epochs, val mse %.4g (elites %s)",
                len(batch), report.epochs_run, report.best_val_mse, report.elites)
    return report
