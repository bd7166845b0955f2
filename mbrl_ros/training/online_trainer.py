"""The trainer's engine, free of ROS: ingest finished bags, refit, deploy a better model.

Data reaches the trainer as finished rosbag2 splits in ``data_dir`` (written by the logger node
or copied from a robot): a split counts once it has its ``metadata.yaml``. On start every split
present is read again, so a restarted trainer loses nothing, and it warm-starts from the newest
valid checkpoint in ``model_dir``. A refitted model is deployed (written as the next version)
only when it beats the deployed one on held-out transitions.

A round can be cancelled (``run_round(should_stop=...)``, checked before every minibatch):
the partly trained candidate is then discarded, nothing is written, and the deployed version
stays deployed; the next round starts again from the deployed checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

from mbrl_ros.core.checkpoint import CheckpointError, remove_partial_writes
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.ensemble_config import ARCHITECTURE_FIELDS
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.core.model_registry import ModelRegistry
from mbrl_ros.core.model_training import TrainingCancelled, fit_dynamics
from mbrl_ros.core.residual import ResidualDynamics
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.data.alignment import align_streams
from mbrl_ros.data.bag_reader import read_robot_streams
from mbrl_ros.data.data_directory import DataDirectory
from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig
from mbrl_ros.training.model_errors import normalised_one_step_mse

logger = logging.getLogger(__name__)

MODEL_KINDS = ("residual", "ensemble")

StopCheck = Callable[[], bool]
"""``should_stop()``: True when the running round must be abandoned (node shutdown, reset)."""
INGEST_CHUNK = 4
"""Bags read between two checks of a stop request."""


@dataclass(frozen=True)
class TrainerConfig:
    """Settings of the online trainer."""

    data_dir: str = "~/.ros/mbrl/data"
    """Folder of finished rosbag2 splits to learn from (the logger's output); empty: none
    (offline training from given bags only)."""
    model_dir: str = "~/.ros/mbrl/models"
    """Folder of versioned checkpoints (model_<version>.mbrl)."""
    model_kind: str = "residual"
    """"residual": analytical URDF model + learned correction; "ensemble": network only."""
    initial_bags: Tuple[str, ...] = ()
    """Bags to learn from before any online data (offline start), read once at start."""
    min_transitions: int = 300
    """No model is trained before this many transitions exist."""
    retrain_period_s: float = 5.0
    """Seconds between training rounds (new data is read at every round)."""
    holdout_fraction: float = 0.1
    """Share of each new batch of transitions held out to decide deployment."""
    improvement_margin: float = 0.0
    """A new model is deployed if its held-out error < (1 - margin) x the deployed one's."""
    max_transitions: int = 500000
    """Most transitions kept for training (oldest dropped first)."""
    seed: int = 0
    """Seed of the hold-out split and the model initialisation."""

    def validate(self) -> "TrainerConfig":
        """Raise ValueError on a bad setting; return self."""
        if self.model_kind not in MODEL_KINDS:
            raise ValueError(f"model_kind must be one of {MODEL_KINDS}, got {self.model_kind!r}")
        if self.min_transitions < 2 or self.max_transitions < self.min_transitions:
            raise ValueError("need 2 <= min_transitions <= max_transitions")
        if not self.retrain_period_s > 0:
            raise ValueError(f"retrain_period_s must be > 0, got {self.retrain_period_s}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if not 0.0 <= self.improvement_margin < 1.0:
            raise ValueError("improvement_margin must be in [0, 1)")
        return self


@dataclass
class Deployment:
    """A model version the trainer wrote."""

    version: int
    path: str
    sha256: str
    num_transitions: int
    holdout_mse: float
    validation_nll: float
    validation_mse: float
    train_seconds: float


@dataclass
class RoundStats:
    """What the trainer's rounds did so far (for diagnostics)."""

    rounds_rejected: int = 0
    """Rounds whose candidate did not beat the deployed model (not deployed)."""
    rounds_cancelled: int = 0
    """Rounds abandoned on request (``should_stop``); their candidates were discarded."""
    last_round_s: float = float("nan")
    """Duration of the last finished round: training and held-out evaluation [s]."""
    last_holdout_error: float = float("nan")
    """Normalised one-step error of the last round's candidate on held-out transitions."""
    last_validation_mse: float = float("nan")
    """Validation MSE (normalised) of the last round's candidate, from its fit."""


def _never() -> bool:
    return False


class OnlineTrainer:
    """Ingest -> fit -> deploy-if-better, one round per :meth:`run_round`."""

    def __init__(self, config: TrainerConfig, ensemble_config: EnsembleConfig,
                 streams: RobotStreamsConfig, alignment: AlignmentConfig, nominal: Any,
                 device: torch.device, metadata: Optional[Dict[str, Any]] = None):
        """
        Args:
            nominal: the analytical model (``step(state, action)``) for residual models.
            metadata: stored in every checkpoint header (robot, joints, rates).
        """
        self.config = config.validate()
        self.ensemble_config = ensemble_config
        self.streams, self.alignment = streams, alignment
        self.nominal, self.device = nominal, device
        self.metadata = dict(metadata or {})
        self.registry = ModelRegistry(config.model_dir)
        # the first optimiser of a process imports torch's compiler stack (about 1.5 s that no
        # stop request can interrupt): pay it now, not inside the first training round
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        for name in remove_partial_writes(str(self.registry.folder)):
            logger.warning("removed %s: a checkpoint write cut short by a crash", name)
        self.data_dir = (DataDirectory(Path(config.data_dir).expanduser())
                         if config.data_dir else None)
        self.rng = np.random.default_rng(config.seed)
        self.train_data: Optional[TransitionBatch] = None
        self.holdout: Optional[TransitionBatch] = None
        self.ingested: set = set()
        self.model = None
        self.deployed = None
        self.deployed_version = 0
        self.deployed_path: Optional[Path] = None
        self.rounds = 0
        self.untrained_rows = 0
        """Transitions added since the last finished fit (a round runs only when > 0)."""
        self.stats = RoundStats()
        self.training = False
        """True while a round fits a candidate (read by the node's diagnostics)."""
        self.epoch = 0
        """Epochs finished in the running (or last) round."""
        self._pending_initial = [Path(p).expanduser() for p in config.initial_bags]

    # -- data ------------------------------------------------------------------------------
    @property
    def num_transitions(self) -> int:
        return sum(len(b) for b in (self.train_data, self.holdout) if b is not None)

    def ingest(self, should_stop: Optional[StopCheck] = None) -> int:
        """Read bags not read yet (initial bags, then finished splits), ``INGEST_CHUNK`` at a
        time, checking ``should_stop`` between chunks; returns new rows."""
        stop = should_stop or _never
        splits = ([split.path for split in self.data_dir.finished_splits()]
                  if self.data_dir is not None else [])
        new_paths = self._pending_initial + [p for p in splits if str(p) not in self.ingested]
        self._pending_initial = []
        rows = 0
        for start in range(0, len(new_paths), INGEST_CHUNK):
            if stop():
                self._pending_initial = [p for p in new_paths[start:]
                                         if str(p) not in self.ingested]
                break
            chunk = new_paths[start:start + INGEST_CHUNK]
            self.ingested.update(str(p) for p in chunk)
            try:
                dataset = align_streams(read_robot_streams(chunk, self.streams), self.alignment)
            except (ValueError, FileNotFoundError) as error:
                logger.error("could not use %d new bag(s): %s", len(chunk), error)
                continue
            logger.info("ingested %d bag(s): %s", len(chunk), dataset.report.summary())
            rows += self.add(dataset.batch)
        return rows

    def add(self, batch: TransitionBatch) -> int:
        """Add transitions, holding a share out for deployment decisions."""
        batch = batch[batch.finite_mask()]
        if len(batch) == 0:
            return 0
        held = self.rng.random(len(batch)) < self.config.holdout_fraction
        for name, part in (("holdout", batch[held]), ("train_data", batch[~held])):
            current = getattr(self, name)
            joined = part if current is None else TransitionBatch.concatenate([current, part])
            setattr(self, name, joined[-self.config.max_transitions:])
        self.untrained_rows += len(batch)
        return len(batch)

    # -- models ----------------------------------------------------------------------------
    def _load(self, path: Path):
        return load_model(str(path), device=self.device, nominal=self.nominal)

    def warm_start(self) -> int:
        """Continue from the newest valid checkpoint; returns its version (0 if none)."""
        found = self.registry.newest_valid(self._load)
        if found is None:
            return 0
        version, path, model = found
        self.model, self.deployed, self.deployed_version = model, self._load(path), version
        self.deployed_path = path
        logger.info("warm start from %s (v%d)", path, version)
        return version

    def _new_model(self, state_dim: int, action_dim: int):
        seed = self.config.seed
        if self.config.model_kind == "residual":
            if self.nominal is None:
                raise ValueError("model_kind 'residual' needs a nominal model, and this robot "
                                 "has none (floating base): use model_kind 'ensemble'")
            return ResidualDynamics.create(self.nominal, state_dim, action_dim,
                                           self.ensemble_config, self.device, seed)
        return ProbabilisticEnsemble(state_dim, action_dim, self.ensemble_config, self.device,
                                     seed)

    def _starting_model(self, state_dim: int, action_dim: int):
        """The model a round refits when there is no candidate: the deployed checkpoint (after
        a cancelled round), else a fresh model."""
        if self.deployed_path is not None:
            try:
                return self._load(self.deployed_path)
            except (CheckpointError, OSError, ValueError) as error:
                logger.warning("cannot reload deployed %s (%s): training a fresh model",
                               self.deployed_path, error)
        return self._new_model(state_dim, action_dim)

    def _fit_config(self) -> EnsembleConfig:
        """This trainer's training settings (epochs, patience, rates, ...) on the candidate's
        architecture, which a warm-started checkpoint brings with it."""
        own = self.model.ensemble.config
        return dataclasses.replace(self.ensemble_config, **{
            name: getattr(own, name) for name in ARCHITECTURE_FIELDS})

    def run_round(self, progress: Optional[Callable] = None, force: bool = False,
                  should_stop: Optional[StopCheck] = None) -> Optional[Deployment]:
        """Ingest new data, refit, and deploy the model if it beats the deployed one
        (``force``: deploy it whatever its held-out error, as offline training does).

        Raises:
            TrainingCancelled: ``should_stop()`` returned True while the candidate was trained
                or evaluated. The candidate is discarded, nothing is written, the deployed
                version stays deployed; the next round starts from the deployed checkpoint.
        """
        stop = should_stop or _never
        self.ingest(stop)
        if stop():
            raise TrainingCancelled("stop requested while reading bags")
        if self.num_transitions < self.config.min_transitions or self.train_data is None \
                or self.holdout is None or len(self.holdout) == 0:
            return None
        if self.untrained_rows == 0 and self.model is not None and self.rounds > 0:
            return None
        self.rounds += 1
        logger.info("round %d: training on %d transitions", self.rounds, len(self.train_data))
        start = time.monotonic()
        self.training, self.epoch = True, 0

        def on_epoch(epoch: int, metrics: Dict[str, float]) -> None:
            self.epoch = epoch
            if progress is not None:
                progress(epoch, metrics)

        try:
            if self.model is None:
                self.model = self._starting_model(self.train_data.state_dim,
                                                  self.train_data.action_dim)
            # fit_dynamics is what every model's fit() calls; called here for should_stop
            report = fit_dynamics(self.model, self.train_data, self._fit_config(),
                                  seed=self.config.seed + self.rounds, progress=on_epoch,
                                  should_stop=stop)
            train_seconds = time.monotonic() - start
            candidate_error = normalised_one_step_mse(self.model, self.holdout)
            deployed_error = (normalised_one_step_mse(self.deployed, self.holdout)
                              if self.deployed is not None else float("inf"))
            if stop():
                raise TrainingCancelled("stopped on request after training")
        except TrainingCancelled:
            self._discard_candidate()
            raise
        finally:
            self.training = False
        self.untrained_rows = 0
        self.stats.last_round_s = time.monotonic() - start
        self.stats.last_holdout_error = candidate_error
        self.stats.last_validation_mse = float(report.best_val_mse)
        logger.info("round %d: %d transitions, held-out error %.5f (deployed %.5f), %.1f s",
                    self.rounds, self.num_transitions, candidate_error, deployed_error,
                    train_seconds)
        if not force and not (candidate_error
                              < (1.0 - self.config.improvement_margin) * deployed_error):
            self.stats.rounds_rejected += 1
            return None
        return self._deploy(float(report.best_val_nll), float(report.best_val_mse),
                            candidate_error, train_seconds)

    def _discard_candidate(self) -> None:
        """Forget a partly trained candidate (a cancelled round does not count)."""
        self.model = None
        self.rounds -= 1
        self.stats.rounds_cancelled += 1

    def _deploy(self, validation_nll: float, validation_mse: float, holdout_error: float,
                train_seconds: float) -> Deployment:
        version = max(self.registry.next_version(), self.deployed_version + 1)
        path = self.registry.path_for(version)
        metadata = dict(self.metadata, version=version, num_transitions=self.num_transitions,
                        holdout_mse=holdout_error, model_kind=self.config.model_kind)
        sha256 = self.model.save(str(path), metadata)
        self.deployed, self.deployed_version = self._load(path), version
        self.deployed_path = path
        return Deployment(version, str(path), sha256, self.num_transitions, holdout_error,
                          validation_nll, validation_mse, train_seconds)

    def save_now(self) -> Deployment:
        """Write the current model as the next version whatever its held-out error."""
        if self.model is None:
            raise ValueError("no model has been trained yet")
        nan = float("nan")
        error = normalised_one_step_mse(self.model, self.holdout) if self.holdout else nan
        return self._deploy(nan, nan, error, 0.0)

    def reset(self) -> None:
        """Forget the model (the next round trains a fresh one); data is kept."""
        self.model, self.deployed, self.deployed_version = None, None, 0
        self.deployed_path = None
        self.rounds = 0
