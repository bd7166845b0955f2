"""iLQR with action bounds (control-limited DDP, Tassa, Mansard & Todorov 2014).

The plan is optimised in normalised action units (the box is ``[-1, 1]``) over the ensemble's
mean dynamics (next state = mean over members of their predicted means, as in
:func:`~mbrl_ros.core.planning.gradient.mean_rollout_cost`). One iteration:

1. **Derivatives** along the nominal trajectory, by autograd, batched over time steps: the
   dynamics' Jacobians ``f_x, f_u`` (:func:`rowwise_jacobian`: every time step and output dim
   in one forward and one backward pass of ``predict``), the gradient and the per-time-step
   Hessian blocks of the cost: the black-box ``cost_fn`` (its full Hessian, one copy of the
   trajectory per coordinate, then the diagonal blocks), the discounted disagreement penalty
   and the terminal value ``-discount^H V(x_H)`` (both per step, so exact per-step blocks).
2. **Backward pass**: Riccati-like recursion; at each step the action update solves a box QP
   by projected Newton (:func:`box_qp`), the feedback gain acts on the free actions only.
   ``Q_uu + mu I`` must be positive definite, else ``mu`` grows and the pass restarts.
3. **Forward pass** on the real (nonlinear) mean model with step sizes 1, 1/2, ... rolled out
   in one batch (closed loop with the feedback gains, actions clamped to the box); the
   lowest-cost one is accepted if it lowers the cost, and ``mu`` shrinks; else ``mu`` grows.

The number of iterations is fixed by the caller (the planner's ``num_iterations``), so the
cost per planning step is bounded.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch

from mbrl_ros.core.ensemble_kernel import MeanStepKernel
from mbrl_ros.core.planning.constraints import ActionScale
from mbrl_ros.core.planning.rollout import CostFn, ValueFn, model_disagreement

LINE_SEARCH_SHRINK = 0.5
"""Ratio of successive step sizes in the forward pass."""
REGULARIZATION_MIN = 1e-6
"""Below this the Levenberg-Marquardt term is set to 0 (Tassa et al. 2012)."""
REGULARIZATION_MAX = 1e10
"""Above this the iterations stop: no descent direction was found."""
BOX_QP_MAX_ITERATIONS = 50
"""Projected-Newton iterations of one box QP (the free set settles in a few)."""
BOX_QP_MIN_GRADIENT = 1e-10
"""A box QP stops when the gradient on its free dims is below this (norm)."""
BOX_QP_ARMIJO = 0.1
"""Armijo fraction of the predicted decrease a box-QP step must achieve."""
BOX_QP_STEP_SHRINK = 0.6
"""Step-size ratio of the box QP's projected line search."""
BOX_QP_MIN_STEP = 1e-20
"""Smallest box-QP step size before it stops."""
SOLVE_DTYPE = torch.float64
"""Precision of the backward pass (small matrices; derivatives come in the model's dtype)."""


@dataclass
class IlqrProblem:
    """What iLQR optimises: the mean dynamics and the planner's total cost."""

    dynamics: object
    """The planner's model (``predict``, ``num_members``, optional ``disagreement``)."""
    scale: ActionScale
    """Normalised <-> physical actions."""
    cost_fn: Optional[CostFn]
    """``(states [N, H+1, S], actions [N, H, A]) -> [N]`` physical units, or None."""
    value_fn: Optional[ValueFn]
    """``value(state [N, S]) -> [N]``; the terminal cost is ``-discount^H value``."""
    disagreement_weight: float
    """Cost per unit disagreement per step (discounted)."""
    discounts: torch.Tensor
    """[H+1] discount ** t."""
    kernel: Optional[MeanStepKernel] = None
    """The model's fused mean step (:func:`~mbrl_ros.core.planning.rollout.mean_kernel`) for
    the forward passes (no gradients needed there); None: ``predict``."""


@dataclass
class IlqrResult:
    """Outcome of :func:`ilqr`."""

    actions: torch.Tensor
    """[H, A] optimised plan, normalised, inside [-1, 1]."""
    costs: List[float] = field(default_factory=list)
    """Cost of the plan under the mean model before the first and after every iteration."""
    iterations: int = 0
    """Iterations run (derivatives + backward + forward pass)."""


