"""The trainer's engine, free of ROS: ingest finished bags, refit, deploy a better model.

Data reaches the trainer as finished rosbag2 splits in ``data_dir`` (written by the logger node
or copied from a robot): a split counts once it has its ``metadata.yaml``. On start every split
present is read again, so a restarted trainer loses nothing, and it warm-starts from the newest
valid checkpoint in ``model_dir``. A refitted model is deployed (written as the next version)
only when it beats the deployed one on held-out data.

Held-out data are whole splits, never single transitions: neighbouring time steps of one
recording are nearly the same transition, so a row-wise hold-out would score a model on what it
was trained on. Whether a split is held out is decided by its file name alone
(:func:`split_holdout_draw`: a hash of the name and ``seed``, held out when below
``holdout_fraction``). That needs no state: the assignment is the same after a restart, on
another host sharing the folder and whatever order the splits are read in, and a larger
``holdout_fraction`` only adds splits to the held-out ones. (A JSON of assignments next to the
models would do the same but could be lost or disagree with the data.)

A candidate is judged against the deployed model on the held-out splits by its open-loop error
at each of ``judge_horizons`` (see :func:`compare_errors`); with no held-out split yet, only the
first model is deployed, unjudged, and the next split to arrive is held out (whatever its
draw), so that the model is never stuck at version 1 while the draws happen to spare every
split. That split has never been trained on; after a restart it is trained on like any other
split drawn for training (a split moves from held out to trained, never the other way).
Every deployed version carries its held-out errors and the calibration of its predicted
variance (:class:`~mbrl_ros.training.model_errors.Calibration`), in the :class:`Deployment`
record and the checkpoint's metadata.

Models of the stand task (states ``[q, qd, odometry]``: the data has odometry and no IMU) are
trained, judged and saved in their heading frame (:class:`~mbrl_ros.tasks.stand.HeadingFrameModel`,
see :func:`in_training_frame`), as the planner's stand task plans with them; the checkpoint is the
wrapped model's, with ``frame: heading`` in its metadata.

``model_kind`` "gp" trains :class:`~mbrl_ros.core.gp_dynamics.GPDynamics` (settings
``gp_config``) instead of a network: each round refits the GP on all training data
(hyperparameters warm-started from the deployed checkpoint), and it is judged, deployed and
announced like any other model; the planner sees its posterior function samples as members.

A round can be cancelled (``run_round(should_stop=...)``, checked before every minibatch, or
every optimiser step of a GP fit):
the partly trained candidate is then discarded, nothing is written, and the deployed version
stays deployed; the next round starts again from the deployed checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

from mbrl_ros.core.checkpoint import CheckpointError, remove_partial_writes
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.ensemble_config import ARCHITECTURE_FIELDS
from mbrl_ros.core.gp_dynamics import ARCHITECTURE_FIELDS as GP_ARCHITECTURE_FIELDS
from mbrl_ros.core.gp_dynamics import GPDynamics, GPDynamicsConfig, fit_gp_dynamics
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.core.model_registry import ModelRegistry
from mbrl_ros.core.model_training import TrainingCancelled, fit_dynamics
from mbrl_ros.core.residual import ResidualDynamics
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.data.alignment import align_streams
from mbrl_ros.data.bag_reader import read_robot_streams
from mbrl_ros.data.data_directory import DataDirectory
from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig
from mbrl_ros.tasks.stand import HeadingFrameModel
from mbrl_ros.training.model_errors import (Calibration, calibration, consecutive_windows,
                                            normalised_one_step_mse, open_loop_mse, run_ids)

logger = logging.getLogger(__name__)

MODEL_KINDS = ("residual", "ensemble", "gp")

StopCheck = Callable[[], bool]
"""``should_stop()``: True when the running round must be abandoned (node shutdown, reset)."""
INGEST_CHUNK = 4
"""Bags read between two checks of a stop request."""
HOLDOUT_HASH_BYTES = 8
"""Bytes of a split's name hash read as its hold-out draw (a uniform number in [0, 1))."""
GP_JUDGE_ELEMENTS = 1 << 25
"""Most kernel entries (members x rows x support points x outputs) of one GP prediction while
judging and calibrating: the held-out batches (thousands of rows) are split to stay below."""


