"""``mbrl-ros train``: fit the trainer node's dynamics model offline from rosbag2 bags.

Reads the trainer section of a ROS parameters file (topics, joints, alignment, ensemble or GP),
aligns the bags into transitions, trains with :class:`OnlineTrainer` (the trainer node's own
engine, so the model and the checkpoint format are exactly the node's) and writes the next
``model_<version>.mbrl`` into ``--out``, a :class:`ModelRegistry` folder the trainer node and
the planner read unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, TextIO

import torch

from mbrl_ros.core.checkpoint import CheckpointError
from mbrl_ros.data.alignment import AlignedDataset, align_streams
from mbrl_ros.data.bag_reader import IMU_NAMES, ODOM_NAMES, read_robot_streams
from mbrl_ros.data.dataset_config import RobotStreamsConfig, resolve_topic_name
from mbrl_ros.training.config_file import TrainingSetup, build_nominal, load_training_setup
from mbrl_ros.training.model_errors import normalised_one_step_mse
from mbrl_ros.training.online_trainer import MODEL_KINDS, Deployment, OnlineTrainer, unwrapped

DESCRIPTION = ("Train the trainer node's dynamics model offline from rosbag2 bags and write a "
               "versioned checkpoint the planner loads unchanged.")

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, CheckpointError, OSError)
"""Exceptions that are the user's input at fault: printed as one line, exit status 2."""
ERROR_STATUS = 2
"""Exit status of a run stopped by bad input."""
MODEL_CLASSES = {"residual": "ResidualDynamics", "ensemble": "ProbabilisticEnsemble",
                 "gp": "GPDynamics"}
"""Model kind -> class stored in its checkpoints."""


class CliError(Exception):
    """A problem with the user's input, reported without a traceback."""


@dataclass
class TrainResult:
    """What ``mbrl-ros train`` wrote."""

    deployment: Deployment
    """Version, path, sha256 and held-out error of the checkpoint written."""
    resumed_from: int
    """Version warm-started from (0: trained from scratch)."""
    previous_holdout_mse: float
    """Held-out error of the warm-start model (NaN without one)."""
    epochs_run: int
    """Training epochs run (early stopping may end before max_epochs); for a GP, optimiser
    steps of its fit."""
    dataset: AlignedDataset


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options ``train`` and ``evaluate`` share: bags, parameters file, URDF."""
    parser.add_argument("--bag", nargs="+", required=True, metavar="PATH",
                        help="rosbag2 bags: directories (MCAP or sqlite3) or single "
                             ".mcap / .db3 files")
    parser.add_argument("--config", required=True, metavar="YAML",
                        help="ROS parameters file with a trainer section, e.g. config/arm7.yaml")
    parser.add_argument("--urdf", metavar="URDF",
                        help="robot URDF (default: the trainer parameter 'urdf')")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks instead of one-line errors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mbrl-ros train``."""
    add_common_arguments(parser)
    parser.add_argument("--out", metavar="DIR",
                        help="model folder (model_<version>.mbrl); default: the trainer "
                             "parameter model_dir")
    parser.add_argument("--model-kind", choices=MODEL_KINDS,
                        help="residual (URDF model + learned correction), ensemble "
                             "(network only) or gp (Gaussian process, settings gp.*); "
                             "default: the trainer parameter model_kind")
    parser.add_argument("--seed", type=int, help="seed (default: the trainer parameter seed)")
    parser.add_argument("--resume", action="store_true",
                        help="warm-start from the newest valid checkpoint in --out")
    parser.add_argument("--namespace", default="/", metavar="NS",
                        help="ROS namespace the bags were recorded in: relative topic names of "
                             "the parameters file (joint_states) match /NS/joint_states in the "
                             "bags; absolute names match as written (default: /, the root "
                             "namespace)")


