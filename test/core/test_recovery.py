"""Recovery instead of deadlock: with the task's plans untrusted the controller plans back to
where the model is trusted (the safety gate passes those plans) and returns to the task; the
gate and the controller trip and resume at the same disagreements."""

import logging
import math

import numpy as np
import pytest
import torch

from mbrl_ros.core.controller import ModelPredictiveController
from mbrl_ros.core.costs import EndEffectorCost, TaskCost
from mbrl_ros.core.exploration import ExplorationConfig, SmoothExplorer
from mbrl_ros.core.planning import PlannerConfig
from mbrl_ros.core.recovery import MODE_RECOVERY, MODE_TASK, RecoveryConfig
from mbrl_ros.core.safety_gate import CommandStatus, Fault, GateConfig, GateState, SafetyGate
from mbrl_ros.core.trust import DisagreementHysteresis

DT = 0.1
TRUSTED = 0.5
"""The model's data cover joint positions in [-TRUSTED, TRUSTED]."""
SPREAD = 20.0
"""Disagreement per squared position beyond the data (about 1 at 0.22 beyond)."""
THRESHOLD, RESUME, RESUME_TICKS = 1.0, 0.5, 3
JOINTS = ("j1",)


class SupportModel:
    """One joint, q+ = u (a stiff position servo); two members that agree on targets inside
    the data and disagree more the further outside a target lies."""

    num_members, state_dim, action_dim = 2, 2, 1
    device = torch.device("cpu")

    def predict(self, state, action):
        shape = torch.broadcast_shapes(state[..., :1].shape, action.shape)
        position, target = state[..., :1].expand(shape), action.expand(shape)
        mean = torch.cat([target, (target - position) / DT], -1)
        mean = mean if mean.dim() == 3 else mean.unsqueeze(0).expand(2, *mean.shape)
        return mean, torch.zeros_like(mean)

    def disagreement(self, member_means):
        beyond = (member_means[0, ..., 0].abs() - TRUSTED).clamp(min=0.0)
        return SPREAD * beyond.square()


class LevelModel(SupportModel):
    """Disagreement is whatever ``level`` is set to, wherever the plan goes."""

    level = 0.0

    def disagreement(self, member_means):
        return torch.full(member_means.shape[1:-1], self.level)


def make_controller(model, recovery: bool) -> ModelPredictiveController:
    cost = TaskCost([EndEffectorCost(lambda q: torch.cat([q, torch.zeros_like(q),
                                                          torch.zeros_like(q)], -1),
                                     [0], [0.0, 0.0, 0.0], 10.0, 2)])
    explorer = SmoothExplorer(ExplorationConfig(), "position", np.array([-2.0]),
                              np.array([2.0]), np.array([2.0]), DT)
    config = RecoveryConfig(enabled=recovery, disagreement_threshold=THRESHOLD,
                            disagreement_resume=RESUME, resume_ticks=RESUME_TICKS,
                            history_ticks=5)
    controller = ModelPredictiveController(
        PlannerConfig(horizon=4, num_samples=64, num_iterations=2, init_std=0.2,
                      num_policy_trajectories=0, action_low=(-2.0,), action_high=(2.0,)),
        cost, explorer, torch.device("cpu"), recovery=config)
    controller.set_model(model, 1)
    return controller


def make_gate() -> SafetyGate:
    return SafetyGate(GateConfig(
        joints=JOINTS, control_rate_hz=1.0 / DT, control_mode="position",
        watchdog_timeout_s=1.0, state_timeout_s=1.0, disagreement_threshold=THRESHOLD,
        disagreement_resume=RESUME, resume_ticks=RESUME_TICKS, position_lower=-2.0,
        position_upper=2.0, velocity_limit=10.0, max_position_step=0.3))


def run_loop(controller, gate, position: float, ticks: int, start: float = 0.0):
    """Controller -> gate -> a servo that reaches the gate's target in one tick."""
    log = []
    for tick in range(ticks):
        now = start + tick * DT
        q, qd = np.array([position]), np.zeros(1)
        step = controller.step(q, qd, stamp=now)
        status = CommandStatus.RECOVERING if step.mode == MODE_RECOVERY \
            else CommandStatus.PLANNED
        gate.set_joint_state(JOINTS, q, qd, now)
        gate.set_command(step.command, now, step.disagreement, status)
        out = gate.tick(now)
        position = float(out.command[0])
        log.append((step.mode, step.disagreement, out.state, out.fault, position))
    return log, position


