"""The trainer's value/policy rounds, free of ROS: TD-learn the planner's terminal value and
policy prior after each deployed dynamics model, and write it as the next version.

One :class:`~mbrl_ros.core.value_policy.ValuePolicy` is trained on, round after round (warm
start), on the trainer's transitions (training and held-out splits alike: the value is not
judged on them) mixed with rollouts through the newly deployed dynamics model as the planner
uses it (the stand task's in its heading frame, on the raw ``[q, qd, odometry]`` states). Its
reward is minus the planner's own per-step task cost (:class:`~mbrl_ros.core.task_reward.
TaskReward`, built from the same cost settings as the planner's); the reach task's value is
goal-conditioned, with hindsight goals from what each run of consecutive transitions reached.

Versions are written to ``<model_dir>/value_policy/model_<version>.mbrl`` (a
:class:`~mbrl_ros.core.model_registry.ModelRegistry`), with the
:data:`~mbrl_ros.core.value_prior.COMPATIBILITY_KEYS` the planner checks and the dynamics
version they were trained with in the metadata. On start the newest valid checkpoint whose
compatibility metadata matches is continued; one for another task, cost or robot is left alone.

A round can be cancelled (``should_stop``, polled before every update): nothing is written, and
the next round continues from the deployed version (or a fresh agent), as dynamics rounds do.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from mbrl_ros.core.checkpoint import CheckpointError, file_sha256, remove_partial_writes
from mbrl_ros.core.model_registry import ModelRegistry
from mbrl_ros.core.model_training import TrainingCancelled
from mbrl_ros.core.task_reward import TaskReward, task_cost_hash
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.core.value_policy import ValuePolicy, ValuePolicyConfig
from mbrl_ros.core.value_prior import COMPATIBILITY_KEYS, compatibility_error
from mbrl_ros.tasks.reach import ReachCostConfig, build_reach_cost, reach_limits
from mbrl_ros.tasks.stand import (StandCostConfig, StandLayout, build_stand_cost,
                                  stand_planner_limits)
from mbrl_ros.training.model_errors import run_ids

logger = logging.getLogger(__name__)

VALUE_POLICY_FOLDER = "value_policy"
"""Sub-folder of the trainer's ``model_dir`` holding the value/policy versions."""
TASKS = ("reach", "stand")
COST_CONFIGS = {"reach": ReachCostConfig, "stand": StandCostConfig}
"""Task -> the cost config class the planner reads under ``cost.``."""
GOAL_TERMS = {"reach": "end_effector", "stand": None}
"""Task -> the cost term whose target is the value's goal (None: no goal)."""
ARCHITECTURE_FIELDS = ("num_q", "hidden_sizes", "activation", "policy_kind")
"""ValuePolicyConfig fields a warm-started checkpoint must share with the settings."""
FINAL_LOSS_FRACTION = 0.1
"""A round's reported q_loss: the mean over this last fraction of its updates."""


@dataclass(frozen=True)
class ValueTrainingConfig:
    """Settings of the trainer's value/policy rounds (ROS parameters ``value.*``)."""

    enabled: bool = True
    """Train and deploy a value/policy after each deployed dynamics model."""
    steps_per_round: int = 300
    """TD updates per round (7-10 ms each on one CPU thread at the default sizes). Rounds
    continue the deployed agent, so short rounds add up without holding up the dynamics
    model's rounds (the trainer runs one round at a time)."""
    min_transitions: int = 500
    """No value/policy is trained before the trainer holds this many transitions."""
    hidden_sizes: Tuple[int, ...] = (128, 128)
    """Hidden layer widths of the Q networks and the policy (a warm start keeps the
    checkpoint's only when they agree)."""
    num_q: int = 2
    """Q-ensemble members."""
    learning_rate: float = 3e-4
    """Adam learning rate of the Q ensemble and the policy."""
    horizon_s: float = 0.5
    """How far ahead the value looks [s]: the discount per model step is
    ``exp(-model_period_s / horizon_s)`` (0.92 at 40 ms). Past the planner's own horizon, not
    much further: a far-sighted value learns slowly from a few minutes of logs and, where it
    is wrong, outweighs the plan's own cost."""
    batch_size: int = 256
    """Transitions per update (real + model)."""
    real_ratio: float = 0.5
    """Share of each batch from real transitions (the rest from model rollouts)."""
    rollout_horizon: int = 1
    """Model-rollout length [model steps]; 0: real transitions only."""
    goal_future_s: float = 2.0
    """Reach task: how far ahead [s] of a logged state a hindsight goal may lie."""
    seed: int = 0
    """Seed of new agents and of each round's sampling."""

    def validate(self) -> "ValueTrainingConfig":
        """Raise ValueError on a bad setting; return self."""
        if self.steps_per_round < 1 or self.min_transitions < 1:
            raise ValueError("steps_per_round and min_transitions must be >= 1")
        if not (self.horizon_s > 0 and self.goal_future_s >= 0):
            raise ValueError("horizon_s must be > 0 and goal_future_s >= 0")
        self.policy_config(self.horizon_s).validate()
        return self

    def policy_config(self, model_period_s: float) -> ValuePolicyConfig:
        """The :class:`ValuePolicyConfig` of these settings for model steps of
        ``model_period_s`` (its other fields at default)."""
        return ValuePolicyConfig(
            num_q=self.num_q, q_target_members=min(2, self.num_q),
            hidden_sizes=tuple(int(h) for h in self.hidden_sizes),
            q_learning_rate=self.learning_rate, policy_learning_rate=self.learning_rate,
            discount=math.exp(-model_period_s / self.horizon_s), batch_size=self.batch_size,
            real_ratio=self.real_ratio, rollout_horizon=self.rollout_horizon,
            goal_future_steps=int(round(self.goal_future_s / model_period_s)))


