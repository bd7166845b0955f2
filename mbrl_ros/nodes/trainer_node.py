"""trainer_node: learns the dynamics ensemble from logged data, in its own process.

Training runs on a worker thread so the node keeps answering services and publishing
diagnostics; a better model is written atomically as the next version and announced on
mbrl/model_update (transient local, so a planner that starts late gets the latest).

After each deployed dynamics version (and after the warm-start announcement) a value/policy
round follows (parameters ``value.*``, :mod:`mbrl_ros.training.value_training`): the planner's
terminal value and policy prior, learned for the planner's task (``task``) and cost
(``cost.*``, the same parameters as the planner's: the shipped files keep both in a ``/**``
section that both nodes read), announced on the same topic with ``model_kind`` "value_policy".
Each kind has its own publisher, whose transient-local history keeps its newest message: a
planner that starts late gets the newest dynamics and the newest value/policy, however many of
one kind followed the other (its subscription needs a depth of at least
``MODEL_UPDATE_READER_DEPTH``). A failing value/policy round is logged and never stops
dynamics training.

Shutdown is prompt: ``on_shutdown()`` (called by :func:`~mbrl_ros.nodes.spin.run_node` after
SIGINT/SIGTERM) cancels a running round at its next minibatch, discards the partly trained
candidate and joins the worker; the last deployed checkpoint stays the newest valid one.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from typing import Dict, List, Optional, Tuple

import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from mbrl_ros.core.checkpoint import file_sha256
from mbrl_ros.core.ensemble import EnsembleConfig
from mbrl_ros.core.gp_dynamics_config import GPDynamicsConfig
from mbrl_ros.core.model_training import TrainingCancelled
from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig
from mbrl_ros.msg import ModelUpdate
from mbrl_ros.nodes.parameters import declare_config
from mbrl_ros.nodes.spin import run_node
from mbrl_ros.robots.robot_model import with_continuous_angles
from mbrl_ros.tasks.reach import load_robot
from mbrl_ros.training.config_file import DEFAULT_COMMAND_TOPIC, TrainerNodeConfig, node_nominal
from mbrl_ros.training.online_trainer import Deployment, OnlineTrainer, TrainerConfig
from mbrl_ros.core.value_prior import VALUE_POLICY_KIND
from mbrl_ros.training.value_training import (COST_CONFIGS, ValueDeployment, ValueTrainer,
                                              ValueTrainingConfig, value_data, value_task,
                                              value_trainer_for)

MODEL_UPDATE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""QoS of each of the two mbrl/model_update publishers (dynamics, value/policy): each keeps its
newest announcement for late subscribers."""
MODEL_UPDATE_READER_DEPTH = 10
"""Least history depth of a mbrl/model_update subscription (reliable, transient local): a late
subscriber is sent the newest message of each publisher at once, and a shallower reader
history would drop all but the last of them. 10 leaves room for more kinds and trainers."""
DIAGNOSTICS_PERIOD_S = 1.0
"""Period of the trainer's /diagnostics status."""
SHUTDOWN_JOIN_TIMEOUT_S = 2.0
"""Longest wait for the training thread at shutdown (a round stops at its next minibatch;
only reading a large batch of new bags cannot be interrupted)."""
SERVICE_LOCK_TIMEOUT_S = 2.0
"""Longest time a service waits for the running round (the executor thread is blocked
meanwhile); then it answers 'busy'."""
LOGGED_PACKAGE = "mbrl_ros"
"""Python loggers under this name (trainer engine, data reading) go to the node's log."""


class _RosLogBridge(logging.Handler):
    """Forwards Python ``logging`` records (the ROS-free engine's) to the node's logger."""

    def __init__(self, node: Node) -> None:
        super().__init__(level=logging.INFO)
        self._logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                self._logger.error(text)
            elif record.levelno >= logging.WARNING:
                self._logger.warning(text)
            else:
                self._logger.info(text)
        except Exception:  # noqa: BLE001 - logging must never break training
            self.handleError(record)


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