@dataclass(frozen=True)
class TrainerConfig:
    """Settings of the online trainer."""

    data_dir: str = "~/.ros/mbrl/data"
    """Folder of finished rosbag2 splits to learn from (the logger's output); empty: none
    (offline training from given bags only)."""
    model_dir: str = "~/.ros/mbrl/models"
    """Folder of versioned checkpoints (model_<version>.mbrl)."""
    model_kind: str = "residual"
    """"residual": analytical URDF model + learned correction; "ensemble": network only;
    "gp": Gaussian-process dynamics (settings ``gp.*``, for a few thousand transitions)."""
    initial_bags: Tuple[str, ...] = ()
    """Bags to learn from before any online data (offline start), read once at start."""
    min_transitions: int = 300
    """No model is trained before this many transitions exist."""
    retrain_period_s: float = 5.0
    """Seconds between training rounds (new data is read at every round)."""
    holdout_fraction: float = 0.1
    """Probability that a finished split (a whole bag) is held out to decide deployment
    instead of trained on; fixed by the split's name and seed, so the same after a restart."""
    improvement_margin: float = 0.0
    """A new model is deployed if the mean over judge_horizons of its held-out error / the
    deployed one's is < 1 - margin."""
    judge_horizons: Tuple[int, ...] = (1, 5, 20)
    """Open-loop horizons [model steps] of the held-out errors a new model is judged on; one
    longer than every run of consecutive held-out transitions is skipped."""
    judge_max_windows: int = 4096
    """Most open-loop rollouts per horizon when judging (evenly spaced over the held-out
    data); bounds the time a round spends judging."""
    max_transitions: int = 500000
    """Most transitions kept for training (oldest dropped first)."""
    seed: int = 0
    """Seed of the hold-out assignment and the model initialisation."""

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
        if not self.judge_horizons or min(self.judge_horizons) < 1:
            raise ValueError(f"judge_horizons must be >= 1, got {self.judge_horizons}")
        if self.judge_max_windows < 1:
            raise ValueError(f"judge_max_windows must be >= 1, got {self.judge_max_windows}")
        return self


@dataclass
class Deployment:
    """A model version the trainer wrote."""

    version: int
    path: str
    sha256: str
    num_transitions: int
    """Transitions the trainer held (training and held-out)."""
    holdout_mse: float
    """Normalised one-step error on every held-out transition (NaN: none held out yet)."""
    validation_nll: float
    """Validation NLL (normalised) from the fit."""
    validation_mse: float
    """Validation MSE (normalised) from the fit."""
    train_seconds: float
    """Duration of the fit [s]."""
    holdout_errors: Dict[int, float] = field(default_factory=dict)
    """Horizon [model steps] -> normalised open-loop error on the held-out data, for each
    judged horizon (empty: none held out yet)."""
    calibration: Calibration = field(default_factory=Calibration)
    """Calibration of the predicted one-step variance on the held-out data (NaN: none held
    out yet, or the model predicts no variance)."""
    decision: str = ""
    """Why this version was written (the deployment decision, in words)."""


@dataclass(frozen=True)
class Judgement:
    """The deployment decision on one candidate."""

    deploy: bool
    """True: the candidate replaces the deployed model."""
    reason: str
    """The decision in words (logged, and kept with a deployed version)."""
    candidate_errors: Dict[int, float] = field(default_factory=dict)
    """Horizon -> the candidate's held-out open-loop error."""
    deployed_errors: Dict[int, float] = field(default_factory=dict)
    """Horizon -> the deployed model's (inf where none is deployed)."""
    score: float = math.nan
    """Mean over horizons of candidate / deployed error (NaN: not compared)."""


def split_holdout_draw(name: str, seed: int) -> float:
    """A number in [0, 1) fixed by a split's file ``name`` and ``seed`` (sha256 of both):
    the split is held out when it is below ``holdout_fraction``."""
    digest = hashlib.sha256(f"{seed}:{name}".encode("utf-8")).digest()
    return int.from_bytes(digest[:HOLDOUT_HASH_BYTES], "big") / float(1 << 8 * HOLDOUT_HASH_BYTES)


