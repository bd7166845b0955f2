"""ModelPredictiveController: goal seeds, jumps (resets) and the offset-free estimate."""

import dataclasses

import numpy as np
import torch

from mbrl_ros.core.controller import ModelPredictiveController
from mbrl_ros.core.costs import EndEffectorCost, SmoothnessCost, TaskCost
from mbrl_ros.core.disturbance import DisturbanceConfig
from mbrl_ros.core.exploration import ExplorationConfig, SmoothExplorer
from mbrl_ros.core.planning import PlannerConfig

from joint_integrator import DT, JointIntegrator


def make_controller(seeds: list, gain: float = 0.0,
                    smoothness: float = 0.0) -> ModelPredictiveController:
    terms = [EndEffectorCost(lambda q: torch.cat([q, torch.zeros_like(q), torch.zeros_like(q)],
                                                 -1), [0], [0.0, 0.0, 0.0], 10.0, 2)]
    cost = TaskCost(terms + ([SmoothnessCost(smoothness, 1)] if smoothness else []))
    explorer = SmoothExplorer(ExplorationConfig(), "position", np.array([-2.0]),
                              np.array([2.0]), np.array([2.0]), DT)

    def warm_start(position, goal, horizon):
        seeds.append((position.copy(), None if goal is None else goal.copy()))
        return np.repeat(position[None], horizon, 0)
    controller = ModelPredictiveController(
        PlannerConfig(horizon=4, num_samples=64, num_iterations=2, init_std=0.2,
                      num_policy_trajectories=0, action_low=(-2.0,), action_high=(2.0,)),
        cost, explorer, torch.device("cpu"), warm_start=warm_start,
        disturbance=DisturbanceConfig(gain=gain, max_offset=(0.5,), jump_threshold=1.0),
        model_period_s=DT, jump_threshold=0.5)
    controller.set_model(JointIntegrator(), 1)
    return controller


def test_seed_on_goal_and_after_a_jump_only():
    seeds = []
    controller = make_controller(seeds)
    controller.set_goal(np.array([1.0, 0.0, 0.0]))
    controller.step(np.array([0.0]), np.array([0.0]))
    controller.step(np.array([0.1]), np.array([0.0]))
    assert len(seeds) == 1 and seeds[0][1][0] == 1.0
    controller.step(np.array([1.5]), np.array([0.0]))  # reset elsewhere: plan afresh
    assert len(seeds) == 2 and seeds[1][0][0] == 1.5
    controller.set_goal(np.array([-1.0, 0.0, 0.0]))
    controller.step(np.array([1.4]), np.array([0.0]))
    assert len(seeds) == 3 and seeds[2][1][0] == -1.0


def test_offset_learns_from_stamped_steps_and_restarts_on_a_new_goal():
    controller = make_controller([], gain=0.5)
    controller.set_goal(np.array([0.5, 0.0, 0.0]))
    position = np.array([0.0])
    for tick in range(10):  # the real joint stops 0.1 short of every target
        step = controller.step(position, np.array([0.0]), stamp=tick * DT)
        position = step.command - 0.1 * np.sign(step.command - position)
    assert controller.offset is not None and abs(controller.offset[0]) > 0.02
    controller.step(position, np.array([0.0]))  # no stamp: no update, no harm
    controller.set_goal(np.array([0.2, 0.0, 0.0]))
    assert np.all(controller.offset == 0.0)


class NonFiniteModel(JointIntegrator):
    """Predicts NaN: every plan's action is non-finite."""

    def predict(self, state, action):
        mean, var = super().predict(state, action)
        return mean * float("nan"), var


def test_a_failed_plan_asks_for_a_hold_never_for_exploration(monkeypatch):
    controller = make_controller([])
    controller.set_goal(np.array([1.0, 0.0, 0.0]))
    assert not controller.step(np.array([0.0]), np.array([0.0])).failed

    def broken(state):
        raise RuntimeError("solver blew up")
    monkeypatch.setattr(controller.planner, "plan", broken)
    step = controller.step(np.array([0.0]), np.array([0.0]))
    assert step.failed and step.command is None and not step.exploring
    assert "solver blew up" in step.error
    monkeypatch.undo()
    controller.set_model(NonFiniteModel(), 2)
    step = controller.step(np.array([0.0]), np.array([0.0]))
    assert step.failed and "non-finite" in step.error and not step.recovering


def test_no_feasible_plan_sends_the_least_violating_one_as_recovering():
    controller = make_controller([])
    controller.set_goal(np.array([1.0, 0.0, 0.0]))
    cfg = controller.planner_config
    controller.set_planner_config(dataclasses.replace(  # every state violates these limits
        cfg, state_low=(5.0, -np.inf), state_high=(6.0, np.inf)))
    step = controller.step(np.array([0.0]), np.array([0.0]))
    assert not step.failed and step.recovering and np.isfinite(step.command).all()
    assert step.command[0] > 0.0  # toward the feasible region


def test_the_command_sent_is_the_smoothness_terms_previous_action_until_a_reset(monkeypatch):
    controller = make_controller([], smoothness=1.0)
    smoothness = controller.cost.term("smoothness")
    explored = controller.step(np.array([0.0]), np.array([0.0]))  # no goal yet: exploring
    assert explored.exploring
    np.testing.assert_allclose(smoothness.previous_action.numpy(), explored.command)
    controller.set_goal(np.array([1.0, 0.0, 0.0]))
    planned = controller.step(np.array([0.0]), np.array([0.0]))
    assert not planned.failed and not planned.exploring
    np.testing.assert_allclose(smoothness.previous_action.numpy(), planned.command, atol=1e-6)
    # the next plan's first step pays for its change from the command sent
    states, actions = torch.zeros(1, 2, 2), torch.tensor([[[planned.command[0] + 0.5]]])
    assert controller.cost.per_step(states, actions)[0, 0] > smoothness.weight * 0.2

    def broken(state):
        raise RuntimeError("solver blew up")
    monkeypatch.setattr(controller.planner, "plan", broken)
    assert controller.step(np.array([0.0]), np.array([0.0])).failed  # a hold: nothing sent
    np.testing.assert_allclose(smoothness.previous_action.numpy(), planned.command, atol=1e-6)
    monkeypatch.undo()
    controller.reset()  # a new episode is not compared with the last one's command
    assert smoothness.previous_action is None
    controller.step(np.array([0.0]), np.array([0.0]))
    assert smoothness.previous_action is not None
    controller.step(np.array([1.5]), np.array([0.0]))  # a jump resets too, then plans anew
    assert smoothness.previous_action is not None


def test_the_first_planned_step_pays_for_its_change_from_the_command_sent():
    moves = []
    for forget in (False, True):  # the same controller, told the command sent or not
        controller = make_controller([], smoothness=100.0)
        controller.set_goal(np.array([1.0, 0.0, 0.0]))
        first = controller.step(np.array([0.0]), np.array([0.0])).command
        if forget:
            controller.cost.set_previous_action(None)
        second = controller.step(np.array([0.0]), np.array([0.0])).command
        moves.append(abs(second[0] - first[0]))
    assert moves[0] < 0.5 * moves[1], moves
