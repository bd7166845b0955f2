"""A node that drives the demo: waits for data and a model, sends goals, measures reaching.

The same goals run in rounds, one per stage of the path from MPC to model-based RL: with
``compare_nominal`` first with the planner on the hand-derived model alone (its
``model_source`` parameter "nominal"); then, after switching it to "learned", with the learned
model; with ``compare_value``, once a learned value/policy is deployed, again with its policy
prior switched on (``value.policy_prior``: the policy's rollouts among the planner's samples;
the terminal value stays off, as it does not yet help on the arm: docs/benchmarks.md)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from mbrl_ros.core.value_prior import VALUE_POLICY_KIND
from mbrl_ros.nodes.conversions import JointNameMap
from mbrl_ros.msg import GateStatus, ModelUpdate, PlanStatus
from mbrl_ros.robots.robot_model import RobotModel

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
MODEL_UPDATES = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""Model updates: dynamics and value/policy announcements share the topic."""
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@dataclass(frozen=True)
class DemoConfig:
    """What the demo asks of the robot."""

    data_phase_s: float = 30.0
    """Simulated seconds of exploration data before the first goal."""
    num_goals: int = 10
    """Random reachable goals to reach, one after the other."""
    goal_timeout_s: float = 4.0
    """Simulated seconds allowed per goal."""
    success_radius_m: float = 0.02
    """A goal is reached when the end effector stays this close for ``dwell_s``."""
    dwell_s: float = 0.3
    """Simulated seconds the end effector must stay within the radius."""
    base_frame: str = "world"
    """Frame of the goals."""
    reset_between_goals: bool = True
    """Reset the simulated robot to its home pose (``/sim/reset``) before each goal."""
    compare_nominal: bool = True
    """Run the goals first with the nominal model alone, then with the learned one (the
    planner must start with ``model_source: nominal``)."""
    planner_node: str = "/planner"
    """The planner node whose ``model_source`` parameter the demo switches."""
    switch_timeout_s: float = 10.0
    """Wall seconds to wait for the planner to accept the switch to the learned model."""
    compare_value: bool = True
    """After the learned model's round, run the goals again with the learned value/policy
    (its policy prior) once the trainer has deployed one."""
    value_wait_s: float = 60.0
    """Simulated seconds to wait for a value/policy before that round is skipped."""


NOMINAL, LEARNED, VALUE = "nominal", "learned", "learned+policy"
ROUND_PARAMETERS: Dict[str, Dict[str, object]] = {
    LEARNED: {"model_source": LEARNED},
    VALUE: {"value.policy_prior": True},
}
"""The planner parameters set when a round begins (they stay set for later rounds)."""


@dataclass
class GoalResult:
    """Outcome of one goal."""

    goal: List[float]
    reached: bool
    time_to_reach_s: float
    final_distance_m: float
    min_distance_m: float
    model_version: int
    model: str = LEARNED
    """The round: "nominal" (the hand-derived model alone), "learned" or "learned+policy"."""
    stage: str = ""
    """The planner's stage on most ticks of this goal ("mpc", "mpc+policy+value", ...)."""
    value_version: int = 0
    """Value/policy version in use at the end of the goal (0: none)."""


@dataclass
class Timeline:
    """Samples of the run, one per joint state message used."""

    time_s: list = field(default_factory=list)
    distance_m: list = field(default_factory=list)
    joint_positions: list = field(default_factory=list)
    goal_index: list = field(default_factory=list)
    gate_state: list = field(default_factory=list)
    model_version: list = field(default_factory=list)
    planning_ms: list = field(default_factory=list)


