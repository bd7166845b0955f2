"""trainer_node: learns the dynamics ensemble from logged data, in its own process.

Training runs on a worker thread so the node keeps answering services and publishing
diagnostics; a better model is written atomically as the next version and announced on
/mbrl/model_update (transient local, so a planner that starts late gets the latest).
"""

from __future__ import annotations

import os
import threading
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from mbrl_ros.core.checkpoint import file_sha256
from mbrl_ros.core.ensemble import EnsembleConfig
from mbrl_ros.data.dataset_config import AlignmentConfig, RobotStreamsConfig
from mbrl_ros.msg import ModelUpdate
from mbrl_ros.nodes.parameters import declare_config
from mbrl_ros.nodes.spin import run_node
from mbrl_ros.robots.reach_task import load_robot
from mbrl_ros.training.config_file import TrainerNodeConfig, node_nominal
from mbrl_ros.training.online_trainer import Deployment, OnlineTrainer, TrainerConfig

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


class TrainerNode(Node):
    """Runs :class:`OnlineTrainer` rounds and announces deployed models."""

    def __init__(self, **kwargs):
        super().__init__("trainer", **kwargs)
        node_config = declare_config(self, TrainerNodeConfig)
        if node_config.niceness > 0:  # training yields the CPU to the control loop
            os.nice(node_config.niceness)
        torch.set_num_threads(node_config.torch_threads)
        device = torch.device(node_config.device)
        robot = load_robot(node_config.urdf, node_config.ee_frame)
        joints = tuple(robot.joint_names)
        streams = declare_config(self, RobotStreamsConfig, "data.", overrides=dict(
            joints=joints, command_topic="/position_controller/commands"))
        alignment = declare_config(self, AlignmentConfig, "alignment.", overrides=dict(
            control_rate_hz=1.0 / node_config.model_period_s))
        if abs(alignment.control_rate_hz * node_config.model_period_s - 1.0) > 1e-6:
            raise ValueError("alignment.control_rate_hz must be 1 / model_period_s")
        self.trainer = OnlineTrainer(
            declare_config(self, TrainerConfig), declare_config(self, EnsembleConfig, "ensemble."),
            streams, alignment,
            node_nominal(robot, node_config, device),
            device, metadata=dict(joints=list(joints), model_period_s=node_config.model_period_s,
                                  urdf=node_config.urdf))
        self.update_pub = self.create_publisher(ModelUpdate, "/mbrl/model_update", LATCHED)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/save_now", self._on_save_now)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_timer(1.0, self._publish_diagnostics)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.last_message = "waiting for data"
        version = self.trainer.warm_start()
        if version:
            path = self.trainer.registry.path_for(version)
            self._announce(Deployment(version, str(path), file_sha256(str(path)), 0, float("nan"),
                                      float("nan"), float("nan"), 0.0))
        self._worker = threading.Thread(target=self._train_loop, name="trainer", daemon=True)
        self._worker.start()

    def _train_loop(self) -> None:
        period = self.trainer.config.retrain_period_s
        while not self._stop.is_set():
            try:
                with self._lock:
                    deployment = self.trainer.run_round()
                if deployment is not None:
                    self._announce(deployment)
                self.last_message = (f"{self.trainer.num_transitions} transitions, deployed "
                                     f"v{self.trainer.deployed_version}")
            except Exception as error:  # keep training alive on any data/model error
                self.last_message = f"training round failed: {error}"
                self.get_logger().error(self.last_message)
            self._wake.wait(period)
            self._wake.clear()

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
        self.get_logger().info(f"deployed model v{deployment.version} "
                               f"({deployment.num_transitions} transitions, held-out error "
                               f"{deployment.holdout_mse:.5f})")

    def _on_save_now(self, request, response):
        with self._lock:
            if self.trainer.model is None:
                response.success, response.message = False, "no model trained yet"
                return response
            deployment = self.trainer.save_now()
        self._announce(deployment)
        response.success, response.message = True, f"saved v{deployment.version}"
        return response

    def _on_reset(self, request, response):
        with self._lock:
            self.trainer.reset()
        self._wake.set()
        response.success, response.message = True, "model reset; data kept"
        return response

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name="mbrl_ros: trainer",
                                  hardware_id="mbrl", message=self.last_message)
        if "failed" in self.last_message:
            status.level = DiagnosticStatus.WARN
        status.values = [KeyValue(key="transitions", value=str(self.trainer.num_transitions)),
                         KeyValue(key="deployed_version",
                                  value=str(self.trainer.deployed_version)),
                         KeyValue(key="rounds", value=str(self.trainer.rounds))]
        self.diagnostics_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

    def destroy_node(self) -> None:
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=30.0)
        super().destroy_node()


def main(args=None) -> None:
    # training runs on its own thread; one executor thread serves topics and services (a
    # service waits for the current training round). rclpy's multi-threaded executor would
    # spin a core meanwhile (py-spy).
    run_node(TrainerNode, SingleThreadedExecutor, args)


if __name__ == "__main__":
    main()
