"""dm_control suite tasks as flat-state environments with action repeat, for the benchmarks.

States are dm_control's observations flattened in key order (float32); actions live in the
task's action bounds; one :meth:`DMCEnv.step` applies the action ``action_repeat`` times and
returns the summed reward, so an episode of 1000 simulator steps has 1000 / action_repeat
agent steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

# headless MuJoCo: no display is needed (dm_control would otherwise try GLFW)
os.environ.setdefault("MUJOCO_GL", "egl")

TDMPC_ACTION_REPEAT: Dict[str, int] = {"cartpole": 8, "dog": 2, "finger": 2, "humanoid": 2,
                                       "walker": 2}
"""TD-MPC's action repeat per domain (nicklashansen/tdmpc cfgs/tasks/*.yaml)."""
TDMPC_DEFAULT_ACTION_REPEAT = 4
"""TD-MPC's action repeat for every other DMControl domain (cfgs/tasks/default.yaml)."""
DOMAIN_ALIASES: Dict[str, str] = {"cup": "ball_in_cup"}
"""TD-MPC's short domain names -> dm_control's (TD-MPC calls ball_in_cup-catch cup-catch)."""
MJ_HINGE_JOINT = 3
"""MuJoCo's joint type code of a hinge (mjtJoint.mjJNT_HINGE)."""
FULL_TURN = 2.0 * np.pi
"""One revolution [rad]: an unbounded hinge angle is wrapped modulo this."""
WRAP_MATCH_TOLERANCE = 1e-4
"""An observation entry is a raw angle of a hinge when turning the hinge by a full turn moves
it by a full turn within this tolerance [rad]."""


def default_action_repeat(task: str) -> int:
    """TD-MPC's action repeat for ``task`` ("domain-task", e.g. "cartpole-swingup")."""
    domain, _ = split_task(task)
    return TDMPC_ACTION_REPEAT.get(domain, TDMPC_DEFAULT_ACTION_REPEAT)


def split_task(task: str) -> Tuple[str, str]:
    """``"cartpole-swingup"`` -> ``("cartpole", "swingup")``; ball_in_cup style names kept.

    Raises:
        ValueError: when the name has no "-" separating domain and task.
    """
    domain, sep, name = task.partition("-")
    if not sep or not domain or not name:
        raise ValueError(f"task must be '<domain>-<task>' (e.g. cartpole-swingup), got {task!r}")
    domain = DOMAIN_ALIASES.get(domain, domain)
    return domain.replace("-", "_"), name.replace("-", "_")


@dataclass(frozen=True)
class DMCEnvConfig:
    """Settings of :class:`DMCEnv`."""

    task: str = "cartpole-swingup"
    """dm_control suite task as '<domain>-<task>'."""
    action_repeat: int = 8
    """Simulator steps per agent step (the same action is held)."""
    episode_length: int = 1000
    """Simulator steps per episode (dm_control's own limit for the suite)."""
    seed: int = 0
    """Seed of the task's random initial states."""
    wrap_angles: Tuple[int, ...] = ()
    """State indices wrapped to [-pi, pi); :meth:`DMCEnv.unbounded_angles` finds the ones that
    need it (raw angles of hinges without limits); empty keeps dm_control's observations."""

    def validate(self) -> "DMCEnvConfig":
        """Raise ValueError on an unusable setting; return self."""
        split_task(self.task)
        if self.action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {self.action_repeat}")
        if self.episode_length < self.action_repeat:
            raise ValueError(f"episode_length ({self.episode_length}) must be >= action_repeat "
                             f"({self.action_repeat})")
        return self