def error_ratio(candidate: float, deployed: float) -> float:
    """``candidate / deployed`` error, with the limits: a non-finite candidate error is inf
    (never better), a non-finite deployed one 0 (anything finite is better)."""
    if not math.isfinite(candidate):
        return math.inf
    if not math.isfinite(deployed):
        return 0.0
    if deployed <= 0.0:
        return 1.0 if candidate <= 0.0 else math.inf
    return candidate / deployed


def compare_errors(candidate: Dict[int, float], deployed: Dict[int, float],
                   margin: float) -> Judgement:
    """The deployment rule: deploy when the mean over horizons of candidate / deployed
    held-out error is below ``1 - margin``.

    The mean of ratios weighs every horizon alike whatever its error's size, and lets a
    candidate that is much better at long horizons win against a slightly worse one-step
    error (a planner relies on its whole horizon).
    """
    ratios = [error_ratio(candidate[h], deployed[h]) for h in sorted(candidate)]
    score = float(np.mean(ratios))
    threshold = 1.0 - margin
    deploy = bool(score < threshold)
    errors = ", ".join(f"{h} steps {candidate[h]:.5g} (deployed {deployed[h]:.5g})"
                       for h in sorted(candidate))
    verdict = "better: deploy" if deploy else "not better: keep the deployed model"
    return Judgement(deploy, f"held-out error {errors}; mean ratio {score:.4g} vs "
                             f"{threshold:.4g}: {verdict}", dict(candidate), dict(deployed), score)


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
    last_decision: str = ""
    """Why the last round's candidate was deployed or not, in words."""


def uses_heading_frame(streams: RobotStreamsConfig) -> bool:
    """Whether the trainer's models learn in the heading frame: exactly when its states are the
    stand task's ``[q, qd, odometry]`` (:class:`~mbrl_ros.tasks.stand.StandLayout`), i.e. the
    data has odometry and no IMU (the planner's stand task wraps what it loads the same way)."""
    return bool(streams.odom_topic) and not streams.imu_topic


def in_training_frame(model: Any, streams: RobotStreamsConfig) -> Any:
    """``model`` as the trainer trains, judges and saves it: in the heading frame
    (:class:`~mbrl_ros.tasks.stand.HeadingFrameModel`) where :func:`uses_heading_frame`, else
    as it is."""
    if uses_heading_frame(streams) and not isinstance(model, HeadingFrameModel):
        return HeadingFrameModel(model, len(streams.joints))
    return model


def unwrapped(model: Any) -> Any:
    """The model under a :class:`~mbrl_ros.tasks.stand.HeadingFrameModel` (what a checkpoint
    holds), or ``model`` itself."""
    return model.model if isinstance(model, HeadingFrameModel) else model


def fitted_part(model: Any, batch: TransitionBatch) -> Tuple[Any, TransitionBatch]:
    """``(model, batch)`` as :func:`~mbrl_ros.core.model_training.fit_dynamics` must train
    them: a heading-frame model's wrapped model on ``batch`` in its heading frames (what
    ``HeadingFrameModel.fit`` does), any other model on ``batch`` as it is."""
    if isinstance(model, HeadingFrameModel):
        return model.model, model.heading_batch(batch)
    return model, batch


def _never() -> bool:
    return False


class _RowChunks:
    """``model`` predicting at most ``rows`` rows per call (the same predictions, bounded
    memory); every other attribute is the model's."""

    def __init__(self, model: Any, rows: int) -> None:
        self.model, self.rows = model, rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def predict(self, state: torch.Tensor, action: torch.Tensor, grad: bool = False):
        count = state.shape[-2]
        if count <= self.rows:
            return self.model.predict(state, action, grad)
        parts = [self.model.predict(state[..., start:start + self.rows, :],
                                    action[..., start:start + self.rows, :], grad)
                 for start in range(0, count, self.rows)]
        return (torch.cat([mean for mean, _ in parts], dim=1),
                torch.cat([var for _, var in parts], dim=1))