def trainer_status(trainer: OnlineTrainer, error: Optional[str],
                   value: Optional[ValueTrainer] = None,
                   value_error: Optional[str] = None) -> Tuple[bytes, str, Dict[str, str]]:
    """``(level, message, values)`` of the trainer's diagnostics: ERROR after a failed round,
    OK while training or idle, WARN while it waits for enough data for a first model or after
    a failed value/policy round (``value``: the value/policy trainer, None when off)."""
    transitions, version = trainer.num_transitions, trainer.deployed_version
    if error is not None:
        level, message = DiagnosticStatus.ERROR, f"error: {error}"
    elif value is not None and value.training:
        level, message = DiagnosticStatus.OK, (f"training value/policy round {value.rounds} "
                                               f"({transitions} transitions)")
    elif trainer.training:
        level, message = DiagnosticStatus.OK, (f"training round {trainer.rounds}, epoch "
                                               f"{trainer.epoch} ({transitions} transitions)")
    elif value_error is not None:
        level, message = DiagnosticStatus.WARN, f"value/policy: {value_error}"
    elif version == 0 and transitions < trainer.config.min_transitions:
        level, message = DiagnosticStatus.WARN, (
            f"waiting for data: {transitions} of {trainer.config.min_transitions} transitions")
    else:
        level = DiagnosticStatus.OK
        message = f"idle: deployed v{version}" if version else "idle: no model deployed yet"
    stats = trainer.stats
    values = {"deployed_version": str(version), "transitions": str(transitions),
              "rounds": str(trainer.rounds), "epoch": str(trainer.epoch),
              "rounds_rejected": str(stats.rounds_rejected),
              "rounds_cancelled": str(stats.rounds_cancelled),
              "last_round_s": _number(stats.last_round_s),
              "last_holdout_error": _number(stats.last_holdout_error),
              "last_validation_mse": _number(stats.last_validation_mse)}
    if value is not None:
        values["value_policy_version"] = str(value.deployed_version)
    return level, message, values


