"""Settings of the planner node (the planner, cost and exploration have their own configs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

TRIGGERS = ("timer", "joint_states")
TASKS = ("reach", "stand")
COMMAND_MODES = ("effort", "position")
MODEL_SOURCES = ("learned", "nominal")
LEARNED, NOMINAL = MODEL_SOURCES


@dataclass(frozen=True)
class PlannerNodeConfig:
    """Node-level settings of ``planner_node``."""

    urdf: str = ""
    """Robot URDF: a file path or package:// URI."""
    model_dir: str = "~/.ros/mbrl/models"
    """The trainer's checkpoint folder: announced checkpoints are loaded only from inside it
    (real paths; a link leading out of it is refused), whoever announces them."""
    task: str = "reach"
    """"reach": end-effector goals (state [q, qd]); "stand": a legged robot holds base
    height and orientation (state [q, qd, odometry], position targets; see
    mbrl_ros/tasks/stand.py)."""
    model_source: str = LEARNED
    """What the planner plans with: "learned": the trainer's models (exploring until the first
    arrives); "nominal": the hand-derived model alone (the URDF rigid body, or the joint servo
    in position mode; reach task only), with no data — learned models that arrive are kept
    and used once this is set to "learned". May be changed while running."""
    command_mode: str = "effort"
    """Reach task: "effort" (joint torques) or "position" (targets for the driver's joint
    servo, e.g. a ros2_control forward position controller); must match the trainer's."""
    servo_kp: Tuple[float, ...] = ()
    """Position mode: the driver's servo stiffness per joint [N m/rad] (one value or one per
    joint, URDF order), for the nominal model; must match the trainer's. Empty: derived from
    the URDF by the rule ``mbrl-ros robot-config`` writes (mbrl_ros/robots/defaults.py)."""
    servo_kd: Tuple[float, ...] = ()
    """Position mode: the driver's servo damping per joint [N m s/rad]; empty: derived."""
    goal_seed_speed_fraction: float = 0.5
    """Position targets: on a new goal (and after a reset) the planner starts from a joint path
    to the goal's IK solution (reach) or to the standing posture (stand), at this fraction of
    the velocity limits; 0 disables the seed."""
    odom_topic: str = "odom"
    """nav_msgs/Odometry of the floating base (stand task); relative to the node's namespace."""
    ee_frame: str = "ee_link"
    """End-effector frame of the reaching task."""
    base_frame: str = "world"
    """Frame of goals and plan markers (the robot's base)."""
    joints: Tuple[str, ...] = ()
    """Joint order of the command topic (the controller's); empty: URDF order."""
    control_rate_hz: float = 100.0
    """Rate of the planner's loop [Hz] (trigger "timer"). With stream_plan the safety gate
    samples the plan at its own control rate, so this may be lower than the gate's; keep it
    at 1 / model_period_s: each plan starts from the previous one shifted by one model step,
    and the offset estimate learns only from plans one model period apart."""
    trigger: str = "timer"
    """"timer": plan on a timer at control_rate_hz; "joint_states": plan on each state message
    (the newest: states that arrive while a plan is made are not queued)."""
    stream_plan: bool = True
    """Publish the whole plan as timed points (point k: action k, k x model_period_s after
    the source joint state), which the safety gate samples at its control rate; false: the
    first action only (one point). Exploration and policy commands are one point either way.
    Read at start."""
    publish_trajectory: bool = False
    """Also publish each command as a trajectory_msgs/JointTrajectory on
    mbrl/planned_trajectory (positions or efforts per command_mode; header.stamp = the source
    joint state's; no points for a failed plan), for tools and integrators. Not gated: drive
    the robot through the safety gate. Read at start."""
    model_period_s: float = 0.01
    """Period of one model step [s]; must match the trainer's alignment rate."""
    nominal_substeps: int = 5
    """Integration substeps of the analytical (residual) model per model period."""
    gravity_compensated: bool = False
    """The robot's driver compensates gravity (commands are torques on top of it)."""
    state_jump_threshold: float = 0.3
    """A joint moving more than this between two ticks [rad or m] means the robot was reset
    or moved by hand: the planner drops its warm start and plans afresh."""
    state_timeout_s: float = 0.1
    """A joint state older than this is stale: no command is sent (the gate falls back)."""
    device: str = "cpu"
    """Torch device of the planner ("cpu", "cuda", "cuda:1")."""
    torch_threads: int = 1
    """Torch CPU threads for planning (leave cores to the trainer and the simulator)."""
    visualize_every: int = 5
    """Publish plan markers and path every this many ticks (0: never)."""
    velocity_limit_fraction: float = 1.5
    """Hard bound on planned joint velocities, as a fraction of the URDF velocity limits (a
    sanity bound on predictions; the cost's velocity barrier keeps plans inside the limits,
    and the safety gate enforces them)."""
    disagreement_colour_scale: float = 0.5
    """Disagreement drawn fully red in the plan markers."""

    def validate(self) -> "PlannerNodeConfig":
        """Raise ValueError on a bad setting; return self."""
        if not self.urdf:
            raise ValueError("parameter urdf (robot URDF path) is required")
        if not self.model_dir:
            raise ValueError("parameter model_dir (the trainer's checkpoint folder) is required")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        model_source_error(self.model_source, self.task)
        if self.command_mode not in COMMAND_MODES:
            raise ValueError(f"command_mode must be one of {COMMAND_MODES}, "
                             f"got {self.command_mode!r}")
        if not 0.0 <= self.goal_seed_speed_fraction <= 1.0:
            raise ValueError("goal_seed_speed_fraction must be in [0, 1], "
                             f"got {self.goal_seed_speed_fraction}")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {self.trigger!r}")
        if not self.velocity_limit_fraction > 0.0:
            raise ValueError("velocity_limit_fraction must be > 0, "
                             f"got {self.velocity_limit_fraction}")
        for name in ("control_rate_hz", "model_period_s", "state_timeout_s",
                     "state_jump_threshold",
                     "disagreement_colour_scale"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.nominal_substeps < 1 or self.torch_threads < 1 or self.visualize_every < 0:
            raise ValueError("nominal_substeps and torch_threads must be >= 1, "
                             "visualize_every >= 0")
        return self


def model_source_error(source: str, task: str) -> None:
    """Raise ValueError when ``source`` is not a model source ``task`` can plan with."""
    if source not in MODEL_SOURCES:
        raise ValueError(f"model_source must be one of {MODEL_SOURCES}, got {source!r}")
    if source == NOMINAL and task != "reach":
        raise ValueError(f"model_source 'nominal' needs the reach task (the {task} task has "
                         "no hand-derived model)")
