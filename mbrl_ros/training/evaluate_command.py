"""``mbrl-ros evaluate``: how far a trained dynamics model can be trusted, on held-out bags.

Measures, each per joint (positions and velocities) and for the analytical URDF model alone
as the baseline:

* open-loop prediction error: from every recorded state, the ensemble mean is rolled forward
  with the recorded actions inside its episode and compared with the recorded states after
  1, 5 and 20 model steps (RMSE per state entry, and a normalised MSE over all entries, each
  divided by the mean square of the recorded change over that horizon: 1 is no better than
  predicting no motion);
* calibration of the predicted one-step variance (total = mean aleatoric variance of the
  members + variance of the member means): share of errors inside 1 sigma and 2 sigma
  (ideal 68.3 % and 95.4 %) and a coverage curve;
* correlation of the ensemble disagreement with the one-step error (does disagreement tell
  where the model is wrong?).

Writes ``metrics.json`` and a report (markdown, HTML, PNG plots) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Callable, Optional, Sequence, TextIO, Tuple

import numpy as np
import torch

from mbrl_ros.core.checkpoint import load_checkpoint
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.data.alignment import AlignedDataset
from mbrl_ros.training.config_file import TrainingSetup, build_nominal, load_training_setup
from mbrl_ros.training.model_errors import angle_dims, delta_scale, predict_mean, state_error
from mbrl_ros.training.evaluation_result import EvaluationResult, ModelErrors
from mbrl_ros.training.online_trainer import in_training_frame
from mbrl_ros.training.offline import (CliError, add_common_arguments, bag_fingerprints,
                                       configure_logging, read_dataset, user_errors)
from mbrl_ros.training.report import write_report

MIN_CHANGE_POWER = 1e-18
"""State entries whose recorded change has a smaller mean square are not normalised."""
DESCRIPTION = ("Evaluate a dynamics checkpoint on held-out bags: open-loop error per joint at "
               "several horizons, uncertainty calibration, disagreement vs error, against the "
               "URDF model alone; writes a report.")


@dataclass(frozen=True)
class EvaluationConfig:
    """What ``mbrl-ros evaluate`` measures."""

    horizons: Tuple[int, ...] = (1, 5, 20)
    """Open-loop horizons [model steps] reported in the tables."""
    start_stride: int = 1
    """Every ``start_stride``-th transition of an episode starts an open-loop rollout."""
    coverage_levels: Tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95,
                                          0.99)
    """Central probability levels of the calibration (coverage) curve."""
    disagreement_bins: int = 5
    """Quantile bins of disagreement in which the mean error is reported."""
    chunk_rows: int = 8192
    """Rows per model evaluation (memory bound)."""

    def validate(self) -> "EvaluationConfig":
        """Raise ValueError on a bad setting; return self."""
        if not self.horizons or min(self.horizons) < 1:
            raise ValueError(f"horizons must be >= 1, got {self.horizons}")
        if self.start_stride < 1 or self.disagreement_bins < 2 or self.chunk_rows < 1:
            raise ValueError("start_stride, chunk_rows >= 1 and disagreement_bins >= 2")
        if not all(0.0 < p < 1.0 for p in self.coverage_levels):
            raise ValueError(f"coverage_levels must lie in (0, 1), got {self.coverage_levels}")
        return self


def rollout_windows(dataset: AlignedDataset, period_ns: int) -> np.ndarray:
    """``remaining [N]``: consecutive transitions from each row on inside its episode (>= 1)."""
    batch, n = dataset.batch, len(dataset.batch)
    follows = np.zeros(n, dtype=bool)
    if n > 1:
        follows[:-1] = ((batch.episode[1:] == batch.episode[:-1])
                        & (dataset.recording[1:] == dataset.recording[:-1])
                        & (dataset.tick_ns[1:] - dataset.tick_ns[:-1] == period_ns))
    run = np.concatenate([[0], np.cumsum(~follows[:-1])]) if n else np.zeros(0, int)
    run_end = np.zeros(run.max(initial=-1) + 1, dtype=np.int64)
    np.maximum.at(run_end, run, np.arange(n))
    return run_end[run] - np.arange(n) + 1


def change_power(batch: TransitionBatch, starts: np.ndarray, remaining: np.ndarray,
                 steps: int, angles: Sequence[int] = ()) -> np.ndarray:
    """[S] mean square of the recorded ``steps``-step state change over the rollouts long
    enough (1 where an entry never changes): the MSE of predicting "no motion" (``angles``:
    wrapping-angle dims, changes taken modulo a turn)."""
    valid = starts[remaining[starts] >= steps]
    change = state_error(batch.next_state[valid + steps - 1], batch.state[valid], angles)
    power = np.mean(np.square(change), axis=0) if len(valid) else np.ones(batch.state_dim)
    return np.where(power > MIN_CHANGE_POWER, power, 1.0)


def open_loop(step: Callable[[np.ndarray, np.ndarray], np.ndarray], batch: TransitionBatch,
              starts: np.ndarray, remaining: np.ndarray, max_horizon: int,
              angles: Sequence[int] = ()) -> ModelErrors:
    """Roll ``step`` from ``batch.state[starts]`` with the recorded actions.

    Args:
        step: ``(state [W, S], action [W, A]) -> next_state [W, S]``.
        starts: [W] start rows; ``remaining`` [N] as from :func:`rollout_windows`.
        angles: wrapping-angle dims (continuous joints), compared modulo a turn.
    """
    state = batch.state[starts].astype(np.float64)
    last = len(batch) - 1
    rmse, nmse, diverged = [], [], []
    for k in range(max_horizon):
        rows = np.minimum(starts + k, last)
        state = np.asarray(step(state, batch.action[rows]), dtype=np.float64)
        valid = remaining[starts] > k
        error = state_error(state[valid], batch.next_state[rows[valid]], angles)
        finite = np.isfinite(error).all(axis=1)
        diverged.append(int((~finite).sum()))
        if not valid.any():
            rmse.append([math.nan] * batch.state_dim)
            nmse.append(math.nan)
            continue
        squared = np.where(finite[:, None], np.square(error), np.inf)
        rmse.append(np.sqrt(squared.mean(axis=0)).tolist())
        scale = change_power(batch, starts, remaining, k + 1, angles)
        nmse.append(float(np.mean(squared / scale)))
    return ModelErrors(rmse, nmse, diverged)


def _chunked(function: Callable, chunk: int) -> Callable:
    def step(state: np.ndarray, action: np.ndarray) -> np.ndarray:
        parts = [function(state[i:i + chunk], action[i:i + chunk])
                 for i in range(0, len(state), chunk)]
        return np.concatenate(parts) if parts else state
    return step


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their mean rank (for Spearman correlation)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts
    return (first + (counts - 1) / 2.0)[inverse.reshape(-1)]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def evaluate_model(model, nominal, dataset: AlignedDataset, period_ns: int,
                   config: EvaluationConfig = EvaluationConfig()) -> dict:
    """All measures of the module docstring for ``model`` and ``nominal`` on ``dataset``.

    Returns a dict of :class:`EvaluationResult` fields (without checkpoint / data info).
    """
    config.validate()
    batch = dataset.batch
    max_horizon = max(config.horizons)
    remaining = rollout_windows(dataset, period_ns)
    angles = angle_dims(model)
    scale = delta_scale(batch, angles)
    starts = np.arange(0, len(batch), config.start_stride)
    chunk = config.chunk_rows

    def model_step(state, action):
        return predict_mean(model, state.astype(np.float32), action, chunk)[0]

    def nominal_step(state, action):
        with torch.no_grad():
            device = getattr(model, "device", torch.device("cpu"))
            return nominal.step(torch.as_tensor(state, dtype=torch.float32, device=device),
                                torch.as_tensor(action, dtype=torch.float32, device=device)
                                ).cpu().numpy()

    learned = open_loop(model_step, batch, starts, remaining, max_horizon, angles)
    baseline = open_loop(_chunked(nominal_step, chunk), batch, starts, remaining, max_horizon,
                         angles)
    windows = [int((remaining[starts] > k).sum()) for k in range(max_horizon)]

    mean, member_means, variance = predict_mean(model, batch.state, batch.action, chunk)
    total_variance = variance.mean(axis=0) + member_means.var(axis=0)
    miss = state_error(mean, batch.next_state, angles)
    z = np.abs(miss) / np.sqrt(np.maximum(total_variance, 1e-30))
    gaussian = NormalDist()
    coverage = [float(np.mean(z <= gaussian.inv_cdf(0.5 + level / 2)))
                for level in config.coverage_levels]
    with torch.no_grad():
        disagreement = model.disagreement(
            torch.as_tensor(member_means, device=model.device)).cpu().numpy()
    error = np.mean(np.square(miss / scale), axis=1)
    edges = np.quantile(disagreement, np.linspace(0, 1, config.disagreement_bins + 1))
    bins = np.clip(np.searchsorted(edges, disagreement, side="right") - 1, 0,
                   config.disagreement_bins - 1)
    bin_error = [float(error[bins == b].mean()) if (bins == b).any() else math.nan
                 for b in range(config.disagreement_bins)]
    return dict(horizons=list(config.horizons), windows=windows, model=learned,
                baseline=baseline, within_1_sigma=np.mean(z <= 1.0, axis=0).tolist(),
                within_2_sigma=np.mean(z <= 2.0, axis=0).tolist(),
                coverage_levels=list(config.coverage_levels), coverage_observed=coverage,
                disagreement_pearson=_correlation(disagreement, error),
                disagreement_spearman=_correlation(_ranks(disagreement), _ranks(error)),
                disagreement_bin_error=bin_error,
                samples={"disagreement": disagreement, "error": error})


def _check_checkpoint(metadata: dict, setup: TrainingSetup) -> None:
    joints = metadata.get("joints")
    if joints is not None and list(joints) != list(setup.streams.joints):
        raise CliError(f"the checkpoint was trained on joints {joints}, the config/URDF has "
                       f"{list(setup.streams.joints)}")
    period = metadata.get("model_period_s")
    if period is not None and not math.isclose(period, setup.node.model_period_s):
        raise CliError(f"the checkpoint steps {period} s, the config's model_period_s is "
                       f"{setup.node.model_period_s} s")


def overlap_warning(metadata: dict, bags: Sequence[str]) -> Optional[str]:
    """A warning when evaluation bags look like training bags (same name and size)."""
    trained = metadata.get("training_bags")
    if trained is None:
        return ("the checkpoint does not list its training bags: make sure these bags were "
                "not used for training, or the errors are optimistic")
    known = {(b["name"], b["bytes"]) for b in trained}
    reused = [p["name"] for p in bag_fingerprints(bags) if (p["name"], p["bytes"]) in known]
    if reused:
        return (f"bags {reused} were used to train this model: these numbers are NOT held-out "
                f"errors and are optimistic")
    return None


def evaluate_checkpoint(checkpoint_path: str, bags: Sequence[str], setup: TrainingSetup,
                        config: EvaluationConfig = EvaluationConfig(),
                        out: Optional[TextIO] = None) -> Tuple[EvaluationResult, dict]:
    """Load ``checkpoint_path`` as the planner does, read ``bags`` and evaluate.

    Returns ``(result, samples)`` with per-row ``disagreement`` and ``error`` for plots.
    """
    out = out or sys.stdout
    torch.set_num_threads(setup.node.torch_threads)
    device = torch.device(setup.node.device)
    header = load_checkpoint(checkpoint_path).header
    metadata = dict(header.get("metadata") or {})
    _check_checkpoint(metadata, setup)
    nominal = build_nominal(setup, device)
    # judged as the trainer judges it: a stand-task model in its heading frame
    model = in_training_frame(load_model(checkpoint_path, device=device, nominal=nominal),
                              setup.streams)
    dataset = read_dataset(bags, setup, out)
    measures = evaluate_model(model, nominal, dataset, setup.alignment.period_ns, config)
    samples = measures.pop("samples")
    warning = overlap_warning(metadata, bags)
    info = {"path": str(checkpoint_path), "sha256": load_checkpoint(checkpoint_path).sha256,
            "model_class": header.get("model_class"), "metadata": metadata}
    result = EvaluationResult(
        checkpoint=info, joints=list(setup.streams.joints),
        state_names=list(dataset.state_names), model_period_s=setup.node.model_period_s,
        num_transitions=len(dataset.batch), num_episodes=dataset.report.num_episodes,
        alignment=dataset.report.summary(), warnings=[warning] if warning else [],
        **measures)
    return result, samples


def format_tables(result: EvaluationResult) -> str:
    """The plain-text tables printed by ``mbrl-ros evaluate``."""
    joints, horizons = result.joints, result.horizons
    lines = []
    for label, offset, unit in (("position", 0, "rad"), ("velocity", len(joints), "rad/s")):
        head = "".join(f" {f'h={h} model':>12} {f'h={h} URDF':>12}" for h in horizons)
        lines += [f"open-loop {label} RMSE [{unit}]", f"{'joint':<14}{head}"]
        for j, name in enumerate(joints):
            cells = "".join(f" {result.model.rmse[h - 1][offset + j]:>12.4g}"
                            f" {result.baseline.rmse[h - 1][offset + j]:>12.4g}"
                            for h in horizons)
            lines.append(f"{name:<14}{cells}")
        lines.append("")
    cells = "".join(f" {result.model.normalised_mse[h - 1]:>12.4g}"
                    f" {result.baseline.normalised_mse[h - 1]:>12.4g}" for h in horizons)
    lines += [f"{'normalised MSE':<14}{cells}",
              f"{'rollouts':<14}" + "".join(f" {result.windows[h - 1]:>25d}" for h in horizons),
              "", "one-step calibration: share of errors inside 1 sigma / 2 sigma "
              "(ideal 0.683 / 0.954)",
              f"{'joint':<14} {'q 1σ':>7} {'q 2σ':>7} {'qd 1σ':>7} {'qd 2σ':>7}"]
    for j, name in enumerate(joints):
        v = len(joints) + j
        lines.append(f"{name:<14} {result.within_1_sigma[j]:>7.3f} "
                     f"{result.within_2_sigma[j]:>7.3f} {result.within_1_sigma[v]:>7.3f} "
                     f"{result.within_2_sigma[v]:>7.3f}")
    lines.append(f"{'all':<14} {np.mean(result.within_1_sigma):>7.3f} "
                 f"{np.mean(result.within_2_sigma):>7.3f}")
    lines += ["", f"disagreement vs one-step error: Spearman {result.disagreement_spearman:.3f}, "
              f"Pearson {result.disagreement_pearson:.3f}; mean error per disagreement "
              f"quintile (low to high): "
              + ", ".join(f"{e:.3g}" for e in result.disagreement_bin_error)]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mbrl-ros evaluate``."""
    parser.add_argument("--model", required=True, metavar="CKPT", help="model_<version>.mbrl")
    add_common_arguments(parser)
    parser.add_argument("--out", metavar="DIR",
                        help="report folder (default: <checkpoint>_evaluation next to it)")
    parser.add_argument("--horizons", type=int, nargs="+", metavar="STEPS",
                        default=list(EvaluationConfig.horizons),
                        help="open-loop horizons in model steps (default: 1 5 20)")
    parser.add_argument("--stride", type=int, default=EvaluationConfig.start_stride,
                        help="start a rollout at every STRIDE-th transition (default: 1)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mbrl-ros evaluate``; returns the exit status."""
    configure_logging()
    status = [0]
    with user_errors(args.debug, status):
        config = EvaluationConfig(horizons=tuple(sorted(set(args.horizons))),
                                  start_stride=args.stride).validate()
        setup = load_training_setup(args.config, args.urdf, {"data_dir": ""})
        checkpoint = Path(args.model)
        result, samples = evaluate_checkpoint(str(checkpoint), args.bag, setup, config)
        out_dir = Path(args.out) if args.out else checkpoint.with_name(
            checkpoint.stem + "_evaluation")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(asdict(result), indent=1))
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(format_tables(result))
        paths = write_report(result, samples, out_dir)
        print(f"report: {paths['markdown']} ({paths['html']}); metrics: "
              f"{out_dir / 'metrics.json'}")
    return status[0]
