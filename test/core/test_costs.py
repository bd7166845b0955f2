"""Cost terms on hand-computed examples."""

import math

import pytest
import torch

from mbrl_ros.core.costs import (COST_TERMS, EffortCost, EndEffectorCost, JointLimitCost,
                                 JointPositionCost, SmoothnessCost, TaskCost, VelocityCost,
                                 build_task_cost)

# one sample, horizon 2, state = (q0, q1, qd0, qd1), action = 2 torques
STATES = torch.tensor([[[9.0, 9.0, 9.0, 9.0],        # step 0: current state, never costed
                        [1.0, 2.0, 0.5, -1.0],
                        [0.0, 1.0, 2.0, 0.0]]])
ACTIONS = torch.tensor([[[1.0, -2.0], [3.0, 0.0]]])


def planar_fk(joints):
    """Two-link planar arm, link lengths 1 and 0.5: joints [M, 2] -> tip (x, y) [M, 2]."""
    q0, q1 = joints[:, 0], joints[:, 1]
    x = torch.cos(q0) + 0.5 * torch.cos(q0 + q1)
    y = torch.sin(q0) + 0.5 * torch.sin(q0 + q1)
    return torch.stack([x, y], dim=-1)


def test_joint_position():
    term = JointPositionCost([0, 1], target=[1.0, 1.0], weight=[2.0, 1.0])
    # step 1: 2*0^2 + 1*1^2 = 1; step 2: 2*1 + 0 = 2
    assert term.per_step(STATES, ACTIONS).tolist() == [[1.0, 2.0]]
    term.set_target([0.0, 0.0])
    assert term.per_step(STATES, ACTIONS).tolist() == [[2.0 + 4.0, 0.0 + 1.0]]
    with pytest.raises(ValueError, match="target"):
        term.set_target([0.0, float("nan")])


def test_effort_and_velocity():
    assert EffortCost(0.5, action_dim=2).per_step(STATES, ACTIONS).tolist() == [[2.5, 4.5]]
    velocity = VelocityCost([2, 3], weight=[1.0, 3.0])
    assert velocity.per_step(STATES, ACTIONS).tolist() == [[0.25 + 3.0, 4.0]]


def test_end_effector_via_fk():
    term = EndEffectorCost(planar_fk, [0, 1], target=[1.5, 0.0], weight=2.0)
    states = torch.zeros(1, 3, 4)
    states[0, 2, 0] = math.pi / 2               # step 2: arm straight up, tip at (0, 1.5)
    cost = term.per_step(states, ACTIONS)
    # step 1: straight along x, tip exactly on target; step 2: error (-1.5, 1.5)
    torch.testing.assert_close(cost, torch.tensor([[0.0, 2.0 * (1.5 ** 2 + 1.5 ** 2)]]))
    with pytest.raises(ValueError, match="fk"):
        EndEffectorCost(None, [0, 1], target=[0.0, 0.0])


def test_joint_limit_proximity():
    term = JointLimitCost([0, 1], lower=[-1.0, 0.0], upper=[1.0, 1.5], margin=0.5, weight=4.0)
    # step 1: q0=1.0 is 0 from the upper limit -> (0.5)^2; q1=2.0 beyond 1.5 by 0.5 -> (1.0)^2
    # step 2: q0=0 is 1 inside -> 0; q1=1.0 is 0.5 from the upper limit -> 0
    assert term.per_step(STATES, ACTIONS).tolist() == [[4.0 * (0.25 + 1.0), 0.0]]


def test_smoothness():
    term = SmoothnessCost(weight=1.0, action_dim=2)
    # step 1: (3-1)^2 + (0+2)^2 = 8; step 0 costs 0 without a previous action
    assert term.per_step(STATES, ACTIONS).tolist() == [[0.0, 8.0]]
    term.set_previous_action([1.0, 0.0])
    assert term.per_step(STATES, ACTIONS).tolist() == [[4.0, 8.0]]


def test_task_cost_discount_and_builder():
    cost = build_task_cost([{"name": "effort", "weight": 0.5},
                            {"name": "velocity", "indices": [2, 3]}],
                           state_dim=4, action_dim=2, discount=0.5)
    # per step: effort [2.5, 4.5] + velocity [1.25, 4.0] = [3.75, 8.5]; total 3.75 + 0.5 * 8.5
    assert cost(STATES, ACTIONS).tolist() == [3.75 + 4.25]
    assert isinstance(cost.term("velocity"), VelocityCost)
    batch = cost(STATES.expand(5, -1, -1), ACTIONS.expand(5, -1, -1))
    assert batch.shape == (5,)
    assert set(COST_TERMS) == {"joint_position", "end_effector", "effort", "velocity",
                               "joint_limit", "smoothness"}


def test_bad_specs_raise():
    with pytest.raises(ValueError, match="unknown cost term"):
        build_task_cost([{"name": "teleport"}], 4, 2)
    with pytest.raises(ValueError, match="bad arguments"):
        build_task_cost([{"name": "effort", "gain": 3}], 4, 2)
    with pytest.raises(ValueError, match="indices"):
        build_task_cost([{"name": "velocity", "indices": [7]}], 4, 2)
    with pytest.raises(ValueError, match="weight"):
        EffortCost([1.0, 2.0, 3.0], action_dim=2)
    with pytest.raises(ValueError, match="at least one"):
        TaskCost([])


def test_non_contiguous_indices():
    term = JointPositionCost([3, 0], target=[0.0, 1.0], weight=[1.0, 2.0])
    # step 1: 1*(-1)^2 + 2*(1-1)^2 = 1; step 2: 0 + 2*(0-1)^2 = 2
    assert term.per_step(STATES, ACTIONS).tolist() == [[1.0, 2.0]]
