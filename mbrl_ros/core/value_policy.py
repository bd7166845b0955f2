"""Terminal value and policy prior for the planner (TD-MPC-like, on the real state space).

A batched ensemble of Q functions and a deterministic tanh-bounded policy are trained by TD
learning on real transitions mixed with short model rollouts (Dyna / MBPO style) through any
:class:`~mbrl_ros.core.dynamics_model.DynamicsModel` and a reward function
``reward_fn(state [N, S], action [N, A], next_state [N, S]) -> [N]``.

``policy_kind="sac"`` makes the policy a tanh-squashed Gaussian trained with SAC's
entropy-regularised targets and automatic temperature (Haarnoja et al. 2018); with the
rollout-horizon schedule and the model buffer (``rollout_horizon_max``, ``model_buffer_size``)
that is MBPO (Janner et al. 2019). The Q ensemble, targets, scaling and rollouts are shared.

Goal-conditioned (``goal_dim > 0``, e.g. an end-effector goal): the networks see
``[state, goal]``, the reward is ``reward_fn(state, action, next_state, goal)`` and goals are
relabelled with what the logged episodes actually reached (hindsight relabelling), because a
robot's logs hold few commanded goals. :class:`~mbrl_ros.core.task_reward.TaskReward` is the
reward the planner's own task cost defines.

Q values are learned in units of ``value_scale`` (the mean |reward| of the data over
``1 - discount``), so costs of any size train alike; :meth:`ValuePolicy.value_disagreement`
reports the Q members' spread in the units of the dynamics ensemble's disagreement (variance
over the variance of the training targets).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from mbrl_ros.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mbrl_ros.core.ensemble_layers import EnsembleMLP, check_activation
from mbrl_ros.core.normalizer import Normalizer
from mbrl_ros.core.types import TransitionBatch

logger = logging.getLogger(__name__)

RewardFn = Callable[..., torch.Tensor]
"""``reward_fn(state [N, S], action [N, A], next_state [N, S]) -> reward [N]``; goal-conditioned:
``reward_fn(state, action, next_state, goal [N, G])``."""
GoalFn = Callable[[torch.Tensor], torch.Tensor]
"""``achieved_goal(states [N, S]) -> goals [N, G]``: the goal each state reaches."""

MIN_SCALE = 1e-6
"""Floor of the reward scale and of the target variance (all-zero rewards, constant values)."""
POLICY_KINDS = ("deterministic", "sac")
"""``ValuePolicyConfig.policy_kind`` choices."""
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
"""Bounds of the SAC policy's log standard deviation (pre-squash, half-range units)."""
LOG_TWO = math.log(2.0)
HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class ValuePolicyConfig:
    """Settings of a :class:`ValuePolicy` and its TD training."""

    num_q: int = 2
    """Q-ensemble members (batched)."""
    q_target_members: int = 2
    """Random members whose minimum forms the TD target (clipped double-Q / REDQ)."""
    hidden_sizes: Tuple[int, ...] = (256, 256)
    """Hidden layer widths of the Q networks and the policy."""
    activation: str = "silu"
    """Hidden activation: silu, relu, elu, gelu or tanh."""
    q_learning_rate: float = 3e-4
    """Adam learning rate of the Q ensemble."""
    policy_learning_rate: float = 3e-4
    """Adam learning rate of the policy."""
    discount: float = 0.99
    """Per-step discount factor."""
    target_tau: float = 0.01
    """EMA rate of the target Q networks per update."""
    batch_size: int = 256
    """Transitions per TD update (real + model)."""
    real_ratio: float = 0.5
    """Share of each batch from real data when model rollouts are used."""
    rollout_horizon: int = 1
    """Model-rollout length in steps (MBPO uses 1-5); 0 disables rollouts."""
    rollout_action_noise: float = 0.1
    """Gaussian exploration noise on rollout actions, as a fraction of the action half-range."""
    rollout_sample_noise: bool = True
    """Sample rollout next states from the member's Gaussian (else use its mean). Rollout
    states are kept within the box the data's states span (a model is not trusted beyond)."""
    behaviour_cloning_weight: float = 0.4
    """TD3+BC (1 / its alpha of 2.5): weight of the squared distance between the policy's and
    the logged actions on the batch's real rows, per action dimension in units of the logged
    actions' spread (as the networks see them), next to the Q term normalised by its mean
    magnitude. Keeps the policy, and the model rollouts it drives,
    where the logged data are: without it, a policy learned from a robot's logs picks actions
    the model never saw and the TD targets diverge. 0: plain deterministic policy gradient
    (online learning, where the planner's own actions fill the data)."""
    value_aggregation: str = "mean"
    """How ``value`` combines Q members: mean or min."""
    max_grad_norm: float = 10.0
    """Gradient-norm clip of both optimisers."""
    normalizer_min_std: float = 1e-6
    """Features with a smaller std are treated as constant (std set to 1)."""
    goal_future_fraction: float = 0.5
    """Goal-conditioned learning: share of each batch whose goal is relabelled to what the
    same episode reached within ``goal_future_steps`` (hindsight); the rest get a goal reached
    anywhere in the data."""
    goal_future_steps: int = 50
    """How far ahead (in transitions) a hindsight goal may lie."""
    policy_kind: str = "deterministic"
    """deterministic: a tanh-bounded deterministic policy (TD3, TD3+BC); sac: a tanh-squashed
    Gaussian policy with SAC's entropy-regularised targets, whose model rollouts sample it
    (``rollout_action_noise`` unused). :meth:`ValuePolicy.policy` gives the mean action of
    either, :meth:`ValuePolicy.sample_policy` a sampled one."""
    init_temperature: float = 0.1
    """SAC: initial entropy temperature, in units of the data's mean |reward| per step (the
    value scale times ``1 - discount``), so rewards of any size train alike."""
    auto_temperature: bool = True
    """SAC: adapt the temperature so that the policy's entropy tracks the target entropy."""
    temperature_learning_rate: float = 3e-4
    """SAC: Adam learning rate of the log temperature."""
    target_entropy_per_dim: float = -1.0
    """SAC: target entropy per action dimension (nats, actions in half-range units; SAC's
    -|A| in total)."""
    rollout_horizon_max: int = 0
    """MBPO's horizon schedule: above ``rollout_horizon``, the rollout length grows linearly
    from ``rollout_horizon`` at ``rollout_schedule_start`` real transitions to this at
    ``rollout_schedule_end`` (rounded down); 0: a fixed ``rollout_horizon``."""
    rollout_schedule_start: int = 0
    """Real transitions at which the rollout horizon starts to grow."""
    rollout_schedule_end: int = 0
    """Real transitions at which the rollout horizon reaches ``rollout_horizon_max``."""
    model_buffer_size: int = 0
    """MBPO's model buffer: > 0 keeps the newest this many model transitions across fits; each
    fit first adds rollouts from ``model_rollouts_per_update`` real start states per update,
    and every batch draws its model rows from the buffer. 0: fresh rollouts for every batch."""
    model_rollouts_per_update: float = 20.0
    """Rollouts (start states) added to the model buffer per update (MBPO: 400 per environment
    step at 20 updates per step)."""

    def validate(self) -> None:
        """Raise ValueError on inconsistent settings."""
        if self.num_q < 1 or not 1 <= self.q_target_members <= self.num_q:
            raise ValueError(f"need num_q >= 1 and 1 <= q_target_members <= num_q, got "
                             f"{self.num_q}, {self.q_target_members}")
        if not self.hidden_sizes or any(int(h) < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers, got {self.hidden_sizes}")
        check_activation(self.activation)
        for name in ("q_learning_rate", "policy_learning_rate", "batch_size", "max_grad_norm",
                     "normalizer_min_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"discount must be in [0, 1), got {self.discount}")
        if not 0.0 < self.target_tau <= 1.0:
            raise ValueError(f"target_tau must be in (0, 1], got {self.target_tau}")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"real_ratio must be in [0, 1], got {self.real_ratio}")
        if self.behaviour_cloning_weight < 0:
            raise ValueError("behaviour_cloning_weight must be >= 0")
        if self.rollout_horizon < 0 or self.rollout_action_noise < 0:
            raise ValueError("rollout_horizon and rollout_action_noise must be >= 0")
        if self.value_aggregation not in ("mean", "min"):
            raise ValueError(f"value_aggregation must be mean or min, "
                             f"got {self.value_aggregation!r}")
        if not 0.0 <= self.goal_future_fraction <= 1.0 or self.goal_future_steps < 0:
            raise ValueError("goal_future_fraction must be in [0, 1] and goal_future_steps "
                             ">= 0")
        if self.policy_kind not in POLICY_KINDS:
            raise ValueError(f"policy_kind must be one of {POLICY_KINDS}, "
                             f"got {self.policy_kind!r}")
        for name in ("init_temperature", "temperature_learning_rate",
                     "model_rollouts_per_update"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.rollout_horizon_max and self.rollout_horizon_max < self.rollout_horizon:
            raise ValueError(f"rollout_horizon_max must be 0 or >= rollout_horizon, got "
                             f"{self.rollout_horizon_max} < {self.rollout_horizon}")
        if not 0 <= self.rollout_schedule_start <= self.rollout_schedule_end:
            raise ValueError("need 0 <= rollout_schedule_start <= rollout_schedule_end")
        if self.model_buffer_size < 0:
            raise ValueError(f"model_buffer_size must be >= 0, got {self.model_buffer_size}")

    def rollout_horizon_at(self, num_real: int) -> int:
        """Rollout length once ``num_real`` real transitions are available (MBPO's linear
        schedule from ``rollout_horizon`` to ``rollout_horizon_max``)."""
        if self.rollout_horizon_max <= self.rollout_horizon:
            return self.rollout_horizon
        span = max(self.rollout_schedule_end - self.rollout_schedule_start, 1)
        progress = min(max((num_real - self.rollout_schedule_start) / span, 0.0), 1.0)
        return self.rollout_horizon + int(progress * (self.rollout_horizon_max
                                                      - self.rollout_horizon))

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly dict."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ValuePolicyConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ValuePolicyConfig keys: {sorted(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})


@dataclass
class ValueFitReport:
    """What one call of :meth:`ValuePolicy.fit` did."""

    steps: int = 0
    """Gradient updates made."""
    q_loss: List[float] = field(default_factory=list)
    """Per update: mean squared TD error over Q members (in value-scale units)."""
    policy_loss: List[float] = field(default_factory=list)
    """Per update: minus the mean Q value of the policy's actions (in value-scale units)."""
    model_transitions: int = 0
    """Model-rollout transitions used in total."""
    rollout_horizon: int = 0
    """Model-rollout length used (0: none)."""
    entropy: List[float] = field(default_factory=list)
    """SAC, per update: the policy's mean entropy estimate ``-log pi`` (half-range units)."""
    temperature: List[float] = field(default_factory=list)
    """SAC, per update: the entropy temperature after the update (mean-|reward| units)."""


def episode_ends(episode: Optional[np.ndarray], num_rows: int) -> np.ndarray:
    """``[N]`` index of the last row of each row's run of equal episode ids (rows in time
    order); without episode ids every row is its own run (no future is known)."""
    if episode is None:
        return np.arange(num_rows)
    episode = np.asarray(episode).reshape(-1)
    boundary = np.flatnonzero(episode[1:] != episode[:-1])  # row before each change
    run_ends = np.append(boundary, num_rows - 1)
    return run_ends[np.searchsorted(run_ends, np.arange(num_rows))]


class ValuePolicy(torch.nn.Module):
    """Q ensemble + deterministic (or SAC) policy over the real state space (plus a goal).

    Actions live in the box ``[action_low, action_high]``; the policy is ``tanh``-bounded to it.
    ``relative_action`` (one state index per action, as the dynamics ensemble's setting of the
    same name; empty: none): actions that are position targets of those state dims, seen by the
    networks as the offset from the current position, so holding still is the networks' natural
    output rather than a precise absolute value.
    """

    def __init__(self, state_dim: int, action_dim: int, action_low: Sequence[float],
                 action_high: Sequence[float], config: ValuePolicyConfig = ValuePolicyConfig(),
                 device: torch.device | str = "cpu", seed: int = 0, goal_dim: int = 0,
                 relative_action: Sequence[int] = ()) -> None:
        super().__init__()
        config.validate()
        low = torch.as_tensor(action_low, dtype=torch.float32).reshape(-1)
        high = torch.as_tensor(action_high, dtype=torch.float32).reshape(-1)
        if len(low) != action_dim or len(high) != action_dim or not bool((high > low).all()):
            raise ValueError(f"action bounds must have {action_dim} entries with high > low")
        if goal_dim < 0:
            raise ValueError(f"goal_dim must be >= 0, got {goal_dim}")
        relative = [int(i) for i in relative_action]
        if relative and (len(relative) != action_dim
                         or not all(0 <= i < state_dim for i in relative)):
            raise ValueError(f"relative_action needs {action_dim} state indices below "
                             f"{state_dim}, got {list(relative_action)}")
        self.relative_action = tuple(relative)
        self.config = config
        self.state_dim, self.action_dim, self.goal_dim = state_dim, action_dim, int(goal_dim)
        inputs = state_dim + self.goal_dim
        self.device = torch.device(device)
        generator = torch.Generator().manual_seed(seed)
        self.q = EnsembleMLP(config.num_q, inputs + action_dim, config.hidden_sizes, 1,
                             config.activation, self.device, generator)
        self.stochastic = config.policy_kind == "sac"
        """SAC: the actor outputs the mean and log std of a tanh-squashed Gaussian."""
        self.actor = EnsembleMLP(1, inputs, config.hidden_sizes,
                                 action_dim * (2 if self.stochastic else 1),
                                 config.activation, self.device, generator)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.state_normalizer = Normalizer(inputs, config.normalizer_min_std, self.device)
        self.register_buffer("normalizer_fitted", torch.zeros((), dtype=torch.bool,
                                                              device=self.device))
        self.register_buffer("action_center", ((high + low) / 2).to(self.device))
        self.register_buffer("action_half_range", ((high - low) / 2).to(self.device))
        self._relative_index = torch.as_tensor(relative, dtype=torch.long, device=self.device)
        self.register_buffer("value_scale", torch.ones((), device=self.device))
        """Q values are learned as ``Q / value_scale`` (set on the first fit)."""
        self.register_buffer("action_spread", torch.ones(action_dim, device=self.device))
        """Std of the logged actions as the Q networks see them (set on the first fit): the
        unit of the behaviour-cloning distance."""
        self.register_buffer("target_variance", torch.ones((), device=self.device))
        """Running variance of the TD targets: the unit of :meth:`value_disagreement`."""
        self.q_optimizer = torch.optim.Adam(self.q.parameters(), lr=config.q_learning_rate)
        self.policy_optimizer = torch.optim.Adam(self.actor.parameters(),
                                                 lr=config.policy_learning_rate)
        self.last_entropy = math.nan
        """SAC: mean entropy estimate of the policy in the last update."""
        self._model_buffer: Optional[Tuple[torch.Tensor, ...]] = None
        """MBPO: the newest model transitions ``(obs, a, r, next_obs, done)`` (not saved)."""
        if self.stochastic:
            self.log_temperature = torch.nn.Parameter(torch.tensor(
                math.log(config.init_temperature), device=self.device))
            """SAC: log of the entropy temperature (mean-|reward| units)."""
            self.temperature_optimizer = torch.optim.Adam(
                [self.log_temperature], lr=config.temperature_learning_rate)

    # ------------------------------------------------------------------------ evaluation
    def observation(self, state: torch.Tensor, goal: Optional[torch.Tensor] = None
                    ) -> torch.Tensor:
        """The networks' input ``[N, S + G]``: the state and (goal-conditioned) the goal,
        ``goal [G]`` (one for all rows) or ``[N, G]``. ValueError if the goal is missing or
        given to an agent without goals."""
        state = torch.as_tensor(state, dtype=torch.float32, device=self.device)
        if self.goal_dim == 0:
            if goal is not None:
                raise ValueError("this value/policy takes no goal")
            return state
        if goal is None:
            raise ValueError(f"this value/policy needs a goal of {self.goal_dim} values")
        goal = torch.as_tensor(goal, dtype=torch.float32, device=self.device)
        if goal.shape[-1] != self.goal_dim:
            raise ValueError(f"goal has {goal.shape[-1]} values, expected {self.goal_dim}")
        return torch.cat([state, goal.expand(*state.shape[:-1], self.goal_dim)], dim=-1)

    @property
    def temperature(self) -> torch.Tensor:
        """SAC: the entropy temperature in units of the mean |reward| per step (0 for the
        deterministic policy)."""
        if not self.stochastic:
            return torch.zeros((), device=self.device)
        return self.log_temperature.detach().exp()

    def _actor_output(self, observation: torch.Tensor) -> torch.Tensor:
        normalized = self.state_normalizer.normalize(observation).unsqueeze(0)
        return self.actor(normalized)[0]

    def _policy(self, observation: torch.Tensor) -> torch.Tensor:
        """``[N, S + G] -> [N, A]`` with gradients: the (SAC: mean) action."""
        return self._squash(observation, self._actor_output(observation)[:, :self.action_dim])

    def _sample(self, observation: torch.Tensor, generator: Optional[torch.Generator]
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """SAC: a reparameterised action sample ``[N, A]`` (with gradients) and its log
        density ``[N]`` for actions in half-range units (the tanh squashing accounted for)."""
        output = self._actor_output(observation)
        mean = output[:, :self.action_dim]
        log_std = output[:, self.action_dim:].clamp(LOG_STD_MIN, LOG_STD_MAX)
        eps = torch.randn(mean.shape, generator=generator).to(self.device)
        pre_tanh = mean + log_std.exp() * eps
        # log N(pre_tanh) - log |d tanh / d pre_tanh|, the latter in a stable form
        log_prob = (-0.5 * eps.square() - log_std - HALF_LOG_TWO_PI).sum(-1) \
            - (2.0 * (LOG_TWO - pre_tanh - torch.nn.functional.softplus(-2.0 * pre_tanh))
               ).sum(-1)
        return self._squash(observation, pre_tanh), log_prob

    def _squash(self, observation: torch.Tensor, pre_tanh: torch.Tensor) -> torch.Tensor:
        """Actor output ``[N, A]`` -> action in the bounds (relative actions clamped)."""
        step = self.action_half_range * torch.tanh(pre_tanh)
        if not self.relative_action:
            return self.action_center + step
        high = self.action_center + self.action_half_range
        low = self.action_center - self.action_half_range
        return torch.maximum(torch.minimum(observation[:, self._relative_index] + step, high),
                             low)

    def _action_features(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Actions as the Q networks see them: in half-ranges, from the bounds' centre or (for
        ``relative_action``) from the current position."""
        origin = observation[:, self._relative_index] if self.relative_action \
            else self.action_center
        return (action - origin) / self.action_half_range

    def _scaled_q(self, observation: torch.Tensor, action: torch.Tensor,
                  target: bool = False) -> torch.Tensor:
        """``[num_q, N]`` Q values in units of ``value_scale`` (with gradients)."""
        inputs = torch.cat([self.state_normalizer.normalize(observation),
                            self._action_features(observation, action)], dim=-1)
        network = self.q_target if target else self.q
        return network(inputs.unsqueeze(0).expand(self.config.num_q, -1, -1))[..., 0]

    def q_values(self, observation: torch.Tensor, action: torch.Tensor,
                 target: bool = False) -> torch.Tensor:
        """``observation [N, S + G]``, ``action [N, A]`` -> ``[num_q, N]`` (with gradients)."""
        return self.value_scale * self._scaled_q(observation, action, target)

    def policy(self, state: torch.Tensor, goal: Optional[torch.Tensor] = None,
               grad: bool = False) -> torch.Tensor:
        """Policy prior ``state [..., S] -> action [..., A]`` within the action bounds (SAC:
        the squashed mean, for planning and deterministic acting)."""
        observation = self.observation(state, goal)
        with torch.set_grad_enabled(grad):
            flat = self._policy(observation.reshape(-1, observation.shape[-1]))
        return flat.reshape(*observation.shape[:-1], self.action_dim)

    def sample_policy(self, state: torch.Tensor, goal: Optional[torch.Tensor] = None,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Exploratory action ``state [..., S] -> [..., A]``, as model rollouts take them: SAC
        samples its Gaussian, the deterministic policy adds ``rollout_action_noise``."""
        observation = self.observation(state, goal)
        with torch.no_grad():
            flat = self._behaviour_action(observation.reshape(-1, observation.shape[-1]),
                                          generator)
        return flat.reshape(*observation.shape[:-1], self.action_dim)

    def _behaviour_action(self, observation: torch.Tensor,
                          generator: Optional[torch.Generator]) -> torch.Tensor:
        """``[N, S + G] -> [N, A]``: the policy's action with exploration, in the bounds."""
        if self.stochastic:
            return self._sample(observation, generator)[0]
        noise = torch.randn(observation.shape[0], self.action_dim, generator=generator)
        action = self._policy(observation) + self.config.rollout_action_noise \
            * self.action_half_range * noise.to(self.device)
        high = self.action_center + self.action_half_range
        low = self.action_center - self.action_half_range
        return torch.maximum(torch.minimum(action, high), low)

    def _member_values(self, state: torch.Tensor, goal: Optional[torch.Tensor],
                       grad: bool) -> Tuple[torch.Tensor, Tuple[int, ...]]:
        observation = self.observation(state, goal)
        # a planner differentiating its plan's cost (iLQR, the gradient refinement) passes
        # states that require gradients: the value then carries them
        grad = grad or (torch.is_grad_enabled() and observation.requires_grad)
        with torch.set_grad_enabled(grad):
            flat = observation.reshape(-1, observation.shape[-1])
            return self.q_values(flat, self._policy(flat)), tuple(observation.shape[:-1])

    def value(self, state: torch.Tensor, goal: Optional[torch.Tensor] = None,
              grad: bool = False) -> torch.Tensor:
        """Terminal value ``V(s) = agg_members Q(s, policy(s))``: ``[..., S] -> [...]``."""
        q, shape = self._member_values(state, goal, grad)
        agg = q.mean(0) if self.config.value_aggregation == "mean" else q.min(0).values
        return agg.reshape(shape)

    def value_disagreement(self, state: torch.Tensor,
                           goal: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[..., S] -> [...]``: variance of the Q members at ``(s, policy(s))`` over the
        variance of the TD targets (dimensionless, like the dynamics ensemble's disagreement:
        0 = the members agree; about 1 = they differ as much as the values vary)."""
        q, shape = self._member_values(state, goal, False)
        return (q.var(0, unbiased=False) / self.target_variance).reshape(shape)

    # ------------------------------------------------------------------------- training
    def _rollouts(self, start: torch.Tensor, goal: Optional[torch.Tensor], model: Any,
                  reward_fn: RewardFn, generator: torch.Generator,
                  state_box: Tuple[torch.Tensor, torch.Tensor],
                  horizon: int) -> Tuple[torch.Tensor, ...]:
        """``horizon``-step model rollouts from ``start [M, S]`` (with goals ``[M, G]``), their
        states kept in ``state_box`` (low, high ``[S]``); returns ``(obs, a, r, next_obs,
        done)``, ``horizon * M`` rows."""
        columns: Tuple[List[torch.Tensor], ...] = ([], [], [], [])
        state = start
        rows = torch.arange(len(start), device=self.device)
        with torch.no_grad():
            for _ in range(horizon):
                observation = self.observation(state, goal)
                action = self._behaviour_action(observation, generator)
                mean, var = model.predict(state, action)
                member = torch.randint(mean.shape[0], (len(state),), generator=generator)
                next_state = mean[member.to(self.device), rows]
                if self.config.rollout_sample_noise:
                    eps = torch.randn(next_state.shape, generator=generator).to(self.device)
                    next_state = next_state + var[member.to(self.device), rows].sqrt() * eps
                next_state = torch.maximum(torch.minimum(next_state, state_box[1]), state_box[0])
                reward = self._reward(reward_fn, state, action, next_state, goal)
                for column, value in zip(columns, (observation, action, reward,
                                                   self.observation(next_state, goal))):
                    column.append(value)
                state = next_state
        done = torch.zeros(len(start) * horizon, device=self.device)
        return tuple(torch.cat(column) for column in columns) + (done,)

    def _reward(self, reward_fn: RewardFn, state, action, next_state, goal) -> torch.Tensor:
        reward = reward_fn(state, action, next_state) if goal is None \
            else reward_fn(state, action, next_state, goal)
        return reward.reshape(-1).float()

    def update(self, observation: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
               next_observation: torch.Tensor, done: torch.Tensor,
               generator: torch.Generator, num_real: Optional[int] = None) -> Tuple[float, float]:
        """One TD update of the Q ensemble, one policy step and the target EMA (SAC: soft
        targets, and a temperature step when ``auto_temperature``).

        Args: ``observation [N, S + G]``, ``action [N, A]``, ``reward [N]``,
        ``next_observation [N, S + G]``, ``done [N]`` (1 where no bootstrapping);
        ``num_real``: the first rows that are logged data (behaviour cloning; None: all).
        Returns ``(q_loss, policy_loss)`` in value-scale units.
        """
        config = self.config
        with torch.no_grad():
            subset = torch.randperm(config.num_q, generator=generator)[:config.q_target_members]
            if self.stochastic:
                next_action, next_log_prob = self._sample(next_observation, generator)
                next_q = self.q_values(next_observation, next_action, target=True)[
                    subset.to(self.device)].min(0).values - self.entropy_weight() * next_log_prob
            else:
                next_q = self.q_target_values(next_observation)[
                    subset.to(self.device)].min(0).values
            target = reward + config.discount * (1.0 - done) * next_q
            batch_variance = target.var(unbiased=False).clamp_min(MIN_SCALE)
            self.target_variance.lerp_(batch_variance, config.target_tau)
        q_loss = (self._scaled_q(observation, action) - target / self.value_scale).square().mean()
        self.q_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.q.parameters(), config.max_grad_norm)
        self.q_optimizer.step()

        if self.stochastic:
            policy_action, log_prob = self._sample(observation, generator)
            q_policy = self._scaled_q(observation, policy_action)
            # entropy bonus in value-scale units: temperature * mean |reward| / value_scale
            objective = q_policy.mean(0) - self.temperature \
                * (1.0 - config.discount) * log_prob
        else:
            policy_action = self._policy(observation)
            q_policy = objective = self._scaled_q(observation, policy_action)
        if config.behaviour_cloning_weight > 0.0:
            real = len(observation) if num_real is None else num_real
            if self.stochastic:
                policy_action = self._policy(observation[:real])
            distance = (policy_action[:real] - action[:real]) \
                / (self.action_half_range * self.action_spread)
            policy_loss = -objective.mean() / q_policy.abs().mean().detach().clamp_min(MIN_SCALE) \
                + config.behaviour_cloning_weight * distance.square().sum(-1).mean()
        else:
            policy_loss = -objective.mean()
        self.policy_optimizer.zero_grad(set_to_none=True)
        policy_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.actor.parameters(), config.max_grad_norm)
        self.policy_optimizer.step()
        if self.stochastic:
            self._temperature_step(log_prob.detach())
        with torch.no_grad():
            torch._foreach_lerp_(list(self.q_target.parameters()), list(self.q.parameters()),
                                 config.target_tau)
        return float(q_loss.detach()), float(policy_loss.detach())

    def entropy_weight(self) -> torch.Tensor:
        """SAC: the temperature in reward units (times ``-log pi`` it is the entropy bonus per
        step): temperature * mean |reward| = temperature * value_scale * (1 - discount)."""
        return self.temperature * self.value_scale * (1.0 - self.config.discount)

    def _temperature_step(self, log_prob: torch.Tensor) -> None:
        """SAC: record the entropy estimate; with ``auto_temperature`` one Adam step on the log
        temperature toward the target entropy (up when the entropy is below it)."""
        self.last_entropy = float(-log_prob.mean())
        if not self.config.auto_temperature:
            return
        target_entropy = self.config.target_entropy_per_dim * self.action_dim
        loss = -(self.log_temperature * (log_prob + target_entropy)).mean()
        self.temperature_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.temperature_optimizer.step()

    def q_target_values(self, next_observation: torch.Tensor) -> torch.Tensor:
        """Target-network ``Q'(s', policy(s'))``: ``[N, S + G] -> [num_q, N]``."""
        return self.q_values(next_observation, self._policy(next_observation), target=True)

    def fit(self, data: TransitionBatch, num_steps: int, model: Any = None,
            reward_fn: Optional[RewardFn] = None, seed: int = 0,
            progress: Optional[Callable[[int, Dict[str, float]], None]] = None,
            achieved_goal: Optional[GoalFn] = None,
            should_stop: Optional[Callable[[], bool]] = None) -> ValueFitReport:
        """Run ``num_steps`` TD updates on ``data`` plus rollouts through ``model``
        (``config.rollout_horizon_at(len(data))`` steps long; with a model buffer, MBPO style,
        rollouts for all updates are made first and join the buffer's older ones).

        Args:
            data: real transitions, in time order within each ``episode``; ``reward`` is used
                when present (and no goals), else ``reward_fn``. ``terminal`` rows do not
                bootstrap. Non-finite rows are dropped (warning).
            num_steps: gradient updates.
            model: a DynamicsModel for rollouts (None: real data only).
            reward_fn: reward of model transitions (and of real ones without reward).
            seed: seeds sampling and rollout noise.
            progress: ``progress(step, {"q_loss", "policy_loss"})`` after every update (SAC:
                also ``"entropy"`` and ``"temperature"``).
            achieved_goal: goal-conditioned agents: the goal a state reaches, for hindsight
                relabelling (required when ``goal_dim > 0``).
            should_stop: polled before every update; True ends the fit early (the report
                says how many updates ran).

        Raises:
            ValueError: no finite rows, rewards unavailable, or a goal source missing.
        """
        config = self.config
        finite = data.finite_mask()
        if data.reward is not None:
            finite &= np.isfinite(data.reward)
        if not finite.all():
            logger.warning("ValuePolicy.fit: dropped %d of %d non-finite transitions",
                           int((~finite).sum()), len(data))
            data = data[finite]
        if len(data) == 0:
            raise ValueError("ValuePolicy.fit needs at least one finite transition")
        goals = self.goal_dim > 0
        if goals and (achieved_goal is None or reward_fn is None):
            raise ValueError("a goal-conditioned value/policy needs reward_fn and achieved_goal")
        if data.reward is None and reward_fn is None:
            raise ValueError("transitions carry no reward: pass reward_fn")
        tensor = {name: torch.as_tensor(getattr(data, name), dtype=torch.float32,
                                        device=self.device)
                  for name in ("state", "action", "next_state")}
        generator = torch.Generator().manual_seed(seed)
        sampler = None
        if goals:
            with torch.no_grad():
                reached = achieved_goal(tensor["next_state"]).float()
            sampler = _HindsightGoals(reached, episode_ends(data.episode, len(data)), config,
                                      generator)
            real_reward = None
        elif data.reward is not None:
            real_reward = torch.as_tensor(data.reward, dtype=torch.float32, device=self.device)
        else:
            with torch.no_grad():
                real_reward = self._reward(reward_fn, tensor["state"], tensor["action"],
                                           tensor["next_state"], None)
        real_done = torch.as_tensor(data.terminal if data.terminal is not None
                                    else np.zeros(len(data)), dtype=torch.float32,
                                    device=self.device)
        if not bool(self.normalizer_fitted):
            self._fit_scales(tensor, real_reward, sampler, reward_fn)
        horizon = config.rollout_horizon_at(len(data))
        use_model = model is not None and reward_fn is not None and horizon > 0
        num_real = round(config.batch_size * config.real_ratio) if use_model \
            else config.batch_size
        num_model = config.batch_size - num_real
        num_starts = math.ceil(num_model / horizon) if use_model else 0
        state_box = (torch.minimum(tensor["state"].min(0).values,
                                   tensor["next_state"].min(0).values),
                     torch.maximum(tensor["state"].max(0).values,
                                   tensor["next_state"].max(0).values))
        report = ValueFitReport(rollout_horizon=horizon if use_model else 0)
        buffered = num_model > 0 and config.model_buffer_size > 0 and num_steps > 0
        if buffered:
            starts = torch.randint(len(data), (math.ceil(config.model_rollouts_per_update
                                                         * num_steps),), generator=generator)
            starts = starts.to(self.device)
            self._add_model_transitions(self._rollouts(
                tensor["state"][starts], None if sampler is None else sampler(starts), model,
                reward_fn, generator, state_box, horizon))
        for step in range(1, num_steps + 1):
            if should_stop is not None and should_stop():
                break
            rows = torch.randint(len(data), (num_real,), generator=generator).to(self.device)
            goal = None if sampler is None else sampler(rows)
            state, action, next_state = (tensor[name][rows]
                                         for name in ("state", "action", "next_state"))
            if real_reward is None:
                with torch.no_grad():
                    reward = self._reward(reward_fn, state, action, next_state, goal)
            else:
                reward = real_reward[rows]
            parts = [(self.observation(state, goal), action, reward,
                      self.observation(next_state, goal), real_done[rows])]
            if buffered:
                picked = torch.randint(len(self._model_buffer[0]), (num_model,),
                                       generator=generator).to(self.device)
                parts.append(tuple(column[picked] for column in self._model_buffer))
                report.model_transitions += num_model
            elif num_model > 0:
                starts = torch.randint(len(data), (num_starts,), generator=generator)
                starts = starts.to(self.device)
                rollout = self._rollouts(tensor["state"][starts], None if sampler is None
                                         else sampler(starts), model, reward_fn, generator,
                                         state_box, horizon)
                parts.append(tuple(x[:num_model] for x in rollout))
                report.model_transitions += num_model
            batch = [torch.cat(columns) for columns in zip(*parts)]
            q_loss, policy_loss = self.update(*batch, generator=generator, num_real=num_real)
            report.q_loss.append(q_loss)
            report.policy_loss.append(policy_loss)
            report.steps = step
            losses = {"q_loss": q_loss, "policy_loss": policy_loss}
            if self.stochastic:
                losses.update(entropy=self.last_entropy,
                              temperature=float(self.temperature))
                report.entropy.append(losses["entropy"])
                report.temperature.append(losses["temperature"])
            if progress is not None:
                progress(step, losses)
        return report

    def _add_model_transitions(self, rollout: Tuple[torch.Tensor, ...]) -> None:
        """MBPO: append rollout rows to the model buffer, keeping the newest
        ``model_buffer_size`` (first in, first out)."""
        size = self.config.model_buffer_size
        if self._model_buffer is None:
            self._model_buffer = tuple(column[-size:] for column in rollout)
            return
        self._model_buffer = tuple(torch.cat([old, new])[-size:]
                                   for old, new in zip(self._model_buffer, rollout))

    def _fit_scales(self, tensor: Dict[str, torch.Tensor], real_reward: Optional[torch.Tensor],
                    sampler: Optional["_HindsightGoals"], reward_fn: Optional[RewardFn]) -> None:
        """First fit: the input normaliser (states and the goals they reach) and the value
        scale (mean |reward| / (1 - discount))."""
        rows = torch.arange(len(tensor["state"]), device=self.device)
        goal = None if sampler is None else sampler(rows)
        if real_reward is None:
            with torch.no_grad():
                real_reward = self._reward(reward_fn, tensor["state"], tensor["action"],
                                           tensor["next_state"], goal)
        observation = self.observation(tensor["state"], goal)
        self.state_normalizer.fit(observation)
        spread = self._action_features(observation, tensor["action"]).std(0, unbiased=False)
        self.action_spread.copy_(spread.clamp_min(self.config.normalizer_min_std))
        scale = float(real_reward.abs().mean()) / (1.0 - self.config.discount)
        self.value_scale.fill_(max(scale, MIN_SCALE))
        self.target_variance.fill_(max(float(real_reward.var(unbiased=False))
                                       / (1.0 - self.config.discount) ** 2, MIN_SCALE))
        self.normalizer_fitted.fill_(True)

    # ----------------------------------------------------------------------- checkpoints
    def save(self, path: str, metadata: Optional[Mapping[str, Any]] = None) -> str:
        """Write the networks (not optimiser state) to a checkpoint; returns its sha256."""
        header = {"config": self.config.to_dict(), "state_dim": self.state_dim,
                  "action_dim": self.action_dim, "goal_dim": self.goal_dim,
                  "relative_action": list(self.relative_action),
                  "action_low": (self.action_center - self.action_half_range).tolist(),
                  "action_high": (self.action_center + self.action_half_range).tolist(),
                  "metadata": dict(metadata or {})}
        return save_checkpoint(path, type(self).__name__, dict(self.state_dict()), header)

    @classmethod
    def load(cls, path: str, expected_sha256: Optional[str] = None,
             device: Optional[torch.device | str] = None) -> "ValuePolicy":
        """Read a checkpoint written by :meth:`save`. Raises CheckpointError."""
        checkpoint = load_checkpoint(path, expected_sha256)
        header = checkpoint.require_class(cls.__name__)
        try:
            model = cls(int(header["state_dim"]), int(header["action_dim"]),
                        header["action_low"], header["action_high"],
                        ValuePolicyConfig.from_dict(header["config"]), device or "cpu",
                        goal_dim=int(header.get("goal_dim", 0)),
                        relative_action=header.get("relative_action", ()))
            model.load_state_dict(checkpoint.tensors, strict=True)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{path} does not describe a valid ValuePolicy: {exc}") \
                from exc
        model.metadata = dict(header.get("metadata") or {})
        return model


class _HindsightGoals:
    """Goals for sampled rows: with probability ``goal_future_fraction`` one the same episode
    reached up to ``goal_future_steps`` later (its own next state at least), else one reached
    anywhere in the data."""

    def __init__(self, reached: torch.Tensor, ends: np.ndarray, config: ValuePolicyConfig,
                 generator: torch.Generator) -> None:
        self.reached = reached
        self.ends = torch.as_tensor(ends, dtype=torch.long, device=reached.device)
        self.config, self.generator = config, generator

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        count, device = len(rows), self.reached.device
        room = torch.clamp(self.ends[rows] - rows, max=self.config.goal_future_steps)
        offset = (torch.rand(count, generator=self.generator).to(device)
                  * (room + 1).float()).long()
        future = rows + torch.minimum(offset, room)
        anywhere = torch.randint(len(self.reached), (count,), generator=self.generator)
        use_future = torch.rand(count, generator=self.generator).to(device) \
            < self.config.goal_future_fraction
        return self.reached[torch.where(use_future, future, anywhere.to(device))]
