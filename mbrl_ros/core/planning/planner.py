"""TD-MPC-style planner (MPPI, CEM, iCEM or iLQR) over a learned dynamics ensemble."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import torch

from mbrl_ros.core.planning.cem import cem_update
from mbrl_ros.core.ensemble_kernel import MeanStepKernel
from mbrl_ros.core.planning.config import BF16_ACTION_TOLERANCE, PlannerConfig
from mbrl_ros.core.planning.constraints import (ActionScale, ConstraintFn, StateLimits,
                                                ranking_cost)
from mbrl_ros.core.planning.gradient import refine_plan
from mbrl_ros.core.planning.icem import icem_search, shift_plans
from mbrl_ros.core.planning.ilqr import IlqrProblem, ilqr
from mbrl_ros.core.planning.mppi import mppi_update
from mbrl_ros.core.planning.rollout import (CostFn, PolicyFn, Rollout, ValueFn, mean_kernel,
                                            propagate, score, track_states)
from mbrl_ros.core.planning.sampling import (fill_candidates, policy_trajectories,
                                             shift_warm_start)

logger = logging.getLogger(__name__)


def bf16_worth_it(error: float, bf16_seconds: float, float32_seconds: float) -> bool:
    """The bfloat16 rule: the first action moved by at most ``BF16_ACTION_TOLERANCE`` of the
    action range (``error``) and sampling was faster than in float32."""
    return error <= BF16_ACTION_TOLERANCE and bf16_seconds < float32_seconds


@dataclass
class PlanResult:
    """Outcome of one planning step (tensors on the planner's device, physical units)."""

    action: torch.Tensor
    """[A] first action of the plan, to apply now."""
    actions: torch.Tensor
    """[H, A] planned action sequence."""
    states: torch.Tensor
    """[H+1, S] predicted mean states along the plan (mean over members; row 0 = input)."""
    disagreement: torch.Tensor
    """[H] ensemble disagreement at each step of the plan (see ensemble_disagreement)."""
    cost: float
    """Cost of the returned plan under the planner's propagation (inf if unusable)."""
    iterations: int
    """Sampling iterations run."""
    planning_time: float
    """Wall time of the planning step in seconds (device work included)."""
    feasible: bool
    """False if the plan violates the state limits or the extra constraint, or its cost is not
    finite (fallback plan)."""


class Planner:
    """Receding-horizon MPPI / CEM / iCEM / iLQR planner; ``plan(state)`` once per tick.

    ``dynamics``: ensemble with ``num_members``, ``state_dim``, ``action_dim``, ``device`` and
    ``predict(state [E|-, N, S], action [E|-, N, A]) -> (mean, var) [E, N, S]``.
    ``cost_fn(states [N, H+1, S], actions [N, H, A]) -> [N]``, ``value(state [N, S]) -> [N]``
    (terminal cost = -value) and ``policy(state [N, S]) -> [N, A]`` (prior) are optional;
    so is ``constraint`` (:data:`ConstraintFn`, e.g. the workspace), a hard constraint
    judged with the state limits.
    """

    def __init__(self, dynamics, config: PlannerConfig, cost_fn: Optional[CostFn] = None,
                 value: Optional[ValueFn] = None, policy: Optional[PolicyFn] = None,
                 device: Optional[torch.device] = None,
                 constraint: Optional[ConstraintFn] = None) -> None:
        """Validate the config against the dynamics' sizes; raise ValueError on mismatch."""
        self.config = config.validate()
        self.device = torch.device(device if device is not None else dynamics.device)
        self.dynamics, self.cost_fn, self.value, self.policy = dynamics, cost_fn, value, policy
        self.constraint = constraint
        self.state_dim, self.action_dim = int(dynamics.state_dim), int(dynamics.action_dim)
        self.scale = ActionScale(config.action_low, config.action_high, self.action_dim,
                                 self.device)
        self.limits = StateLimits(config.state_low, config.state_high, self.state_dim,
                                  config.constraint_tolerance, self.device)
        self.discounts = config.discount ** torch.arange(config.horizon + 1, device=self.device,
                                                         dtype=torch.float32)
        self.generator = torch.Generator(device=self.device)
        self._buffers: dict = {}
        self._previous_plan: Optional[torch.Tensor] = None
        self._seed: Optional[torch.Tensor] = None
        self._elites: Optional[torch.Tensor] = None
        """iCEM: the best elites of the last plan's last iteration ([k, H, A] normalised)."""
        self._pending_elites: Optional[torch.Tensor] = None
        self._bf16_checked = None
        """The model the bfloat16 check ran with (it runs again for each new model)."""
        self._bf16_ok = False
        self.reset()

    def reset(self) -> None:
        """Forget the warm start (e.g. after an e-stop or a new episode) and reseed."""
        self._previous_plan = None
        self._seed = None
        self._elites = None
        self.generator.manual_seed(self.config.seed)

    def set_models(self, dynamics=None, value: Optional[ValueFn] = None,
                   policy: Optional[PolicyFn] = None) -> None:
        """Hot-swap models between ticks (same sizes); the warm start is kept."""
        if dynamics is not None:
            if (int(dynamics.state_dim), int(dynamics.action_dim)) != (self.state_dim,
                                                                       self.action_dim):
                raise ValueError("new dynamics has different state/action dims")
            if dynamics.num_members != self.dynamics.num_members:
                self._buffers = {}
            self.dynamics = dynamics
        self.value = value if value is not None else self.value
        self._set_policy(policy if policy is not None else self.policy)

    def set_prior(self, value: Optional[ValueFn], policy: Optional[PolicyFn]) -> None:
        """Use this terminal value and policy prior from the next plan on (None: none)."""
        self.value = value
        self._set_policy(policy)

    def _set_policy(self, policy: Optional[PolicyFn]) -> None:
        """Swap the policy prior; the Gaussian samples' scratch is sized by the number of
        policy trajectories, so it is reallocated when that changes."""
        before = self._num_prior()
        self.policy = policy
        if self._num_prior() != before:
            self._buffers.pop("noise", None)

    @property
    def has_warm_start(self) -> bool:
        """True when the next ``plan`` starts from a previous plan or a seed."""
        return self._previous_plan is not None or self._seed is not None

    def seed(self, actions) -> None:
        """Start the next ``plan`` from ``actions: [H, A]`` (physical units; e.g. a reference
        trajectory toward a new goal) instead of the shifted previous plan.

        Values outside the action bounds are clamped; ValueError on a wrong shape or NaN."""
        actions = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=self.device)
        if actions.shape != (self.config.horizon, self.action_dim):
            raise ValueError(f"seed must be [{self.config.horizon}, {self.action_dim}], "
                             f"got {tuple(actions.shape)}")
        if not bool(torch.isfinite(actions).all()):
            raise ValueError("seed contains NaN or inf")
        self._seed = self.scale.to_normalised(actions)
        self._elites = None  # iCEM: the last plan's elites were made for the old warm start

    @property
    def warm_start(self) -> Optional[torch.Tensor]:
        """[H, A] physical mean the next ``plan`` starts from (previous plan shifted), or None."""
        if not self.has_warm_start:
            return None
        with torch.inference_mode():
            mean, _ = self._initial_distribution()
            physical = self.scale.to_physical(mean)
        return physical.clone()

    def plan(self, state) -> PlanResult:
        """Plan from ``state: [S]`` (tensor or array); raise ValueError on bad input."""
        start = time.perf_counter()
        state = self._check_state(state)
        cfg = self.config
        with torch.inference_mode():
            mean, std = self._initial_distribution()
            self._seed = None
            kernel = mean_kernel(self.dynamics, chunk_rows=cfg.rollout_chunk_rows)
            if cfg.method == "ilqr":
                options = [mean]  # the warm start stays an option
            else:
                prior = None
                if self.policy is not None and cfg.num_policy_trajectories > 0:
                    prior = policy_trajectories(self.dynamics, self.policy, state,
                                                cfg.num_policy_trajectories, cfg.horizon,
                                                self.scale, cfg.policy_noise_std,
                                                self.generator)
                sampling_kernel = self._sampling_kernel(state, mean, std, prior, kernel)
                mean, best_sample = self._sample(state, mean, std, prior, sampling_kernel)
                options = [mean, best_sample]
                self._elites = self._pending_elites
        if cfg.method == "ilqr":
            options.insert(0, self._ilqr(state, mean, kernel))
        if cfg.gradient_steps > 0:
            options.append(refine_plan(self.dynamics, state, options[0], self.scale,
                                       self.cost_fn, self.value, cfg.disagreement_weight,
                                       self.discounts, cfg.gradient_steps, cfg.gradient_lr))
        with torch.inference_mode():
            chosen = self._choose(state, torch.stack(options), kernel)
        # clone outside inference mode so callers get ordinary tensors
        result = replace(chosen, action=chosen.action.clone(), actions=chosen.actions.clone(),
                         states=chosen.states.clone(), disagreement=chosen.disagreement.clone())
        result.planning_time = time.perf_counter() - start
        return result

    def _sample(self, state: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                prior: Optional[torch.Tensor], kernel: Optional[MeanStepKernel]):
        """The sampling iterations from ``mean``, ``std`` ``[H, A]`` (normalised) -> the final
        mean (clamped to the bounds) and the best sample of the last iteration."""
        cfg = self.config
        if cfg.method == "icem":
            return self._sample_icem(state, mean, std, prior, kernel)
        candidates, noise = self._buffer("candidates"), self._buffer("noise")
        for _ in range(cfg.num_iterations):
            # sample: policy prior, current mean, Gaussian around the mean (clamped)
            fill_candidates(candidates, mean, std, prior, noise, self.generator)
            # score: propagate through the ensemble, cost, feasibility under state limits
            cost, violation, feasible, rollout = self._score(
                state, candidates, cfg.propagation, self._buffers.get("rollout"),
                with_disagreement=cfg.disagreement_weight > 0.0, kernel=kernel)
            self._buffers["rollout"] = rollout
            rank = ranking_cost(cost, violation, feasible)
            # update: MPPI weights or CEM elites, momentum, std clamp
            if cfg.method == "mppi":
                new_mean, new_std = mppi_update(candidates, rank, cfg.temperature)
            else:
                new_mean, new_std = cem_update(candidates, rank, cfg.num_elites)
            mean = cfg.momentum * mean + (1.0 - cfg.momentum) * new_mean
            std = new_std.clamp_(cfg.min_std, cfg.max_std)
        return mean.clamp(-1.0, 1.0), candidates[torch.argmin(rank)].clone()

    def _sample_icem(self, state: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                     prior: Optional[torch.Tensor], kernel: Optional[MeanStepKernel]):
        """iCEM's iterations (:func:`~mbrl_ros.core.planning.icem.icem_search`) from ``mean``,
        ``std`` and the last plan's elites shifted one step -> the final mean and the best
        sample; the new elites wait in ``_pending_elites`` until ``plan`` keeps them."""
        cfg = self.config
        previous = None if self._elites is None else shift_plans(self._elites)

        def rank(candidates: torch.Tensor) -> torch.Tensor:
            cost, violation, feasible, _ = self._score(
                state, candidates, cfg.propagation, None,
                with_disagreement=cfg.disagreement_weight > 0.0, kernel=kernel)
            return ranking_cost(cost, violation, feasible)

        outcome = icem_search(mean, std, prior, previous, rank, cfg, self.generator)
        self._pending_elites = outcome.elites
        return outcome.mean, outcome.best

    def _ilqr(self, state: torch.Tensor, plan: torch.Tensor,
              kernel: Optional[MeanStepKernel]) -> torch.Tensor:
        """``num_iterations`` iLQR iterations from ``plan [H, A]`` (normalised) on the mean
        model (:func:`~mbrl_ros.core.planning.ilqr.ilqr`; ``kernel`` for its forward passes)
        -> the improved plan."""
        cfg = self.config
        problem = IlqrProblem(self.dynamics, self.scale, self.cost_fn, self.value,
                              cfg.disagreement_weight, self.discounts, kernel)
        return ilqr(problem, state, plan, cfg.num_iterations, cfg.ilqr_regularization,
                    cfg.ilqr_regularization_factor, cfg.ilqr_line_search_steps).actions

    def _sampling_kernel(self, state: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                         prior: Optional[torch.Tensor],
                         kernel: Optional[MeanStepKernel]) -> Optional[MeanStepKernel]:
        """The kernel that scores the samples: bfloat16 when ``bf16_rollouts`` is set and the
        check against float32 passed for this model (run on its first plan), else ``kernel``."""
        if not self.config.bf16_rollouts or kernel is None or (
                self._bf16_checked is self.dynamics and not self._bf16_ok):
            return kernel
        low = mean_kernel(self.dynamics, torch.bfloat16, self.config.rollout_chunk_rows)
        if self._bf16_checked is not self.dynamics:
            self._bf16_checked = self.dynamics
            self._bf16_ok = self._bf16_agrees(state, mean, std, prior, kernel, low)
        return low if self._bf16_ok else kernel

    def _bf16_agrees(self, state, mean, std, prior, kernel, low) -> bool:
        """Plan once with each kernel from the same noise; True if the first actions agree
        within ``BF16_ACTION_TOLERANCE`` of the action range and bfloat16 was faster (it is
        not on hardware without bfloat16 matmuls). The generator is restored, so the real
        plan that follows draws the same noise as without the check."""
        rng = self.generator.get_state()
        first, seconds = [], []
        # one untimed step first: matmul libraries set up each precision's kernels on first use
        warm_up = torch.zeros(self.config.num_samples, 1, self.action_dim, device=self.device)
        for each in (kernel, low):
            propagate(self.dynamics, state, warm_up, self.config.propagation, None, False, each)
        for each in (kernel, low):
            self.generator.set_state(rng)
            start = time.perf_counter()
            plan, _ = self._sample(state, mean.clone(), std.clone(), prior, each)
            first.append(self.scale.to_physical(plan[0]))
            seconds.append(time.perf_counter() - start)
        self.generator.set_state(rng)
        span = self.scale.high - self.scale.low
        error = float(((first[1] - first[0]).abs() / span).max())
        ok = bf16_worth_it(error, seconds[1], seconds[0])
        logger.info("planner: bfloat16 rollouts %s (first action differs from float32 by %.2g "
                    "of the action range, tolerance %.2g; sampling took %.1f ms in bfloat16, "
                    "%.1f ms in float32)", "on" if ok else "off", error, BF16_ACTION_TOLERANCE,
                    1e3 * seconds[1], 1e3 * seconds[0])
        return ok

    # -- helpers -----------------------------------------------------------------------------

    def _check_state(self, state) -> torch.Tensor:
        if isinstance(state, np.ndarray):
            state = torch.from_numpy(np.ascontiguousarray(state))
        state = torch.as_tensor(state).to(device=self.device, dtype=torch.float32).reshape(-1)
        if state.shape[0] != self.state_dim:
            raise ValueError(f"state has {state.shape[0]} values, planner expects "
                             f"{self.state_dim}")
        if not bool(torch.isfinite(state).all()):
            raise ValueError(f"state contains NaN or inf: {state.tolist()}")
        return state

    def _initial_distribution(self):
        """Warm start: the seed if one was given, else the previous plan shifted one step
        (0 = bound midpoint if neither)."""
        mean = torch.zeros(self.config.horizon, self.action_dim, device=self.device)
        if self._seed is not None:
            mean.copy_(self._seed)
        elif self._previous_plan is not None:
            shift_warm_start(self._previous_plan, mean)
        std = torch.full_like(mean, self.config.init_std)
        return mean, std

    def _buffer(self, name: str) -> torch.Tensor:
        """Preallocated scratch tensors (allocated once, inside inference mode)."""
        if name not in self._buffers:
            cfg, num_prior = self.config, self._num_prior()
            shapes = {"candidates": (cfg.num_samples, cfg.horizon, self.action_dim),
                      "noise": (cfg.num_samples - num_prior - 1, cfg.horizon, self.action_dim)}
            self._buffers[name] = torch.empty(shapes[name], device=self.device)
        return self._buffers[name]

    def _num_prior(self) -> int:
        return self.config.num_policy_trajectories if self.policy is not None else 0

    def _score(self, state: torch.Tensor, candidates: torch.Tensor, propagation: str,
               out: Optional[Rollout] = None, with_disagreement: bool = True,
               kernel: Optional[MeanStepKernel] = None):
        """``candidates: [N, H, A]`` normalised -> cost, violation, feasible ``[N]``, rollout."""
        physical = self.scale.to_physical(candidates)
        rollout = propagate(self.dynamics, state, physical, propagation, out, with_disagreement,
                            kernel)
        cost = score(rollout, physical, self.cost_fn, self.value,
                     self.config.disagreement_weight, self.discounts)
        states = track_states(rollout)
        violation = self.limits.violation(states)
        if self.constraint is not None:
            violation = violation + self.constraint(states, physical)
        return cost, violation, self.limits.feasible(violation), rollout

    def _choose(self, state: torch.Tensor, options: torch.Tensor,
                kernel: Optional[MeanStepKernel] = None) -> PlanResult:
        """Evaluate the final options ``[K, H, A]`` with all members; return the best one.

        Feasible plans beat infeasible ones, then lower cost wins; with no feasible option the
        least-violating one is returned with ``feasible=False``.
        """
        cfg = self.config
        propagation = "ensemble" if cfg.propagation == "partition" else cfg.propagation
        cost, violation, feasible, rollout = self._score(state, options, propagation,
                                                         kernel=kernel)
        feasible = feasible & torch.isfinite(cost)
        rank = ranking_cost(cost, violation, feasible)
        index = int(torch.argmin(torch.nan_to_num(rank, nan=float("inf"))))
        plan = torch.nan_to_num(options[index])
        ok = bool(feasible[index])
        if not ok:
            logger.warning("planner: no feasible plan (violation %.4g, cost %.4g); returning "
                           "the least-violating one", float(violation[index]),
                           float(cost[index]))
        self._previous_plan = plan.clone()
        actions = self.scale.to_physical(plan)
        return PlanResult(action=actions[0], actions=actions,
                          states=rollout.states[:, index].mean(dim=0),
                          disagreement=rollout.disagreement[index], cost=float(cost[index]),
                          iterations=cfg.num_iterations, planning_time=0.0, feasible=ok)