class DMCEnv:
    """A dm_control suite task with flat float32 states and action repeat."""

    def __init__(self, config: DMCEnvConfig) -> None:
        from dm_control import suite

        self.config = config.validate()
        domain, name = split_task(config.task)
        try:
            self._env = suite.load(domain, name, task_kwargs={"random": config.seed})
        except (ValueError, KeyError, AttributeError) as exc:
            raise ValueError(f"unknown dm_control task {config.task!r}: {exc}") from exc
        spec = self._env.action_spec()
        self.action_low = np.asarray(spec.minimum, np.float32).reshape(-1)
        self.action_high = np.asarray(spec.maximum, np.float32).reshape(-1)
        self.action_dim = int(self.action_low.shape[0])
        self.state_dim = int(sum(int(np.prod(s.shape)) or 1
                                 for s in self._env.observation_spec().values()))
        if any(not 0 <= i < self.state_dim for i in config.wrap_angles):
            raise ValueError(f"wrap_angles {config.wrap_angles} out of range for "
                             f"{self.state_dim} state dims")
        self._wrap = np.asarray(config.wrap_angles, dtype=np.int64)
        self._sim_steps = 0

    def unbounded_angles(self) -> Tuple[int, ...]:
        """State indices that are raw angles of hinge joints without limits (e.g. reacher's
        shoulder, cheetah's pitch), found from the model's joint types: each such hinge is
        turned by a full turn and the observation entries that move by exactly a full turn are
        its angle (angles observed as cos / sin, like cartpole's pole, do not move). The
        physics state is restored afterwards."""
        physics = self._env.physics
        model = physics.model
        hinges = [j for j in range(model.njnt)
                  if model.jnt_type[j] == MJ_HINGE_JOINT and not model.jnt_limited[j]]
        found = set()
        before_state = physics.get_state().copy()
        try:
            reference = self._raw_observation()
            for joint in hinges:
                address = int(model.jnt_qposadr[joint])
                physics.data.qpos[address] += FULL_TURN
                physics.forward()
                moved = self._raw_observation() - reference
                physics.data.qpos[address] -= FULL_TURN
                physics.forward()
                found.update(np.flatnonzero(np.abs(moved - FULL_TURN) < WRAP_MATCH_TOLERANCE)
                             .tolist())
        finally:
            physics.set_state(before_state)
            physics.forward()
        return tuple(sorted(int(i) for i in found))

    def _raw_observation(self) -> np.ndarray:
        """The task's observation of the current physics state, flattened, unwrapped."""
        observation = self._env.task.get_observation(self._env.physics)
        return np.concatenate([np.asarray(v, np.float64).reshape(-1)
                               for v in observation.values()])

    @property
    def max_agent_steps(self) -> int:
        """Agent steps per episode (episode_length / action_repeat, rounded down)."""
        return self.config.episode_length // self.config.action_repeat

    def _flatten(self, observation) -> np.ndarray:
        state = np.concatenate([np.asarray(v, np.float32).reshape(-1)
                                for v in observation.values()])
        state[self._wrap] = (state[self._wrap] + np.pi) % (2 * np.pi) - np.pi
        return state

    def reset(self) -> np.ndarray:
        """Start an episode; returns the state ``[state_dim]``."""
        self._sim_steps = 0
        return self._flatten(self._env.reset().observation)

    def step(self, action: np.ndarray) -> Tuple[np.ndarray, float, bool]:
        """Hold ``action [action_dim]`` for ``action_repeat`` simulator steps.

        Non-finite actions raise ValueError; others are clipped to the bounds.

        Returns:
            ``(next_state [state_dim], summed reward, episode_done)``; done is the time limit
            (dm_control suite tasks have no terminal states).
        """
        action = np.asarray(action, np.float64).reshape(-1)
        if action.shape[0] != self.action_dim or not np.isfinite(action).all():
            raise ValueError(f"action must be {self.action_dim} finite values, got {action}")
        action = np.clip(action, self.action_low, self.action_high)
        reward = 0.0
        for _ in range(self.config.action_repeat):
            time_step = self._env.step(action)
            reward += float(time_step.reward or 0.0)
            self._sim_steps += 1
            if time_step.last():
                break
        done = time_step.last() or self._sim_steps >= self.config.episode_length
        return self._flatten(time_step.observation), reward, done