class DemoSupervisor(Node):
    """Phase 1: collect ``data_phase_s`` of data and wait for a model. Phase 2: goals."""

    def __init__(self, robot: RobotModel, goals: np.ndarray, config: DemoConfig, **kwargs):
        super().__init__("demo_supervisor",
                         parameter_overrides=[Parameter("use_sim_time", value=True)], **kwargs)
        self.robot, self.goals, self.config = robot, goals, config
        self.joint_map = JointNameMap(robot.joint_names)
        self.goal_pub = self.create_publisher(PoseStamped, "/mbrl/goal", RELIABLE)
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, RELIABLE)
        self.create_subscription(ModelUpdate, "/mbrl/model_update", self._on_model,
                                 MODEL_UPDATES)
        self.create_subscription(GateStatus, "/mbrl/gate/status", self._on_gate, LATCHED)
        self.create_subscription(PlanStatus, "/mbrl/plan/status", self._on_plan, RELIABLE)
        self.reset_client = self.create_client(Trigger, "/sim/reset")
        self.planner_parameters = AsyncParameterClient(self, config.planner_node)
        self.phases = ([NOMINAL] if config.compare_nominal else []) + [LEARNED] \
            + ([VALUE] if config.compare_value else [])
        """The round of each set of goals, in order."""
        self.switching = False
        """Waiting for the planner to switch to the next round's settings."""
        self.waiting_since: Optional[float] = None
        """Simulated time the value/policy round began waiting for a value/policy."""
        self.switch_error = ""
        self.value_version, self.values_seen = 0, []
        self.stages: Counter = Counter()
        """Planner stages seen during the current goal."""
        self.plan_value_version = 0
        self.recoveries, self.recovered, self.recovery_s = 0, 0, float("nan")
        self.model_version, self.models_seen = 0, []
        self.gate_state, self.interventions, self.planning_ms = 0, 0, 0.0
        self.first_time: Optional[float] = None
        self.goal_index = -1
        self.goal_start = self.inside_since = None
        self.min_distance = np.inf
        self.results: List[GoalResult] = []
        self.timeline = Timeline()
        self.done = False

    # -- inputs ----------------------------------------------------------------------------
    def _on_model(self, msg: ModelUpdate) -> None:
        if msg.model_kind == VALUE_POLICY_KIND:
            if msg.version > self.value_version:
                self.value_version = msg.version
                self.values_seen.append(dict(
                    time_s=self._now() - (self.first_time or self._now()),
                    version=msg.version, **dict(zip(msg.metric_names, msg.metric_values))))
            return
        if msg.version > self.model_version:
            self.model_version = msg.version
            metrics = dict(zip(msg.metric_names, msg.metric_values))
            self.models_seen.append(dict(
                time_s=self._now() - (self.first_time or self._now()), version=msg.version,
                transitions=msg.num_transitions, holdout_error=metrics.get("holdout_mse")))

    def _on_gate(self, msg: GateStatus) -> None:
        self.gate_state, self.interventions = msg.state, msg.interventions

    def _on_plan(self, msg: PlanStatus) -> None:
        self.planning_ms = msg.planning_time_ms
        self.recoveries, self.recovered = msg.recoveries, msg.recoveries_completed
        self.recovery_s = msg.mean_recovery_s
        if self.goal_index >= 0 and not self.switching and msg.stage:
            self.stages[msg.stage] += 1
            self.plan_value_version = msg.value_version

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_state(self, msg: JointState) -> None:
        arrays = self.joint_map.from_joint_state(msg)
        if arrays is None or self.done:
            return
        now = self._now()
        if self.first_time is None:
            self.first_time = now
        ee, _ = self.robot.ee_pose(arrays.position)
        distance = (float(np.linalg.norm(ee - self.goal))
                    if self.goal_index >= 0 else float("nan"))
        self._record(now, distance, arrays.position)
        if self.waiting_since is not None:
            self._wait_for_value(now)
            return
        if self.switching:
            return
        if self.goal_index < 0:
            if now - self.first_time >= self.config.data_phase_s and self.model_version > 0:
                self._next_goal(now)
            return
        self._track(now, distance)

    # -- goals -----------------------------------------------------------------------------
    def _record(self, now: float, distance: float, positions: np.ndarray) -> None:
        t = self.timeline
        t.time_s.append(now - self.first_time)
        t.distance_m.append(distance)
        t.joint_positions.append(positions.tolist())
        t.goal_index.append(self.goal_index)
        t.gate_state.append(self.gate_state)
        t.model_version.append(self.model_version)
        t.planning_ms.append(self.planning_ms)

    def _track(self, now: float, distance: float) -> None:
        self.min_distance = min(self.min_distance, distance)
        if distance <= self.config.success_radius_m:
            self.inside_since = now if self.inside_since is None else self.inside_since
            if now - self.inside_since >= self.config.dwell_s:
                self._finish_goal(True, now - self.goal_start, distance)
                return
        else:
            self.inside_since = None
        if now - self.goal_start >= self.config.goal_timeout_s:
            self._finish_goal(False, float("nan"), distance)

    @property
    def goal(self) -> np.ndarray:
        """The current goal (each round of goals repeats the same list)."""
        return self.goals[self.goal_index % len(self.goals)]

    @property
    def phase(self) -> str:
        """The model of the current round ("nominal" or "learned")."""
        return self.phases[max(self.goal_index, 0) // len(self.goals)]

    @property
    def total_goals(self) -> int:
        return len(self.goals) * len(self.phases)

    def _finish_goal(self, reached: bool, elapsed: float, distance: float) -> None:
        stage = self.stages.most_common(1)[0][0] if self.stages else ""
        self.results.append(GoalResult(self.goal.tolist(), reached, elapsed,
                                       distance, float(self.min_distance), self.model_version,
                                       self.phase, stage, self.plan_value_version))
        self.get_logger().info(
            f"goal {self.goal_index + 1}/{self.total_goals} ({self.phase} model): "
            f"{'reached in %.1f s' % elapsed if reached else 'not reached'} "
            f"(final distance {100 * distance:.1f} cm, model v{self.model_version})")
        if self.goal_index + 1 >= self.total_goals:
            self.done = True
        elif (self.goal_index + 1) % len(self.goals) == 0:
            self._begin_round(self.phases[(self.goal_index + 1) // len(self.goals)])
        else:
            self._next_goal(self._now())

    def _begin_round(self, phase: str) -> None:
        """Switch the planner to ``phase``'s settings; its goals start once it has (the
        value/policy round first waits for a value/policy)."""
        self.switching = True
        if phase == VALUE and self.value_version == 0:
            self.get_logger().info("waiting for the trainer's first value/policy")
            self.waiting_since = self._now()
            return
        self._set_round_parameters(phase)

    def _wait_for_value(self, now: float) -> None:
        if self.value_version > 0:
            self.waiting_since = None
            self._set_round_parameters(VALUE)
        elif now - self.waiting_since > self.config.value_wait_s:
            self.waiting_since = None
            self._switch_failed(f"no value/policy deployed within {self.config.value_wait_s:g} "
                                "s: skipping its round")

    def _set_round_parameters(self, phase: str) -> None:
        if not self.planner_parameters.wait_for_services(timeout_sec=self.config.switch_timeout_s):
            self._switch_failed("the planner's parameter service is not available")
            return
        parameters = [Parameter(name, value=value)
                      for name, value in ROUND_PARAMETERS[phase].items()]
        future = self.planner_parameters.set_parameters(parameters)
        future.add_done_callback(lambda done: self._on_switched(done, phase))

    def _on_switched(self, future, phase: str) -> None:
        settings = ", ".join(f"{k}={v}" for k, v in ROUND_PARAMETERS[phase].items())
        try:
            results = future.result().results
        except Exception as error:  # noqa: BLE001 - any failure ends the demo with a reason
            self._switch_failed(f"setting {settings} failed: {error}")
            return
        refused = [r.reason for r in results if not r.successful]
        if refused:
            self._switch_failed(f"the planner refused {settings}: {refused[0]}")
            return
        self.get_logger().info(f"planner set to {settings}; the same goals again")
        self.switching = False
        self._next_goal(self._now())

    def _switch_failed(self, reason: str) -> None:
        self.get_logger().error(reason)
        self.switch_error, self.switching, self.done = reason, False, True

    def _next_goal(self, now: float) -> None:
        if self.config.reset_between_goals and self.reset_client.service_is_ready():
            self.reset_client.call_async(Trigger.Request())
        self.goal_index += 1
        self.goal_start, self.inside_since, self.min_distance = now, None, np.inf
        self.stages = Counter()
        goal = self.goal
        msg = PoseStamped()
        msg.header.frame_id = self.config.base_frame
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = map(float, goal)
        msg.pose.orientation.w = 1.0
        self.goal_pub.publish(msg)

    def progress_line(self) -> str:
        """One line for the console."""
        elapsed = (self.timeline.time_s[-1] if self.timeline.time_s else 0.0)
        phase = ("collecting data / waiting for a model" if self.goal_index < 0
                 else f"goal {self.goal_index + 1}/{self.total_goals} ({self.phase} model)")
        reached = sum(r.reached for r in self.results)
        distance = self.timeline.distance_m[-1] if self.timeline.distance_m else float("nan")
        return (f"sim {elapsed:6.1f} s | {phase} | model v{self.model_version} | "
                f"value/policy v{self.value_version} | "
                f"reached {reached}/{len(self.results)} | distance {100 * distance:5.1f} cm | "
                f"gate interventions {self.interventions} | plan {self.planning_ms:5.1f} ms")