@pytest.mark.parametrize("recovery", [True, False])
def test_recovery_brings_the_arm_back_where_plans_are_trusted(recovery):
    torch.manual_seed(0)
    controller, gate = make_controller(SupportModel(), recovery), make_gate()
    controller.set_goal(np.array([0.2, 0.0, 0.0]))
    log, position = run_loop(controller, gate, 0.0, 10)  # inside the data: trusted
    assert all(entry[0] == MODE_TASK and entry[2] != GateState.FALLBACK for entry in log)
    # the arm ends up far outside the data (as after a goal that went the wrong way), and
    # the new goal lies outside too
    controller.set_goal(np.array([1.5, 0.0, 0.0]))
    log, position = run_loop(controller, gate, 1.2, 40, start=1.0)
    positions = [entry[4] for entry in log]
    if not recovery:  # every plan is untrusted: the gate holds the arm where it is, for good
        assert all(entry[2] == GateState.FALLBACK for entry in log)
        assert log[-1][3] == Fault.DISAGREEMENT and positions[-1] == pytest.approx(1.2)
        assert controller.recovery_stats.recoveries == 0
        return
    # an untrusted plan is never sent: recovery plans back into the data are, and the gate
    # passes them (the arm then waits at the edge of the data: the goal lies beyond it)
    assert all(entry[0] == MODE_RECOVERY for entry in log)
    passed = [entry[2] in (GateState.PASS, GateState.CLAMPED) for entry in log]
    assert passed[:3] == [True] * 3 and sum(passed) >= 0.8 * len(log)
    back = next(i for i, p in enumerate(positions) if abs(p) <= TRUSTED)
    assert back <= 5 and max(abs(p) for p in positions[back:]) < 0.8
    assert controller.recovery_stats.recoveries == 1
    assert controller.recovery_stats.recovered == 0
    # a goal the model is trusted on: recovery ends, the task goes on
    controller.set_goal(np.array([0.3, 0.0, 0.0]))
    log, position = run_loop(controller, gate, position, 10, start=5.0)
    first_task = next(i for i, entry in enumerate(log) if entry[0] == MODE_TASK)
    assert all(entry[0] == MODE_TASK for entry in log[first_task:])
    assert position == pytest.approx(0.3, abs=0.1)
    stats = controller.recovery_stats
    assert (stats.recoveries, stats.recovered) == (1, 1)
    assert stats.times_s == pytest.approx([4.0 + first_task * DT])  # stamps: entry to trusted
    assert stats.mean_time_s == stats.last_time_s


def test_gate_and_controller_trip_and_resume_at_the_same_values(caplog):
    model = LevelModel()
    controller, gate = make_controller(model, True), make_gate()
    controller.set_goal(np.array([0.1, 0.0, 0.0]))
    levels = [0.2, 0.9, 1.0, 1.01, 0.8, 0.4, 0.4, 0.7, 0.4, 0.4, 0.4, 0.9, 0.3, 2.0, 0.1, 0.1,
              0.1, 0.2]
    planner_untrusted, gate_untrusted, modes = [], [], []
    with caplog.at_level(logging.INFO, logger="mbrl_ros.core.controller"):
        for tick, level in enumerate(levels):
            model.level = level
            now = tick * DT
            step = controller.step(np.zeros(1), np.zeros(1), stamp=now)
            assert step.disagreement == pytest.approx(level)
            planner_untrusted.append(not controller.plans_trusted)
            modes.append(controller.mode)
            gate.set_joint_state(JOINTS, np.zeros(1), np.zeros(1), now)
            gate.set_command(step.command, now, level)
            gate_untrusted.append(gate.tick(now).fault == Fault.DISAGREEMENT)
    expected = [False, False, False, True, True, True, True, True, True, True, False, False,
                False, True, True, True, False, False]
    assert gate_untrusted == expected
    assert planner_untrusted == expected
    # recovery begins as the gate falls back and ends with the first trusted task plan after
    # the gate resumed
    assert [m == MODE_RECOVERY for m in modes] == [False] * 3 + [True] * 8 + [False] * 2 \
        + [True] * 4 + [False]
    assert controller.recovery_stats.recoveries == 2 == controller.recovery_stats.recovered
    assert controller.recovery_stats.times_s == pytest.approx([8 * DT, 4 * DT])
    entered = [r for r in caplog.records if r.getMessage().startswith("recovery:")]
    left = [r for r in caplog.records if r.getMessage().startswith("recovery done")]
    assert len(entered) == 2 and len(left) == 2  # once per change, not per tick


def test_hysteresis_rules_and_settings():
    trust = DisagreementHysteresis(THRESHOLD, RESUME, 2)
    assert not trust.update(THRESHOLD)  # strictly above trips
    assert trust.update(math.nan)  # unreadable is untrusted
    assert trust.update(0.4) and not trust.update(0.4)
    assert trust.update(math.inf) and trust.update(RESUME)  # not below resume: keeps waiting
    with pytest.raises(ValueError, match="disagreement_resume"):
        DisagreementHysteresis(1.0, 2.0, 1)
    with pytest.raises(ValueError, match="recovery"):
        RecoveryConfig(resume_ticks=0).validate()
    with pytest.raises(ValueError, match="disagreement_weight"):
        RecoveryConfig(disagreement_weight=0.0).validate()
    with pytest.raises(ValueError, match="resume_ticks"):
        GateConfig(joints=JOINTS, resume_ticks=0).validate()


def test_a_reset_ends_recovery_without_counting_it_as_recovered():
    model = LevelModel()
    controller = make_controller(model, True)
    controller.jump_threshold = 0.5
    controller.set_goal(np.array([0.1, 0.0, 0.0]))
    model.level = 2.0
    controller.step(np.zeros(1), np.zeros(1), stamp=0.0)
    assert controller.mode == MODE_RECOVERY
    model.level = 0.1
    controller.step(np.ones(1), np.zeros(1), stamp=DT)  # moved by hand
    assert controller.mode == MODE_TASK
    stats = controller.recovery_stats
    assert (stats.recoveries, stats.recovered, stats.interrupted) == (1, 0, 1)