@dataclass
class Derivatives:
    """Linear-quadratic model of the problem along a trajectory (normalised actions)."""

    f_x: torch.Tensor
    """[H, S, S] dynamics Jacobian in the state."""
    f_u: torch.Tensor
    """[H, S, A] dynamics Jacobian in the action."""
    l_x: torch.Tensor
    """[H+1, S] cost gradient in the states."""
    l_u: torch.Tensor
    """[H, A] cost gradient in the actions."""
    l_xx: torch.Tensor
    """[H+1, S, S] per-step state Hessian blocks."""
    l_uu: torch.Tensor
    """[H, A, A] per-step action Hessian blocks."""
    l_ux: torch.Tensor
    """[H, A, S] per-step mixed blocks."""

    def finite(self) -> bool:
        """True when every derivative is finite."""
        return all(bool(torch.isfinite(t).all()) for t in
                   (self.f_x, self.f_u, self.l_x, self.l_u, self.l_xx, self.l_uu, self.l_ux))


# -- autograd helpers ---------------------------------------------------------------------

def rowwise_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                     outputs: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Jacobians of a row-wise map, every row at once: ``inputs [T, D]`` -> ``([T, O, D]
    Jacobians, [T, O] values)``.

    ``fn(z [C, T, D]) -> [C, T, O]`` (``O = outputs``) must treat every row ``z[c, t]``
    independently (a model's batched ``predict``, a per-step cost). The inputs are copied once
    per output dim, copy ``o`` keeps output ``o`` only, and one backward pass yields every
    row's Jacobian: the batched model does the vectorising (as ``torch.func.vmap`` would),
    so any model that autograd can differentiate works, whatever ops it uses.
    """
    copies = inputs.detach().unsqueeze(0).repeat(outputs, 1, 1).requires_grad_(True)
    values = _differentiable(fn(copies))
    selected = torch.diagonal(values, dim1=0, dim2=2)  # [T, O]: copy o, output o
    (jacobian,) = torch.autograd.grad(selected.sum(), copies)
    return jacobian.permute(1, 0, 2), values[0].detach()


def _differentiable(values: torch.Tensor) -> torch.Tensor:
    """``values``, or a clear ValueError when autograd cannot differentiate them."""
    if not values.requires_grad:
        raise ValueError("iLQR needs a model, cost and value that autograd can differentiate; "
                         "one of them returned values without gradients (e.g. computed under "
                         "torch.no_grad, or a wrapper's predict that does not pass grad=True "
                         "on to the model)")
    return values


def gradient_of(fn: Callable[[torch.Tensor], torch.Tensor]
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn(z [C, T, D]) -> [C, T]`` (row-wise) -> its row-wise gradient ``[C, T, D]``, kept
    differentiable so :func:`rowwise_jacobian` of it gives the Hessians."""
    def gradient(z: torch.Tensor) -> torch.Tensor:
        (value,) = torch.autograd.grad(_differentiable(fn(z)).sum(), z, create_graph=True)
        return value
    return gradient


def rowwise_hessian(fn: Callable[[torch.Tensor], torch.Tensor],
                    inputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradient ``[T, D]`` and symmetrised Hessian ``[T, D, D]`` of a row-wise scalar map
    ``fn(z [C, T, D]) -> [C, T]`` at ``inputs [T, D]`` (one forward, two backward passes)."""
    with torch.enable_grad():
        hessian, gradient = rowwise_jacobian(gradient_of(fn), inputs, inputs.shape[-1])
    return gradient, 0.5 * (hessian + hessian.transpose(1, 2)).detach()


def _grad_keyword(dynamics) -> dict:
    """``{"grad": True}`` for models whose ``predict`` takes that flag (``DynamicsModel``) or
    passes keywords on (``**kwargs``, a wrapper)."""
    parameters = inspect.signature(dynamics.predict).parameters
    passes_on = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return {"grad": True} if "grad" in parameters or passes_on else {}


# -- the problem's pieces -----------------------------------------------------------------

def member_means(problem: IlqrProblem, states: torch.Tensor, actions: torch.Tensor,
                 keyword: dict, fused: bool = False) -> torch.Tensor:
    """Every member's next-state mean ``[E, R, S]`` for ``states [R, S]`` and normalised
    ``actions [R, A]``; ``fused``: by the problem's kernel when it has one (no gradients)."""
    physical = problem.scale.to_physical(actions)
    if fused and problem.kernel is not None:
        return problem.kernel.step(states, physical)
    means, _ = problem.dynamics.predict(states, physical, **keyword)
    return means


def total_cost(problem: IlqrProblem, states: torch.Tensor, actions: torch.Tensor,
               disagreement: torch.Tensor) -> torch.Tensor:
    """``[N]`` cost of trajectories ``states [N, H+1, S]``, normalised ``actions [N, H, A]``
    with their per-step ``disagreement [N, H]``: the planner's cost under mean propagation."""
    horizon = actions.shape[1]
    total = states.new_zeros(states.shape[0])
    if problem.cost_fn is not None:
        total = total + problem.cost_fn(states, problem.scale.to_physical(actions))
    if problem.value_fn is not None:
        total = total - problem.discounts[horizon] * problem.value_fn(states[:, -1])
    if problem.disagreement_weight > 0.0:
        total = total + problem.disagreement_weight * (disagreement
                                                       @ problem.discounts[:horizon])
    return total


def rollout(problem: IlqrProblem, state: torch.Tensor, nominal_states: torch.Tensor,
            nominal_actions: torch.Tensor, feedforward: torch.Tensor, gains: torch.Tensor,
            step_sizes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-loop forward pass for every step size at once, no gradients (inference mode,
    by the fused kernel when the problem has one; the results are ordinary tensors).

    ``u_t = clamp(nominal_u_t + alpha * k_t + K_t (x_t - nominal_x_t), -1, 1)`` on the mean
    model from ``state [S]``; ``nominal_states [H+1, S]``, ``nominal_actions, feedforward
    [H, A]``, ``gains [H, A, S]``, ``step_sizes [L]`` -> ``(states [L, H+1, S], actions
    [L, H, A], cost [L])``.
    """
    horizon = nominal_actions.shape[0]
    count = step_sizes.shape[0]
    states = [state.expand(count, state.shape[-1])]
    actions, disagreement = [], []
    with torch.inference_mode():
        for step in range(horizon):
            deviation = states[-1] - nominal_states[step]
            action = (nominal_actions[step] + step_sizes[:, None] * feedforward[step]
                      + deviation @ gains[step].T).clamp(-1.0, 1.0)
            means = member_means(problem, states[-1], action, {}, fused=True)
            if problem.disagreement_weight > 0.0:
                disagreement.append(model_disagreement(problem.dynamics, means))
            actions.append(action)
            states.append(means.mean(dim=0))
        trajectory = torch.stack(states, dim=1)
        planned = torch.stack(actions, dim=1)
        spread = (torch.stack(disagreement, dim=1) if disagreement
                  else trajectory.new_zeros(count, horizon))
        cost = total_cost(problem, trajectory, planned, spread)
    return trajectory.clone(), planned.clone(), cost.clone()


def derivatives(problem: IlqrProblem, states: torch.Tensor,
                actions: torch.Tensor) -> Derivatives:
    """Linearise the mean dynamics and quadratise the cost along ``states [H+1, S]``,
    ``actions [H, A]`` (normalised)."""
    horizon, action_dim = actions.shape
    state_dim = states.shape[-1]
    keyword = _grad_keyword(problem.dynamics)
    pairs = torch.cat([states[:-1], actions], dim=-1)  # [H, S + A]

    def mean_step(z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(-1, state_dim + action_dim)
        means = member_means(problem, flat[:, :state_dim], flat[:, state_dim:], keyword)
        return means.mean(dim=0).reshape(*z.shape[:-1], state_dim)

    with torch.enable_grad():
        jacobian, _ = rowwise_jacobian(mean_step, pairs, state_dim)  # [H, S, S + A]
    f_x, f_u = jacobian[..., :state_dim], jacobian[..., state_dim:]

    # the black-box cost: full Hessian of one trajectory (one copy per coordinate)
    num_state_values = (horizon + 1) * state_dim
    flat = torch.cat([states.reshape(-1), actions.reshape(-1)]).unsqueeze(0)  # [1, D]

    def trajectory_cost(z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        rows = z.reshape(-1, z.shape[-1])
        x = rows[:, :num_state_values].reshape(-1, horizon + 1, state_dim)
        u = rows[:, num_state_values:].reshape(-1, horizon, action_dim)
        cost = problem.cost_fn(x, problem.scale.to_physical(u))
        return cost.reshape(lead)

    size = flat.shape[-1]
    if problem.cost_fn is not None:
        gradient, hessian = rowwise_hessian(trajectory_cost, flat)
        gradient, hessian = gradient[0], hessian[0]
    else:
        gradient, hessian = flat.new_zeros(size), flat.new_zeros(size, size)
    l_x = gradient[:num_state_values].reshape(horizon + 1, state_dim).clone()
    l_u = gradient[num_state_values:].reshape(horizon, action_dim).clone()
    blocks_xx = hessian[:num_state_values, :num_state_values].reshape(
        horizon + 1, state_dim, horizon + 1, state_dim)
    blocks_uu = hessian[num_state_values:, num_state_values:].reshape(
        horizon, action_dim, horizon, action_dim)
    blocks_ux = hessian[num_state_values:, :num_state_values].reshape(
        horizon, action_dim, horizon + 1, state_dim)[:, :, :horizon]
    l_xx = torch.diagonal(blocks_xx, dim1=0, dim2=2).permute(2, 0, 1).clone()
    l_uu = torch.diagonal(blocks_uu, dim1=0, dim2=2).permute(2, 0, 1).clone()
    l_ux = torch.diagonal(blocks_ux, dim1=0, dim2=2).permute(2, 0, 1).clone()

    if problem.disagreement_weight > 0.0:  # per step: exact per-step blocks
        weights = problem.disagreement_weight * problem.discounts[:horizon]

        def penalty(z: torch.Tensor) -> torch.Tensor:
            flat_z = z.reshape(-1, state_dim + action_dim)
            means = member_means(problem, flat_z[:, :state_dim], flat_z[:, state_dim:],
                                 keyword)
            spread = model_disagreement(problem.dynamics, means).reshape(z.shape[:-1])
            return spread * weights

        gradient, hessian = rowwise_hessian(penalty, pairs)
        l_x[:horizon] += gradient[:, :state_dim]
        l_u += gradient[:, state_dim:]
        l_xx[:horizon] += hessian[:, :state_dim, :state_dim]
        l_uu += hessian[:, state_dim:, state_dim:]
        l_ux += hessian[:, state_dim:, :state_dim]
    if problem.value_fn is not None:
        terminal_weight = problem.discounts[horizon]

        def terminal(z: torch.Tensor) -> torch.Tensor:
            flat_z = z.reshape(-1, state_dim)
            return -terminal_weight * problem.value_fn(flat_z).reshape(z.shape[:-1])

        gradient, hessian = rowwise_hessian(terminal, states[-1:])
        l_x[-1] += gradient[0]
        l_xx[-1] += hessian[0]
    l_xx, l_uu, l_ux = convexify(l_xx, l_uu, l_ux)
    return Derivatives(f_x=f_x.detach(), f_u=f_u.detach(), l_x=l_x, l_u=l_u, l_xx=l_xx,
                       l_uu=l_uu, l_ux=l_ux)


def project_psd(matrices: torch.Tensor) -> torch.Tensor:
    """Nearest positive semi-definite matrices ``[..., n, n]`` of symmetric ones (negative
    eigenvalues set to 0), in ``SOLVE_DTYPE``."""
    values, vectors = torch.linalg.eigh(matrices.to(SOLVE_DTYPE))
    return (vectors * values.clamp(min=0.0).unsqueeze(-2)) @ vectors.transpose(-1, -2)


def convexify(l_xx: torch.Tensor, l_uu: torch.Tensor, l_ux: torch.Tensor
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project every step's cost Hessian ``[[l_xx, l_xu], [l_ux, l_uu]]`` (and the terminal
    ``l_xx``) onto the positive semi-definite cone. A non-convex cost (an end-effector
    distance through forward kinematics) otherwise gives an indefinite ``V_xx`` and
    ``Q_uu``, and only a large ``mu`` (tiny, gradient-like steps) makes the backward pass
    work; convex costs are left as they are."""
    horizon, state_dim = l_ux.shape[0], l_xx.shape[-1]
    joint = torch.cat([torch.cat([l_xx[:horizon], l_ux.transpose(1, 2)], dim=2),
                       torch.cat([l_ux, l_uu], dim=2)], dim=1)
    joint = project_psd(joint).to(l_xx.dtype)
    terminal = project_psd(l_xx[horizon:]).to(l_xx.dtype)
    return (torch.cat([joint[:, :state_dim, :state_dim], terminal]),
            joint[:, state_dim:, state_dim:], joint[:, state_dim:, :state_dim])


# -- the solver ---------------------------------------------------------------------------

def _masked(matrix: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """``matrix`` restricted to the ``free`` dims, identity on the others (so one solve of
    the same size serves every free set)."""
    keep = free[:, None] & free[None, :]
    return torch.where(keep, matrix, torch.diag((~free).to(matrix.dtype)))


def box_qp(hessian: torch.Tensor, gradient: torch.Tensor, lower: torch.Tensor,
           upper: torch.Tensor, start: torch.Tensor
           ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``min 0.5 x'Hx + g'x`` subject to ``lower <= x <= upper`` by projected Newton (Tassa et
    al. 2014, Algorithm 3), from ``start``. Returns ``(x, free)`` (``free``: dims not held at
    a bound), or None when the Hessian on the free dims is not positive definite."""
    x = torch.maximum(torch.minimum(start, upper), lower)
    value = x @ gradient + 0.5 * x @ hessian @ x
    free = torch.ones_like(x, dtype=torch.bool)
    factor: Optional[torch.Tensor] = None
    for _ in range(BOX_QP_MAX_ITERATIONS):
        grad = gradient + hessian @ x
        clamped = ((x <= lower) & (grad > 0)) | ((x >= upper) & (grad < 0))
        if bool(clamped.all()):
            free = ~clamped
            break
        if factor is None or bool((free != ~clamped).any()):
            factor, info = torch.linalg.cholesky_ex(_masked(hessian, ~clamped))
            if int(info) != 0:
                return None
        free = ~clamped
        if float(grad[free].norm()) < BOX_QP_MIN_GRADIENT:
            break
        clamped_grad = gradient + hessian @ torch.where(clamped, x, torch.zeros_like(x))
        newton = torch.cholesky_solve((clamped_grad * free).unsqueeze(-1), factor)[:, 0]
        search = torch.where(free, -newton - x, torch.zeros_like(x))
        slope = float(search @ grad)
        if slope >= 0.0:
            break
        step, improved = 1.0, False
        while step >= BOX_QP_MIN_STEP:
            candidate = torch.maximum(torch.minimum(x + step * search, upper), lower)
            candidate_value = candidate @ gradient + 0.5 * candidate @ hessian @ candidate
            if float(candidate_value - value) / (step * slope) >= BOX_QP_ARMIJO:
                improved = True
                break
            step *= BOX_QP_STEP_SHRINK
        if not improved:
            break
        x, value = candidate, candidate_value
    return x, free


def backward_pass(d: Derivatives, actions: torch.Tensor, mu: float,
                  previous: Optional[torch.Tensor]
                  ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """Control-limited Riccati recursion -> ``(feedforward [H, A], gains [H, A, S])`` in
    ``SOLVE_DTYPE``, or None if ``Q_uu + mu I`` is not positive definite at some step.

    ``previous [H, A]`` (the last feedforward) warm-starts the box QPs."""
    horizon, action_dim = actions.shape
    cast = {"dtype": SOLVE_DTYPE}
    f_x, f_u = d.f_x.to(**cast), d.f_u.to(**cast)
    l_x, l_u, l_xx = d.l_x.to(**cast), d.l_u.to(**cast), d.l_xx.to(**cast)
    l_uu, l_ux = d.l_uu.to(**cast), d.l_ux.to(**cast)
    nominal = actions.to(**cast)
    identity = torch.eye(action_dim, **cast, device=actions.device)
    value_x, value_xx = l_x[-1], l_xx[-1]
    feedforward = nominal.new_zeros(horizon, action_dim)
    gains = nominal.new_zeros(horizon, action_dim, f_x.shape[-1])
    for t in reversed(range(horizon)):
        q_x = l_x[t] + f_x[t].T @ value_x
        q_u = l_u[t] + f_u[t].T @ value_x
        q_xx = l_xx[t] + f_x[t].T @ value_xx @ f_x[t]
        q_uu = l_uu[t] + f_u[t].T @ value_xx @ f_u[t]
        q_ux = l_ux[t] + f_u[t].T @ value_xx @ f_x[t]
        q_uu = 0.5 * (q_uu + q_uu.T)
        regularised = q_uu + mu * identity
        if int(torch.linalg.cholesky_ex(regularised)[1]) != 0:
            return None
        start = (previous[t].to(**cast) if previous is not None
                 else torch.zeros_like(q_u))
        solved = box_qp(regularised, q_u, -1.0 - nominal[t], 1.0 - nominal[t], start)
        if solved is None:
            return None
        k, free = solved
        factor = torch.linalg.cholesky(_masked(regularised, free))
        gain = -torch.cholesky_solve(q_ux * free[:, None].to(q_ux.dtype), factor)
        gain = gain * free[:, None].to(gain.dtype)
        feedforward[t], gains[t] = k, gain
        value_x = q_x + gain.T @ q_uu @ k + gain.T @ q_u + q_ux.T @ k
        value_xx = q_xx + gain.T @ q_uu @ gain + gain.T @ q_ux + q_ux.T @ gain
        value_xx = 0.5 * (value_xx + value_xx.T)
    return feedforward, gains


class Regularization:
    """Levenberg-Marquardt schedule of Tassa, Erez & Todorov 2012: the factor itself grows
    (shrinks) geometrically while steps keep failing (succeeding)."""

    def __init__(self, initial: float, factor: float) -> None:
        self.mu, self.base, self.delta = initial, factor, 1.0

    def increase(self) -> bool:
        """Grow mu; False once it passes ``REGULARIZATION_MAX`` (give up)."""
        self.delta = max(self.base, self.delta * self.base)
        self.mu = max(REGULARIZATION_MIN, self.mu * self.delta)
        return self.mu <= REGULARIZATION_MAX

    def decrease(self) -> None:
        """Shrink mu (to 0 below ``REGULARIZATION_MIN``)."""
        self.delta = min(1.0 / self.base, self.delta / self.base)
        self.mu = self.mu * self.delta if self.mu * self.delta > REGULARIZATION_MIN else 0.0


def ilqr(problem: IlqrProblem, state: torch.Tensor, plan: torch.Tensor, iterations: int,
         regularization: float, regularization_factor: float,
         line_search_steps: int) -> IlqrResult:
    """Improve ``plan [H, A]`` (normalised) from ``state [S]`` with ``iterations`` iLQR
    iterations; the returned plan's mean-model cost never exceeds the start's.

    Runs outside inference mode (autograd); the model's parameters get no ``.grad``.
    """
    with torch.inference_mode(False):
        state = state.detach().clone()
        actions = plan.detach().clone().clamp(-1.0, 1.0)
        problem = IlqrProblem(problem.dynamics, problem.scale, problem.cost_fn,
                              problem.value_fn, problem.disagreement_weight,
                              problem.discounts.detach().clone(), problem.kernel)
        step_sizes = LINE_SEARCH_SHRINK ** torch.arange(
            line_search_steps, dtype=state.dtype, device=state.device)
        horizon, action_dim = actions.shape
        zero_gains = actions.new_zeros(horizon, action_dim, state.shape[-1])
        states, _, cost = rollout(problem, state, state.new_zeros(horizon + 1, state.shape[-1]),
                                  actions, torch.zeros_like(actions), zero_gains,
                                  step_sizes[:1])
        states, cost = states[0], float(cost[0])
        result = IlqrResult(actions=actions, costs=[cost])
        schedule = Regularization(regularization, regularization_factor)
        model: Optional[Derivatives] = None
        feedforward: Optional[torch.Tensor] = None
        for _ in range(iterations):
            result.iterations += 1
            if model is None:
                model = derivatives(problem, states, actions)
                if not model.finite():
                    break
            solved = backward_pass(model, actions, schedule.mu, feedforward)
            while solved is None and schedule.increase():
                solved = backward_pass(model, actions, schedule.mu, feedforward)
            if solved is None:
                break
            feedforward, gains = solved
            trials, trial_actions, trial_costs = rollout(
                problem, state, states, actions, feedforward.to(actions.dtype),
                gains.to(actions.dtype), step_sizes)
            best = int(torch.argmin(torch.nan_to_num(trial_costs, nan=float("inf"))))
            if float(trial_costs[best]) < cost:
                states, actions = trials[best], trial_actions[best]
                cost, model = float(trial_costs[best]), None
                schedule.decrease()
            elif not schedule.increase():
                break
            result.costs.append(cost)
        result.actions = actions.detach()
        return result