def judged_model(model: Any) -> Any:
    """``model`` as the trainer judges it: a fitted GP (possibly in its heading frame) predicts
    in row chunks of at most :data:`GP_JUDGE_ELEMENTS` kernel entries; any other model as it
    is."""
    inner = unwrapped(model)
    if not isinstance(inner, GPDynamics) or inner.samples is None:
        return model
    work = inner.num_members * int(inner.samples.support.shape[1]) * inner.state_dim
    return _RowChunks(model, max(1, GP_JUDGE_ELEMENTS // work))


class OnlineTrainer:
    """Ingest -> fit -> deploy-if-better, one round per :meth:`run_round`."""

    def __init__(self, config: TrainerConfig, ensemble_config: EnsembleConfig,
                 streams: RobotStreamsConfig, alignment: AlignmentConfig, nominal: Any,
                 device: torch.device, metadata: Optional[Dict[str, Any]] = None,
                 gp_config: Optional[GPDynamicsConfig] = None):
        """
        Args:
            nominal: the analytical model (``step(state, action)``) for residual models.
            metadata: stored in every checkpoint header (robot, joints, rates).
            gp_config: settings of ``model_kind`` "gp" (default: ``GPDynamicsConfig()``).
        """
        self.config = config.validate()
        self.ensemble_config = ensemble_config
        self.gp_config = (gp_config or GPDynamicsConfig()).validate()
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
        self.train_data: Optional[TransitionBatch] = None
        self.holdout: Optional[TransitionBatch] = None
        self.split_held_out: Dict[str, bool] = {}
        self.hold_out_next_split = False
        """Set when a candidate could not be judged for want of held-out data: the next new
        split is held out."""
        """Name -> held out, for every split added by name (see :func:`split_holdout_draw`)."""
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
            for index, path in enumerate(chunk):
                rows += self.add(dataset.batch[dataset.recording == index], split=path.name)
        return rows

    def is_held_out(self, split: str) -> bool:
        """Whether the split named ``split`` is held out (the same on every start)."""
        return split_holdout_draw(split, self.config.seed) < self.config.holdout_fraction

    @property
    def has_holdout(self) -> bool:
        """True once some transitions are held out."""
        return self.holdout is not None and len(self.holdout) > 0

    def add(self, batch: TransitionBatch, split: Optional[str] = None) -> int:
        """Add transitions, to the held-out or the training data.

        Args:
            split: the name of the split (bag) ``batch`` is: all of it is held out or all
                trained on, as :meth:`is_held_out` says. None (transitions of unknown origin,
                e.g. the offline tool's): the end of each of its episodes is held out
                instead (see :meth:`_anonymous_holdout`).
        """
        batch = batch[batch.finite_mask()]
        if len(batch) == 0:
            return 0
        if split is None:
            held = self._anonymous_holdout(batch)
        else:
            forced = self.hold_out_next_split and split not in self.split_held_out
            self.split_held_out[split] = self.is_held_out(split) or forced
            if forced:
                self.hold_out_next_split = False
                logger.info("holding out split %s to judge the next candidates on", split)
            held = np.full(len(batch), self.split_held_out[split])
        for name, part in (("holdout", batch[held]), ("train_data", batch[~held])):
            current = getattr(self, name)
            joined = part if current is None else TransitionBatch.concatenate([current, part])
            setattr(self, name, joined[-self.config.max_transitions:])
        self.untrained_rows += len(batch)
        return len(batch)

    def _anonymous_holdout(self, batch: TransitionBatch) -> np.ndarray:
        """[N] bool held-out rows of a batch without a split name (e.g. the offline tool's
        bags): the end of every run of consecutive transitions (:func:`run_ids`, an episode),
        ``holdout_fraction`` of the batch in all, at least one row while nothing is held out.

        Run ``r`` gives its last ``round(f * end_r) - round(f * start_r)`` rows (``start_r``,
        ``end_r``: its row range in the batch), so the shares add up to ``round(f * N)`` even
        for runs of one transition, of which every ``1 / f``-th is held out. A run's tail,
        not random rows: only its first held-out transition neighbours training data. Not
        whole episodes at random: a few long episodes would make the held-out share anything
        from nothing to most of the data. The same batch always gives the same split.
        """
        runs = run_ids(batch)
        lengths = np.bincount(runs)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        fraction = self.config.holdout_fraction
        tails = np.round(fraction * ends) - np.round(fraction * starts)
        if tails.sum() == 0 and not self.has_holdout:
            tails[-1] = 1
        return np.arange(len(batch)) >= (ends - tails)[runs]

    # -- models ----------------------------------------------------------------------------
    def _load(self, path: Path):
        return in_training_frame(load_model(str(path), device=self.device, nominal=self.nominal),
                                 self.streams)

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
            model = ResidualDynamics.create(self.nominal, state_dim, action_dim,
                                            self.ensemble_config, self.device, seed)
        elif self.config.model_kind == "gp":
            model = GPDynamics(state_dim, action_dim, self.gp_config, self.device)
        else:
            model = ProbabilisticEnsemble(state_dim, action_dim, self.ensemble_config,
                                          self.device, seed)
        return in_training_frame(model, self.streams)

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

    def _gp_fit_config(self, model: GPDynamics) -> GPDynamicsConfig:
        """This trainer's GP fit settings on the GP's own architecture (members, kernel,
        angles, random features: a warm-started checkpoint brings them)."""
        return dataclasses.replace(self.gp_config, **{
            name: getattr(model.config, name) for name in GP_ARCHITECTURE_FIELDS})

    def _fit_candidate(self, seed: int, on_epoch: Callable, stop: StopCheck
                       ) -> Tuple[float, float]:
        """Fit :attr:`model` on the training data; returns its ``(validation_nll,
        validation_mse)`` (NaN for a GP: its fit has no validation split, it is judged on the
        held-out data only). Raises TrainingCancelled when ``stop()`` turns True."""
        model, batch = fitted_part(self.model, self.train_data)
        if isinstance(model, GPDynamics):
            def step(iteration: int, metrics: Dict[str, float]) -> None:
                on_epoch(iteration + 1, metrics)
                if stop():
                    raise TrainingCancelled("stop requested while fitting the GP")

            if stop():
                raise TrainingCancelled("stop requested before fitting the GP")
            fit_gp_dynamics(model, batch, self._gp_fit_config(model), seed=seed, progress=step)
            return math.nan, math.nan
        # fit_dynamics is what every model's fit() calls; called here for should_stop
        report = fit_dynamics(model, batch, self._fit_config(), seed=seed, progress=on_epoch,
                              should_stop=stop)
        return float(report.best_val_nll), float(report.best_val_mse)

    def judged_horizons(self) -> Tuple[int, ...]:
        """The ``judge_horizons`` with a window of as many consecutive held-out transitions
        (the others are skipped, with a log line)."""
        if not self.has_holdout:
            return ()
        judged = []
        for horizon in sorted(set(self.config.judge_horizons)):
            if len(consecutive_windows(self.holdout, horizon)) > 0:
                judged.append(horizon)
            else:
                logger.info("horizon %d skipped: no %d consecutive held-out transitions",
                            horizon, horizon)
        return tuple(judged)

    def holdout_errors(self, model, horizons: Tuple[int, ...]) -> Dict[int, float]:
        """Horizon -> ``model``'s normalised open-loop error on the held-out data (inf
        without a model)."""
        model = judged_model(model)
        return {h: open_loop_mse(model, self.holdout, h, self.config.judge_max_windows)
                for h in horizons}

    def judge(self, candidate) -> Judgement:
        """Whether ``candidate`` should replace the deployed model (:func:`compare_errors` on
        the held-out data). With nothing to judge on yet, only a first model is deployed."""
        horizons = self.judged_horizons()
        if not horizons:
            missing = ("no held-out split yet" if not self.has_holdout else
                       f"no held-out run as long as any of {self.config.judge_horizons} steps")
            if self.deployed is None:
                return Judgement(True, f"{missing}: the first model is deployed without a "
                                       f"held-out comparison")
            self.hold_out_next_split = not self.has_holdout
            return Judgement(False, f"{missing}: cannot compare with deployed "
                                    f"v{self.deployed_version}, which stays deployed"
                             + ("; the next split is held out" if not self.has_holdout else ""))
        return compare_errors(self.holdout_errors(candidate, horizons),
                              self.holdout_errors(self.deployed, horizons),
                              self.config.improvement_margin)

    def run_round(self, progress: Optional[Callable] = None, force: bool = False,
                  should_stop: Optional[StopCheck] = None) -> Optional[Deployment]:
        """Ingest new data, refit, and deploy the model if it beats the deployed one
        (:meth:`judge`; ``force``: deploy it whatever its held-out error, as offline training
        does).

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
                or len(self.train_data) == 0:
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
            validation_nll, validation_mse = self._fit_candidate(
                self.config.seed + self.rounds, on_epoch, stop)
            train_seconds = time.monotonic() - start
            candidate_error = self._one_step_error(self.model)
            judgement = self.judge(self.model)
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
        self.stats.last_validation_mse = validation_mse
        self.stats.last_decision = judgement.reason
        logger.info("round %d: %d transitions (%d held out), %.1f s: %s", self.rounds,
                    self.num_transitions, len(self.holdout) if self.has_holdout else 0,
                    train_seconds, judgement.reason)
        if not force and not judgement.deploy:
            self.stats.rounds_rejected += 1
            return None
        reason = judgement.reason if judgement.deploy else f"forced ({judgement.reason})"
        return self._deploy(validation_nll, validation_mse, train_seconds,
                            judgement.candidate_errors, reason)

    def _one_step_error(self, model) -> float:
        """Normalised one-step error on every held-out transition (NaN: none held out)."""
        return (normalised_one_step_mse(judged_model(model), self.holdout) if self.has_holdout
                else math.nan)

    def _discard_candidate(self) -> None:
        """Forget a partly trained candidate (a cancelled round does not count)."""
        self.model = None
        self.rounds -= 1
        self.stats.rounds_cancelled += 1

    def _deploy(self, validation_nll: float, validation_mse: float, train_seconds: float,
                holdout_errors: Dict[int, float], decision: str) -> Deployment:
        """Write the current model as the next version, with its held-out errors and
        calibration in the checkpoint's metadata, and make it the deployed one."""
        version = max(self.registry.next_version(), self.deployed_version + 1)
        path = self.registry.path_for(version)
        holdout_error = self._one_step_error(self.model)
        calibrated = (calibration(judged_model(self.model), self.holdout) if self.has_holdout
                      else Calibration())
        metadata = dict(self.metadata, version=version, num_transitions=self.num_transitions,
                        holdout_mse=holdout_error, model_kind=self.config.model_kind,
                        holdout_errors={str(h): e for h, e in sorted(holdout_errors.items())},
                        calibration=dataclasses.asdict(calibrated), decision=decision,
                        holdout_splits=sum(self.split_held_out.values()),
                        holdout_transitions=len(self.holdout) if self.has_holdout else 0)
        sha256 = self.model.save(str(path), metadata)
        self.deployed, self.deployed_version = self._load(path), version
        self.deployed_path = path
        logger.info("deployed v%d: %s; held-out calibration: %s", version, decision,
                    calibrated.summary())
        return Deployment(version, str(path), sha256, self.num_transitions, holdout_error,
                          validation_nll, validation_mse, train_seconds, dict(holdout_errors),
                          calibrated, decision)

    def save_now(self) -> Deployment:
        """Write the current model as the next version whatever its held-out error."""
        if self.model is None:
            raise ValueError("no model has been trained yet")
        nan = float("nan")
        errors = self.holdout_errors(self.model, self.judged_horizons())
        return self._deploy(nan, nan, 0.0, errors, "saved on request, not judged")

    def reset(self) -> None:
        """Forget the model (the next round trains a fresh one); data is kept."""
        self.model, self.deployed, self.deployed_version = None, None, 0
        self.deployed_path = None
        self.rounds = 0