@dataclass(frozen=True)
class ValueTask:
    """What a value/policy is learned for: the planner's task, reward and action box."""

    name: str
    """"reach" or "stand"."""
    reward: TaskReward
    """Minus the planner's per-step task cost (its own cost instance)."""
    cost_hash: str
    """:func:`~mbrl_ros.core.task_reward.task_cost_hash` of the task and its cost settings."""
    state_dim: int
    action_dim: int
    action_low: Tuple[float, ...]
    action_high: Tuple[float, ...]
    """The planner's default action bounds (its ``planner.action_low/high`` defaults)."""
    relative_action: Tuple[int, ...] = ()
    """Position targets: the state index of each action's joint position (the networks see
    target minus position); empty for torques."""

    @property
    def goal_dim(self) -> int:
        return self.reward.goal_dim


def value_task(task: str, robot: Any, cost_config: Any, command_mode: str = "position",
               fk: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
               device: torch.device | str = "cpu") -> ValueTask:
    """The :class:`ValueTask` the planner's ``task`` and ``cost.*`` settings define.

    Args:
        robot: the URDF's :class:`~mbrl_ros.robots.robot_model.RobotModel` (joints, limits).
        cost_config: the planner's :class:`ReachCostConfig` or :class:`StandCostConfig`.
        command_mode: reach task: "effort" or "position" (the action box, and whether actions
            are position targets the networks see relative to the joints); stand: position.
        fk: reach task: batched forward kinematics ``[M, J] -> [M, 3]`` (the nominal model's
            ``ee_position_batch``, as the planner's).

    Raises:
        ValueError: unknown task, a cost config of another task, no FK for reaching, or
            unbounded actions.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not isinstance(cost_config, COST_CONFIGS[task]):
        raise ValueError(f"the {task} task needs a {COST_CONFIGS[task].__name__}, got "
                         f"{type(cost_config).__name__}")
    device = torch.device(device)
    joints = robot.num_joints
    if task == "reach":
        if fk is None:
            raise ValueError("the reach task's value needs the robot's forward kinematics "
                             "(a fixed-base robot with an end effector)")
        cost = build_reach_cost(robot, fk, cost_config, None, device)
        limits = reach_limits(robot, command_mode, 1.0)
        state_dim = 2 * joints
    else:
        cost = build_stand_cost(joints, cost_config, device)
        limits = stand_planner_limits(robot.position_lower, robot.position_upper,
                                      robot.velocity_limits, 1.0)
        state_dim = StandLayout(joints).state_dim
    low, high = (np.asarray(limits[name], dtype=float) for name in ("action_low", "action_high"))
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(f"the {task} task's actions must be bounded, got {low}..{high}")
    # position targets are seen relative to the joint positions (the state's first values)
    relative = tuple(range(joints)) if task == "stand" or command_mode == "position" else ()
    return ValueTask(task, TaskReward(cost, GOAL_TERMS[task]),
                     task_cost_hash(task, dataclasses.asdict(cost_config)), state_dim, joints,
                     tuple(low.tolist()), tuple(high.tolist()), relative)


@dataclass
class ValueDeployment:
    """A value/policy version the trainer wrote."""

    version: int
    path: str
    sha256: str
    steps: int
    """TD updates of this round."""
    q_loss: float
    """Mean TD error (value-scale units) over the round's last updates."""
    train_seconds: float
    """Duration of the round [s]."""
    dynamics_version: int
    """The dynamics version whose rollouts it was trained with."""
    num_transitions: int
    """Real transitions it was trained on."""


