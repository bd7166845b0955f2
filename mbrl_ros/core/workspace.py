"""Workspace of a fixed-base arm (ROS-free): a floor or table plane under the robot and an
axis-aligned box for its end effector.

Every *checked point* of the robot (by default every joint origin and the end effector; the
robot side resolves them from the URDF, see :mod:`mbrl_ros.robots.workspace_points`) must stay
at or above ``floor_height + clearance`` (z in the base frame), and the end effector inside
``[ee_lower, ee_upper]``. The same rule serves three users:

* the planner (:class:`WorkspaceConstraint`, torch, batched): plans whose predicted link
  positions (and, for position targets, whose targets) leave the workspace are infeasible,
  exactly as plans that leave the joint limits are;
* the safety gate (:class:`WorkspaceGuard`, numpy, one configuration): a command whose target
  would put a point further outside than it is now is not passed;
* the demo's goal sampler: only configurations inside the workspace give goals.

The kinematics come in as a callable ``points(joint positions [..., J]) -> [..., P, 3]``, the
end effector last when the robot has one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

BASE_PLANE_TOLERANCE = 0.01
"""[m] The default floor lies this far below the base plane (z = 0), so a joint that sits on
the mounting plane itself never counts as below it."""
AXES = 3
"""Coordinates of a point (x, y, z in the base frame)."""
HEIGHT_AXIS = 2
"""Index of z, the height above the base plane."""

PointsFn = Callable[[torch.Tensor], torch.Tensor]
"""Batched kinematics: ``joint positions [M, J] -> checked points [M, P, 3]`` (base frame,
the end effector last when the robot has one)."""
PointsArrayFn = Callable[[np.ndarray], np.ndarray]
"""Kinematics of one configuration: ``joint positions [J] -> checked points [P, 3]``."""


@dataclass(frozen=True)
class WorkspaceConfig:
    """Where a fixed-base arm may put its links and its end effector (base frame, metres).

    On by default with the floor at the base plane: no arm should drive a link below its own
    mounting surface. Set ``floor_height`` for a table or a pedestal, ``enabled: false`` for a
    robot mounted upside down or on a wall.
    """

    enabled: bool = True
    """Check the workspace at all (planner, safety gate, demo goals)."""
    floor_height: float = -BASE_PLANE_TOLERANCE
    """Height of the floor or table plane in the base frame [m]; the default is the base
    plane, less a centimetre of tolerance."""
    clearance: float = 0.0
    """Every checked point must stay at least this far above the plane [m] (e.g. the links'
    radius: the checked points lie on the links' axes)."""
    ee_lower: Tuple[float, ...] = ()
    """Lower corner [x, y, z] of the box the end effector must stay in [m]; empty: unbounded
    (``-.inf`` leaves one axis free)."""
    ee_upper: Tuple[float, ...] = ()
    """Upper corner [x, y, z] of the end-effector box [m]; empty: unbounded."""
    frames: Tuple[str, ...] = ()
    """URDF links or frames whose origins are checked against the plane; empty: every joint
    origin. The end effector is always checked."""

    def validate(self) -> "WorkspaceConfig":
        """Raise ValueError on a bad setting; return self."""
        for name in ("floor_height", "clearance"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"workspace {name} must be finite, got {getattr(self, name)} "
                                 "(to check no floor, set a height far below the robot)")
        if len(self.ee_lower) != len(self.ee_upper) or len(self.ee_lower) not in (0, AXES):
            raise ValueError(f"workspace ee_lower and ee_upper need {AXES} values each (x, y, "
                             f"z) or none, got {list(self.ee_lower)} and {list(self.ee_upper)}")
        for low, high in zip(self.ee_lower, self.ee_upper):
            if math.isnan(low) or math.isnan(high) or not low < high:
                raise ValueError(f"workspace needs ee_lower < ee_upper on every axis, got "
                                 f"{list(self.ee_lower)} and {list(self.ee_upper)}")
        if not all(self.frames):
            raise ValueError(f"workspace frames must be names, got {list(self.frames)}")
        return self

    def validate_for(self, has_end_effector: bool) -> "WorkspaceConfig":
        """:meth:`validate`, and refuse an end-effector box for a robot without an end
        effector; return self."""
        self.validate()
        if self.bounded and not has_end_effector:
            raise ValueError("workspace ee_lower/ee_upper need an end-effector frame (ee_frame)")
        return self

    @property
    def floor_limit(self) -> float:
        """Lowest allowed height of a checked point [m]."""
        return self.floor_height + self.clearance

    @property
    def bounded(self) -> bool:
        """True when an end-effector box is set."""
        return len(self.ee_lower) == AXES

    def box(self) -> Tuple[np.ndarray, np.ndarray]:
        """([3], [3]) corners of the end-effector box, ±inf where unbounded."""
        if not self.bounded:
            return np.full(AXES, -math.inf), np.full(AXES, math.inf)
        return np.asarray(self.ee_lower, dtype=float), np.asarray(self.ee_upper, dtype=float)

    def ee_excess(self, position: Sequence[float]) -> float:
        """How far an end-effector position [3] is outside the workspace [m] (below the
        plane, outside the box; 0 inside)."""
        position = np.asarray(position, dtype=float).reshape(1, AXES)
        lower, upper = self.box()
        return float(floor_depth(position, self.floor_limit).sum()
                     + box_excess(position[0], lower, upper).sum())


def floor_depth(points, floor_limit: float):
    """How far each point is below the allowed height: ``[..., P, 3] -> [..., P]`` (>= 0;
    numpy arrays or torch tensors, NaN stays NaN)."""
    return (floor_limit - points[..., HEIGHT_AXIS]).clip(min=0.0)


def box_excess(position, lower, upper):
    """How far a position is outside the box, per axis: ``[..., 3] -> [..., 3]`` (>= 0;
    ``lower``/``upper`` [3] of the same kind as ``position``)."""
    return (position - upper).clip(min=0.0) + (lower - position).clip(min=0.0)


class WorkspaceConstraint:
    """The workspace as a hard constraint of the planner: ``(states [M, N, H+1, S], actions
    [N, H, A]) -> violation [N]`` (see ``Planner``'s ``constraint``).

    The violation sums, over members and predicted steps 1..H, how far each checked point is
    below the plane plus how far the end effector is outside its box [m]; with
    ``check_actions`` (the actions are joint position targets) the same for the targets of
    steps 0..H-1, since the gate judges the target itself. Joint positions are the first
    ``num_joints`` state dims. NaN counts as +inf.
    """

    def __init__(self, config: WorkspaceConfig, points: PointsFn, num_joints: int,
                 check_actions: bool, has_end_effector: bool = True,
                 device: Optional[torch.device] = None) -> None:
        self.config = config.validate_for(has_end_effector)
        self.points = points
        self.num_joints = int(num_joints)
        self.check_actions = bool(check_actions)
        self.has_end_effector = bool(has_end_effector)
        lower, upper = config.box()
        self.lower = torch.as_tensor(lower, dtype=torch.float32, device=device)
        """[3] lower corner of the end-effector box (-inf where free)."""
        self.upper = torch.as_tensor(upper, dtype=torch.float32, device=device)
        """[3] upper corner of the end-effector box (+inf where free)."""

    def excess(self, positions: torch.Tensor) -> torch.Tensor:
        """``joint positions [..., J] -> [...]``: total distance outside the workspace [m]."""
        flat = positions.reshape(-1, self.num_joints)
        points = self.points(flat)
        total = floor_depth(points, self.config.floor_limit).sum(dim=-1)
        if self.config.bounded and self.has_end_effector:
            total = total + box_excess(points[:, -1], self.lower, self.upper).sum(dim=-1)
        return total.reshape(positions.shape[:-1])

    def __call__(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``states [M, N, H+1, S]``, ``actions [N, H, A]`` -> violation ``[N]``."""
        predicted = states[..., 1:, :self.num_joints]
        if not self.check_actions:
            return torch.nan_to_num(self.excess(predicted).sum(dim=(0, 2)), nan=math.inf)
        # one kinematics pass for the states and the targets
        targets = actions[..., :self.num_joints]
        excess = self.excess(torch.cat([predicted.reshape(-1, self.num_joints),
                                        targets.reshape(-1, self.num_joints)]))
        from_states = excess[:predicted[..., 0].numel()].view(predicted.shape[:-1])
        from_targets = excess[predicted[..., 0].numel():].view(targets.shape[:-1])
        violation = from_states.sum(dim=(0, 2)) + from_targets.sum(dim=-1)
        return torch.nan_to_num(violation, nan=math.inf)


class WorkspaceGuard:
    """The workspace for one configuration at a time (safety gate, goal sampler), numpy.

    ``points`` maps joint positions [J] (the caller's order) to the checked points [P, 3];
    ``names`` [P] name them in messages (the end effector last when ``has_end_effector``).
    """

    def __init__(self, config: WorkspaceConfig, points: PointsArrayFn, names: Sequence[str],
                 has_end_effector: bool = True) -> None:
        self.config = config.validate_for(has_end_effector)
        self.points = points
        self.names = tuple(names)
        self.has_end_effector = bool(has_end_effector)
        self.lower, self.upper = config.box()

    def excess(self, positions: np.ndarray) -> np.ndarray:
        """``joint positions [J] -> [P + 3]``: per checked point its depth below the plane,
        then per axis how far the end effector is outside its box [m] (>= 0; inf when the
        kinematics give no finite answer)."""
        points = np.asarray(self.points(np.asarray(positions, dtype=np.float64)),
                            dtype=np.float64)
        box = (box_excess(points[-1], self.lower, self.upper)
               if self.config.bounded and self.has_end_effector else np.zeros(AXES))
        excess = np.concatenate([floor_depth(points, self.config.floor_limit), box])
        return np.where(np.isfinite(excess), excess, math.inf)

    def allows(self, positions: np.ndarray) -> bool:
        """True when every checked point is above the plane and the end effector in its box."""
        return not bool(np.any(self.excess(positions) > 0.0))

    def refusal(self, target: np.ndarray, measured: np.ndarray) -> str:
        """Why ``target`` must not be commanded from ``measured`` ("" when it may): some point
        would be outside the workspace *and* further out than it is now. A robot that is
        already outside may move back (or stay); it may not go deeper."""
        after, before = self.excess(target), self.excess(measured)
        worse = (after > 0.0) & (after > before)
        if not worse.any():
            return ""
        count = len(self.names)
        reasons = []
        below = np.flatnonzero(worse[:count])
        if below.size:
            reasons.append(f"{[self.names[i] for i in below]} {after[below].max():.3g} m below "
                           f"the floor (z >= {self.config.floor_limit:.3g})")
        if worse[count:].any():
            reasons.append(f"the end effector {after[count:].sum():.3g} m outside the "
                           f"workspace box {list(self.config.ee_lower)}..."
                           f"{list(self.config.ee_upper)}")
        return "target puts " + " and ".join(reasons)


__all__ = ["BASE_PLANE_TOLERANCE", "PointsArrayFn", "PointsFn", "WorkspaceConfig",
           "WorkspaceConstraint", "WorkspaceGuard", "box_excess", "floor_depth"]