class _StderrHandler(logging.Handler):
    """Writes records to the current ``sys.stderr`` (which tests and shells may swap)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def configure_logging() -> None:
    """Warnings of the library (damaged bags, skipped checkpoints) go to stderr, one line each."""
    root = logging.getLogger("mbrl_ros")
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)


@contextlib.contextmanager
def user_errors(debug: bool, status: List[int]) -> Iterator[None]:
    """Turn bad-input exceptions into ``error: ...`` on stderr and ``status[0] = 2``."""
    try:
        yield
    except (CliError, *USER_ERRORS) as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        status[0] = ERROR_STATUS


def read_dataset(paths: Sequence[str], setup: TrainingSetup,
                 out: Optional[TextIO] = None) -> AlignedDataset:
    """Read and align ``paths`` with the trainer's topics, joints and alignment settings.

    Prints one line per bag (messages read, damage) and the alignment summary.

    Raises:
        ValueError: a topic or joint is missing (the message lists what the bag contains).
        FileNotFoundError: a path does not exist.
    """
    out = out or sys.stdout
    streams = read_robot_streams(list(paths), setup.streams)
    for recording in streams.recordings:
        report = recording.report
        print(f"read {report.path}: {len(recording.state)} state and "
              f"{len(recording.command)} command messages", file=out)
        if report.damage or report.lost or report.lost_unknown:
            tail = " and an unknown tail" if report.lost_unknown else ""
            print(f"warning: {report.path} is damaged, read up to the damage "
                  f"(lost {report.lost or 'nothing countable'}{tail}): "
                  f"{'; '.join(report.damage)}", file=sys.stderr)
        if report.dropped:
            print(f"  dropped messages: {dict(report.dropped)}", file=out)
    dataset = align_streams(streams, setup.alignment)
    print(f"alignment at {setup.alignment.control_rate_hz:g} Hz: {dataset.report.summary()}",
          file=out)
    if len(dataset.batch) == 0:
        raise CliError("the bags hold no usable transitions (see the alignment summary)")
    return dataset


def epoch_progress(total: int, enabled: bool, unit: str = "epoch") -> tuple:
    """``(callback, close)``: a tqdm bar over epochs (a GP: optimiser steps) fed by the fit
    progress callback, showing the metrics it reports (``val_mse``, ``val_nll``; ``loss``)."""
    from tqdm import tqdm
    bar = tqdm(total=total, unit=unit, desc="training", disable=not enabled,
               file=sys.stderr, dynamic_ncols=True)

    def callback(epoch: int, metrics: dict) -> None:
        bar.update(epoch - bar.n)
        bar.set_postfix({name: f"{value:.4g}" for name, value in metrics.items()
                         if name in ("val_mse", "val_nll", "loss")})
    return callback, bar.close


def bag_fingerprints(paths: Sequence[str]) -> List[dict]:
    """Name and size of each bag (recorded in checkpoints to spot evaluation on training data)."""
    prints = []
    for path in paths:
        path = Path(path)
        files = [path] if path.is_file() else sorted(
            p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
        prints.append({"name": path.name, "bytes": sum(p.stat().st_size for p in files)})
    return prints


def aligned_state_dim(streams: RobotStreamsConfig) -> int:
    """Size of the states the trainer aligns from ``streams``: joints, odometry, IMU."""
    return (2 * len(streams.joints) + (len(ODOM_NAMES) if streams.odom_topic else 0)
            + (len(IMU_NAMES) if streams.imu_topic else 0))


def _check_resumed(trainer: OnlineTrainer, setup: TrainingSetup, kind: str) -> None:
    model_class = type(unwrapped(trainer.model)).__name__  # the checkpoint's class
    if model_class != MODEL_CLASSES[kind]:
        raise CliError(f"the newest checkpoint in {trainer.registry.folder} is a "
                       f"{model_class}, not a {kind} model: pass --model-kind accordingly or "
                       f"another --out")
    state_dim = aligned_state_dim(setup.streams)
    if trainer.model.state_dim != state_dim:
        raise CliError(f"the newest checkpoint in {trainer.registry.folder} has state_dim "
                       f"{trainer.model.state_dim}, these streams need {state_dim}")


def train_offline(bags: Sequence[str], setup: TrainingSetup, resume: bool = False,
                  progress: bool = True, out: Optional[TextIO] = None) -> TrainResult:
    """Align ``bags``, fit the trainer's model and write the next checkpoint version.

    Args:
        setup: parameters as the trainer node reads them (``setup.trainer.model_dir`` is the
            output folder, ``setup.trainer.seed`` the seed).
        resume: warm-start from the newest valid checkpoint in the output folder.
        progress: show a progress bar over epochs.

    Raises:
        CliError / ValueError / FileNotFoundError: bad input (see :func:`read_dataset`).
    """
    out = out or sys.stdout
    torch.set_num_threads(setup.node.torch_threads)
    device = torch.device(setup.node.device)
    dataset = read_dataset(bags, setup, out)
    metadata = dict(setup.metadata(), seed=setup.trainer.seed,
                    training_bags=bag_fingerprints(bags), trained_offline=True,
                    alignment=dataset.report.summary())
    trainer = OnlineTrainer(setup.trainer, setup.ensemble, setup.streams, setup.alignment,
                            build_nominal(setup, device), device, metadata,
                            gp_config=setup.gp)
    resumed_from, previous = 0, float("nan")
    if resume:
        resumed_from = trainer.warm_start()
        if resumed_from:
            _check_resumed(trainer, setup, setup.trainer.model_kind)
            print(f"resuming from {trainer.registry.path_for(resumed_from)}", file=out)
        else:
            print(f"no valid checkpoint in {trainer.registry.folder}; training from scratch",
                  file=out)
    trainer.metadata["resumed_from"] = resumed_from
    added = trainer.add(dataset.batch)
    if trainer.num_transitions < setup.trainer.min_transitions:
        raise CliError(f"only {trainer.num_transitions} usable transitions; the trainer needs "
                       f"min_transitions={setup.trainer.min_transitions} (record more, or "
                       f"lower min_transitions in the parameters file)")
    if trainer.holdout is None or len(trainer.holdout) == 0:
        raise CliError(f"no transitions were held out for validation ({added} transitions, "
                       f"holdout_fraction={setup.trainer.holdout_fraction}); record more data")
    if trainer.deployed is not None:
        previous = normalised_one_step_mse(trainer.deployed, trainer.holdout)
    epochs = {"run": 0}
    gp = setup.trainer.model_kind == "gp"
    callback, close = epoch_progress(setup.gp.iterations if gp else setup.ensemble.max_epochs,
                                     progress, "step" if gp else "epoch")

    def on_epoch(epoch: int, metrics: dict) -> None:
        epochs["run"] = epoch
        callback(epoch, metrics)

    try:
        deployment = trainer.run_round(progress=on_epoch, force=True)
    finally:
        close()
    if deployment is None:  # run_round only skips when data is missing, checked above
        raise CliError("training did not run (no usable transitions)")
    return TrainResult(deployment, resumed_from, previous, epochs["run"], dataset)


def print_result(result: TrainResult, setup: TrainingSetup,
                 out: Optional[TextIO] = None) -> None:
    """The summary lines of ``mbrl-ros train``."""
    out = out or sys.stdout
    d = result.deployment
    gp = setup.trainer.model_kind == "gp"  # a GP fit has no validation split
    validation = ("" if gp else f"validation NLL {d.validation_nll:.4g}, MSE "
                  f"{d.validation_mse:.4g} (normalised); ")
    print(f"trained {setup.trainer.model_kind} model on {d.num_transitions} transitions "
          f"({result.epochs_run} {'fit steps' if gp else 'epochs'}, {d.train_seconds:.1f} s): "
          f"{validation}held-out one-step error {d.holdout_mse:.4g}", file=out)
    if result.resumed_from:
        verdict = "better" if d.holdout_mse < result.previous_holdout_mse else "NOT better"
        print(f"held-out error of the warm-start model v{result.resumed_from}: "
              f"{result.previous_holdout_mse:.4g} (new model is {verdict})", file=out)
    print(f"checkpoint v{d.version}: {d.path}", file=out)
    print(f"sha256: {d.sha256}", file=out)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mbrl-ros train``; returns the exit status."""
    configure_logging()
    status = [0]
    with user_errors(args.debug, status):
        overrides = {"model_kind": args.model_kind, "seed": args.seed, "data_dir": ""}
        if args.out:
            overrides["model_dir"] = args.out
        setup = load_training_setup(args.config, args.urdf, overrides)
        setup = dataclasses.replace(setup, streams=setup.streams.resolved(
            lambda topic: resolve_topic_name(topic, args.namespace)))
        result = train_offline(args.bag, setup, resume=args.resume,
                               progress=not args.no_progress)
        print_result(result, setup)
    return status[0]