def value_data(*parts: Optional[TransitionBatch]) -> Optional[TransitionBatch]:
    """The trainer's transitions (e.g. its training and held-out data) as one batch whose
    ``episode`` is each row's run of consecutive transitions
    (:func:`~mbrl_ros.training.model_errors.run_ids`): rows stay in time order, so hindsight
    goals come from the same run. None without rows."""
    present = [p for p in parts if p is not None and len(p) > 0]
    if not present:
        return None
    offset, batches = 0, []
    for part in present:
        runs = run_ids(part) + offset
        offset = int(runs[-1]) + 1
        batches.append(dataclasses.replace(part, episode=runs))
    return TransitionBatch.concatenate(batches)


def _never() -> bool:
    return False


class ValueTrainer:
    """Warm-started value/policy rounds, written as versions of a registry."""

    def __init__(self, config: ValueTrainingConfig, folder: str | Path, task: ValueTask,
                 joints: Sequence[str], model_period_s: float,
                 device: torch.device | str = "cpu") -> None:
        """
        Args:
            folder: the value/policy registry (e.g. ``<model_dir>/value_policy``).
            joints: the URDF's joint names; ``model_period_s``: one model step [s] (both in
                the planner's compatibility check).
        """
        self.config = config.validate()
        self.task, self.device = task, torch.device(device)
        self.model_period_s = float(model_period_s)
        self.compatibility: Dict[str, Any] = dict(
            task=task.name, task_cost_hash=task.cost_hash, state_dim=task.state_dim,
            action_dim=task.action_dim, goal_dim=task.goal_dim, joints=list(joints),
            model_period_s=float(model_period_s))
        """The :data:`COMPATIBILITY_KEYS` values every version carries."""
        assert set(self.compatibility) == set(COMPATIBILITY_KEYS)
        self.registry = ModelRegistry(folder)
        for name in remove_partial_writes(str(self.registry.folder)):
            logger.warning("removed %s: a value/policy write cut short by a crash", name)
        self.agent: Optional[ValuePolicy] = None
        self.deployed_version = 0
        self.deployed_path: Optional[Path] = None
        self.rounds = 0
        self.total_steps = 0
        """TD updates of the deployed agent, over all rounds (kept in the metadata)."""
        self.training = False
        """True while a round runs."""

    # -- checkpoints -----------------------------------------------------------------------
    def _load(self, path: Path) -> ValuePolicy:
        """A checkpoint of this task, cost and robot (ValueError otherwise)."""
        agent = ValuePolicy.load(str(path), device=self.device)
        error = compatibility_error(agent.metadata, self.compatibility)
        if error:
            raise ValueError(f"it does not fit this task: {error}")
        return agent

    def warm_start(self) -> Optional[ValueDeployment]:
        """Continue from the newest valid, compatible version; returns it (as it was
        deployed, from its metadata), or None if there is none. Newer versions of another
        task, cost or robot are skipped (logged) and stay on disk."""
        found = self.registry.newest_valid(self._load)
        if found is None:
            return None
        version, path, agent = found
        self.agent = self._adopt(agent)
        self.deployed_version, self.deployed_path = version, path
        meta = agent.metadata
        self.total_steps = int(meta.get("total_steps", 0))
        logger.info("value/policy warm start from %s (v%d)", path, version)
        return ValueDeployment(version, str(path), file_sha256(str(path)),
                               int(meta.get("steps", 0)), float(meta.get("q_loss", math.nan)),
                               float(meta.get("train_seconds", math.nan)),
                               int(meta.get("dynamics_version", 0)),
                               int(meta.get("num_transitions", 0)))

    def _adopt(self, agent: ValuePolicy) -> Optional[ValuePolicy]:
        """``agent`` with this trainer's training settings, or None when its architecture
        differs from the configured one (a fresh agent is trained then)."""
        wanted = self.config.policy_config(self.model_period_s)
        own = {name: getattr(agent.config, name) for name in ARCHITECTURE_FIELDS}
        own_relative = agent.relative_action
        if own != {name: getattr(wanted, name) for name in ARCHITECTURE_FIELDS} \
                or own_relative != self.task.relative_action:
            logger.info("value/policy checkpoint architecture %s differs from the settings: "
                        "training a fresh agent", own)
            return None
        agent.config = dataclasses.replace(wanted, **own)
        for optimizer, rate in ((agent.q_optimizer, wanted.q_learning_rate),
                                (agent.policy_optimizer, wanted.policy_learning_rate)):
            for group in optimizer.param_groups:
                group["lr"] = rate
        return agent

    def _starting_agent(self) -> ValuePolicy:
        """The deployed version (after a cancelled round, or a restart), else a fresh agent."""
        if self.deployed_path is not None:
            try:
                agent = self._adopt(self._load(self.deployed_path))
                if agent is not None:
                    return agent
            except (CheckpointError, OSError, ValueError) as error:
                logger.warning("cannot reload value/policy %s (%s): training a fresh one",
                               self.deployed_path, error)
        self.total_steps = 0
        task = self.task
        return ValuePolicy(task.state_dim, task.action_dim, task.action_low, task.action_high,
                           self.config.policy_config(self.model_period_s), self.device,
                           self.config.seed,
                           goal_dim=task.goal_dim, relative_action=task.relative_action)

    # -- rounds ----------------------------------------------------------------------------
    def run_round(self, data: Optional[TransitionBatch], model: Any, dynamics_version: int,
                  should_stop: Optional[Callable[[], bool]] = None
                  ) -> Optional[ValueDeployment]:
        """Train ``steps_per_round`` updates on ``data`` (rows in time order within each
        ``episode``, see :func:`value_data`) and rollouts through ``model`` (the deployed
        dynamics as the planner uses it), and write the agent as the next version.

        Returns None (nothing trained) when disabled or with fewer than ``min_transitions``.

        Raises:
            TrainingCancelled: ``should_stop()`` returned True; nothing is written and the
                next round starts again from the deployed version.
            ValueError: data of another state or action size than the task's.
        """
        stop = should_stop or _never
        rows = 0 if data is None else len(data)
        if not self.config.enabled or rows < self.config.min_transitions:
            return None
        task = self.task
        if data.state_dim != task.state_dim or data.action_dim != task.action_dim:
            raise ValueError(f"the {task.name} task's value/policy needs states of "
                             f"{task.state_dim} and actions of {task.action_dim} values; the "
                             f"trainer's data has {data.state_dim} and {data.action_dim}")
        start = time.monotonic()
        self.training = True
        self.rounds += 1
        try:
            if self.agent is None:
                self.agent = self._starting_agent()
            goals = task.goal_dim > 0
            report = self.agent.fit(
                data, self.config.steps_per_round, model=model, reward_fn=task.reward,
                seed=self.config.seed + self.rounds, should_stop=stop,
                achieved_goal=task.reward.achieved_goal if goals else None)
            if report.steps < self.config.steps_per_round or stop():
                raise TrainingCancelled(f"value/policy round stopped after {report.steps} "
                                        f"updates")
        except BaseException:
            self.agent = None  # partly trained (or broken): the next round reloads
            self.rounds -= 1
            raise
        finally:
            self.training = False
        seconds = time.monotonic() - start
        tail = max(1, int(round(FINAL_LOSS_FRACTION * len(report.q_loss))))
        q_loss = float(np.mean(report.q_loss[-tail:]))
        self.total_steps += report.steps
        return self._deploy(report.steps, q_loss, seconds, dynamics_version, rows)

    def _deploy(self, steps: int, q_loss: float, seconds: float, dynamics_version: int,
                rows: int) -> ValueDeployment:
        version = max(self.registry.next_version(), self.deployed_version + 1)
        path = self.registry.path_for(version)
        metadata = dict(self.compatibility, version=version, dynamics_version=dynamics_version,
                        steps=steps, total_steps=self.total_steps, q_loss=q_loss,
                        num_transitions=rows, train_seconds=seconds)
        sha256 = self.agent.save(str(path), metadata)
        self.deployed_version, self.deployed_path = version, path
        logger.info("value/policy v%d written (%d updates, q_loss %.4g, %.1f s, dynamics v%d)",
                    version, steps, q_loss, seconds, dynamics_version)
        return ValueDeployment(version, str(path), sha256, steps, q_loss, seconds,
                               dynamics_version, rows)


def value_trainer_for(config: ValueTrainingConfig, model_dir: str | Path, task: ValueTask,
                      metadata: Mapping[str, Any],
                      device: torch.device | str = "cpu") -> ValueTrainer:
    """A :class:`ValueTrainer` whose registry is ``<model_dir>/value_policy``, for a trainer
    whose checkpoint metadata is ``metadata`` (``joints``, ``model_period_s``)."""
    folder = Path(model_dir).expanduser() / VALUE_POLICY_FOLDER
    return ValueTrainer(config, folder, task, metadata["joints"],
                        float(metadata["model_period_s"]), device)