class TrainerNode(Node):
    """Runs :class:`OnlineTrainer` rounds and announces deployed models."""

    def __init__(self, **kwargs):
        super().__init__("trainer", **kwargs)
        self._worker: Optional[threading.Thread] = None
        self._destroyed = False
        self._log_bridge: Optional[_RosLogBridge] = None
        node_config = declare_config(self, TrainerNodeConfig)
        if node_config.niceness > 0:  # training yields the CPU to the control loop
            os.nice(node_config.niceness)
        torch.set_num_threads(node_config.torch_threads)
        device = torch.device(node_config.device)
        robot = load_robot(node_config.urdf, node_config.ee_frame)
        self.robot = robot
        joints = tuple(robot.joint_names)
        # relative topic names are matched in the bags under this node's namespace
        streams = declare_config(self, RobotStreamsConfig, "data.", overrides=dict(
            joints=joints, command_topic=DEFAULT_COMMAND_TOPIC)).resolved(self.resolve_topic_name)
        alignment = with_continuous_angles(declare_config(
            self, AlignmentConfig, "alignment.",
            overrides=dict(control_rate_hz=1.0 / node_config.model_period_s)),
            robot, streams.joints)
        if abs(alignment.control_rate_hz * node_config.model_period_s - 1.0) > 1e-6:
            raise ValueError("alignment.control_rate_hz must be 1 / model_period_s")
        self.trainer = OnlineTrainer(
            declare_config(self, TrainerConfig),
            with_continuous_angles(declare_config(self, EnsembleConfig, "ensemble."), robot,
                                   streams.joints),
            streams, alignment,
            node_nominal(robot, node_config, device),
            device, metadata=dict(joints=list(joints), model_period_s=node_config.model_period_s,
                                  urdf=node_config.urdf),
            gp_config=with_continuous_angles(declare_config(self, GPDynamicsConfig, "gp."),
                                             robot, streams.joints))
        package_logger = logging.getLogger(LOGGED_PACKAGE)
        self._log_level = package_logger.level
        self._log_bridge = _RosLogBridge(self)
        package_logger.addHandler(self._log_bridge)
        if package_logger.getEffectiveLevel() > logging.INFO:
            package_logger.setLevel(logging.INFO)
        self.update_pub = self.create_publisher(ModelUpdate, "mbrl/model_update",
                                                MODEL_UPDATE_QOS)
        self.value_pub = self.create_publisher(ModelUpdate, "mbrl/model_update",
                                               MODEL_UPDATE_QOS)
        """The value/policy announcements' own publisher: its history keeps the newest."""
        self.value_trainer = self._value_trainer(node_config, device)
        self._value_due = False
        """A dynamics version was announced since the last value/policy round ended."""
        self._value_error: Optional[str] = None
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/save_now", self._on_save_now)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        """Set at shutdown: the running round is cancelled and the worker ends."""
        self._cancel_round = threading.Event()
        """Set by ~/reset: the running round is cancelled, the worker goes on."""
        self._wake = threading.Event()
        self._error: Optional[str] = None
        version = self.trainer.warm_start()
        if version:
            path = self.trainer.registry.path_for(version)
            self._announce(Deployment(version, str(path), file_sha256(str(path)), 0, float("nan"),
                                      float("nan"), float("nan"), 0.0))
        if self.value_trainer is not None:
            warm = self.value_trainer.warm_start()
            if warm is not None:
                self._announce_value(warm)
        self._worker = threading.Thread(target=self._train_loop, name="trainer", daemon=True)
        self._worker.start()

    def _value_trainer(self, node_config: TrainerNodeConfig,
                       device: torch.device) -> Optional[ValueTrainer]:
        """The value/policy trainer for the planner's task and cost (parameters ``task``,
        ``cost.*``, ``value.*``); None (logged) when disabled or impossible for this robot."""
        cost = declare_config(self, COST_CONFIGS[node_config.task], "cost.")
        config = declare_config(self, ValueTrainingConfig, "value.")
        self.cost_config, self.value_config = cost, config
        """The planner's task cost settings and the value/policy rounds' (as read)."""
        if not config.enabled:
            self.get_logger().info("value/policy training off (value.enabled: false)")
            return None
        nominal = self.trainer.nominal
        try:
            task = value_task(node_config.task, self.robot, cost, node_config.command_mode,
                              getattr(nominal, "ee_position_batch", None), device)
            trainer = value_trainer_for(config, self.trainer.config.model_dir, task,
                                        self.trainer.metadata, device)
        except ValueError as error:
            self.get_logger().error(f"value/policy training off: {error}")
            return None
        self.get_logger().info(
            f"value/policy rounds for the {task.name} task ({config.steps_per_round} updates "
            f"after each deployed model) in {trainer.registry.folder}")
        return trainer

    def _should_stop(self) -> bool:
        return self._stop.is_set() or self._cancel_round.is_set()

    def _train_loop(self) -> None:
        period = self.trainer.config.retrain_period_s
        while not self._stop.is_set():
            try:
                with self._lock:
                    deployment = self.trainer.run_round(should_stop=self._should_stop)
                self._error = None
                if deployment is not None:
                    self._announce(deployment)
            except TrainingCancelled:
                self.get_logger().info(f"training round cancelled: candidate discarded, "
                                       f"deployed model stays v{self.trainer.deployed_version}")
            except Exception as error:  # keep training alive on any data/model error
                self._error = f"training round failed: {error}"
                self.get_logger().error(self._error)
            self._value_round()
            self._wake.wait(period)
            self._wake.clear()

    def _value_round(self) -> None:
        """A value/policy round with the deployed dynamics, when one was announced since the
        last round; its errors are logged (dynamics training goes on)."""
        trainer = self.value_trainer
        if trainer is None or not self._value_due or self._stop.is_set():
            return
        try:
            with self._lock:
                if self.trainer.deployed is None:  # reset since: wait for the next model
                    return
                deployment = trainer.run_round(
                    value_data(self.trainer.train_data, self.trainer.holdout),
                    self.trainer.deployed, self.trainer.deployed_version,
                    should_stop=self._should_stop)
            if deployment is None:  # too few transitions yet: tried again next time
                return
            self._value_due, self._value_error = False, None
            self._announce_value(deployment)
        except TrainingCancelled:
            self.get_logger().info(f"value/policy round cancelled: nothing written, deployed "
                                   f"value/policy stays v{trainer.deployed_version}")
        except Exception as error:  # noqa: BLE001 - never stops dynamics training
            self._value_due = False
            self._value_error = f"round failed: {error}"
            self.get_logger().error(f"value/policy {self._value_error}")

    def _announce_value(self, deployment: ValueDeployment) -> None:
        msg = ModelUpdate(header=Header(stamp=self.get_clock().now().to_msg()),
                          version=deployment.version, checkpoint_path=deployment.path,
                          sha256=deployment.sha256, model_kind=VALUE_POLICY_KIND,
                          num_transitions=deployment.num_transitions,
                          validation_nll=float("nan"), validation_mse=float("nan"),
                          metric_names=["steps", "q_loss", "train_seconds"],
                          metric_values=[float(deployment.steps), deployment.q_loss,
                                         deployment.train_seconds])
        self.value_pub.publish(msg)
        self.get_logger().info(
            f"deployed value/policy v{deployment.version} ({deployment.steps} updates, q_loss "
            f"{deployment.q_loss:.4g}, {deployment.train_seconds:.1f} s, with dynamics "
            f"v{deployment.dynamics_version}): {deployment.path}")

    def _announce(self, deployment: Deployment) -> None:
        msg = ModelUpdate(header=Header(stamp=self.get_clock().now().to_msg()),
                          version=deployment.version, checkpoint_path=deployment.path,
                          sha256=deployment.sha256, model_kind=self.trainer.config.model_kind,
                          num_transitions=deployment.num_transitions,
                          validation_nll=deployment.validation_nll,
                          validation_mse=deployment.validation_mse,
                          metric_names=["holdout_mse", "train_seconds"],
                          metric_values=[deployment.holdout_mse, deployment.train_seconds])
        self.update_pub.publish(msg)
        self._value_due = True
        self.get_logger().info(f"deployed model v{deployment.version} "
                               f"({deployment.num_transitions} transitions, held-out error "
                               f"{deployment.holdout_mse:.5f})")

    def _on_save_now(self, request, response):
        if not self._lock.acquire(timeout=SERVICE_LOCK_TIMEOUT_S):
            response.success = False
            response.message = "a training round is running; try again when it has finished"
            return response
        try:
            if self.trainer.model is None:
                response.success, response.message = False, "no model trained yet"
                return response
            deployment = self.trainer.save_now()
        finally:
            self._lock.release()
        self._announce(deployment)
        self._wake.set()  # the value/policy round follows on the training thread
        response.success, response.message = True, f"saved v{deployment.version}"
        return response

    def _on_reset(self, request, response):
        self._cancel_round.set()  # a running round stops at its next minibatch
        try:
            if not self._lock.acquire(timeout=SERVICE_LOCK_TIMEOUT_S):
                response.success = False
                response.message = "the trainer is busy reading data; try again"
                return response
            try:
                self.trainer.reset()
            finally:
                self._lock.release()
        finally:
            self._cancel_round.clear()
        self._wake.set()
        response.success, response.message = True, "model reset; data kept"
        return response

    def _publish_diagnostics(self) -> None:
        level, message, values = trainer_status(self.trainer, self._error, self.value_trainer,
                                                self._value_error)
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: trainer",
                                  hardware_id="mbrl", message=message)
        status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
        self.diagnostics_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

    def on_shutdown(self) -> None:
        """Cancel a running round (its candidate is discarded) and join the training thread,
        waiting at most ``SHUTDOWN_JOIN_TIMEOUT_S``."""
        self._stop_worker()

    def _stop_worker(self) -> None:
        worker = self._worker
        if worker is None:
            return
        self._worker = None
        self._stop.set()
        self._wake.set()
        worker.join(timeout=SHUTDOWN_JOIN_TIMEOUT_S)
        if worker.is_alive():
            self.get_logger().warning(
                f"training thread still busy {SHUTDOWN_JOIN_TIMEOUT_S:.1f} s after the stop "
                "request; leaving it (checkpoint writes are atomic)")

    def destroy_node(self) -> None:
        """Stop training (a no-op after ``on_shutdown``) and destroy the node; idempotent."""
        if getattr(self, "_destroyed", False):
            return
        self._destroyed = True
        if getattr(self, "_worker", None) is not None:  # None: stopped, or __init__ failed
            self._stop_worker()
        bridge = getattr(self, "_log_bridge", None)
        if bridge is not None:
            logging.getLogger(LOGGED_PACKAGE).removeHandler(bridge)
            logging.getLogger(LOGGED_PACKAGE).setLevel(self._log_level)
            self._log_bridge = None
        super().destroy_node()


def main(args: Optional[List[str]] = None) -> None:
    # training runs on its own thread; one executor thread serves topics and services (a
    # service waits at most SERVICE_LOCK_TIMEOUT_S for the current training round). rclpy's
    # multi-threaded executor would spin a core meanwhile (py-spy).
    run_node(TrainerNode, SingleThreadedExecutor, args)


if __name__ == "__main__":
    main()
