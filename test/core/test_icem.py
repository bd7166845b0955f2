"""iCEM (method "icem"): colored noise, elite reuse, shrinking population, and closed-loop
control at least as good as CEM's with the same samples."""

import numpy as np
import pytest
import torch

from mbrl_ros.core.costs import EffortCost, JointPositionCost, TaskCost
from mbrl_ros.core.planning import Planner, PlannerConfig
from mbrl_ros.core.planning.icem import icem_search, population_sizes, shift_plans
from mbrl_ros.core.planning.sampling import colored_noise

DT = 0.1
A_DI = np.array([[1.0, DT], [0.0, 1.0]])
B_DI = np.array([[0.0], [DT]])
Q_DI = np.array([1.0, 0.1])
R_DI = np.array([0.1])


class DoubleIntegrator:
    """Two identical members ``x' = A x + B u`` (the planner's dynamics interface)."""

    num_members, state_dim, action_dim = 2, 2, 1
    device = torch.device("cpu")

    def __init__(self):
        self.A = torch.as_tensor(A_DI, dtype=torch.float32)
        self.B = torch.as_tensor(B_DI, dtype=torch.float32)

    def predict(self, state, action):
        mean = state @ self.A.T + action @ self.B.T
        if mean.dim() == 2:
            mean = mean.expand(self.num_members, *mean.shape)
        return mean, torch.zeros_like(mean)


def spectrum_slope(noise):
    """Slope of log power against log frequency, ``noise [K, H, A]`` colored along H; the
    zero and Nyquist frequencies left out."""
    power = torch.fft.rfft(noise.double(), dim=1).abs().square().mean(dim=(0, 2))
    frequencies = torch.fft.rfftfreq(noise.shape[1], dtype=torch.float64)
    keep = slice(1, -1)
    slope, _ = np.polyfit(np.log(frequencies[keep].numpy()), np.log(power[keep].numpy()), 1)
    return slope


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0, 3.0])
def test_colored_noise_spectrum_follows_the_exponent(exponent):
    generator = torch.Generator().manual_seed(0)
    noise = colored_noise((4000, 64, 2), exponent, generator, torch.device("cpu"))
    assert noise.shape == (4000, 64, 2) and noise.dtype == torch.float32
    assert spectrum_slope(noise) == pytest.approx(-exponent, abs=0.1)
    assert float(noise.var()) == pytest.approx(1.0, rel=0.05)  # unit variance per value
    # independent across action dims and samples
    assert abs(float(torch.corrcoef(noise[:, :, :].reshape(-1, 2).T)[0, 1])) < 0.05


def test_colored_noise_is_seeded():
    draw = [colored_noise((3, 10, 2), 2.0, torch.Generator().manual_seed(5),
                          torch.device("cpu")) for _ in range(2)]
    assert torch.equal(draw[0], draw[1])


def test_population_shrinks_but_keeps_room_for_elites():
    config = PlannerConfig(method="icem", num_samples=200, num_iterations=4,
                           population_decay=2.0, elite_fraction=0.1, num_policy_trajectories=0)
    assert population_sizes(config, 0) == [200, 100, 50, 40]  # floor: 2 x 20 elites


def test_elites_are_kept_across_iterations_and_plans():
    config = PlannerConfig(method="icem", horizon=6, num_samples=40, num_iterations=3,
                           elite_fraction=0.25, keep_elites_fraction=0.4,
                           num_policy_trajectories=0)
    target = torch.linspace(-0.5, 0.5, 6).unsqueeze(-1)
    seen = []

    def objective(candidates):
        return (candidates - target).square().sum(dim=(1, 2))

    def rank(candidates):
        seen.append(candidates.clone())
        return objective(candidates)

    previous = torch.full((config.num_kept_elites, 6, 1), 0.25)
    outcome = icem_search(torch.zeros(6, 1), torch.ones(6, 1), None, previous, rank, config,
                          torch.Generator().manual_seed(0))
    kept = config.num_kept_elites
    assert kept == 4 and len(seen) == 3
    # iteration 0 starts with the last plan's (shifted) elites
    assert torch.equal(seen[0][:kept], previous)
    # later iterations start with the best elites of the one before, best first
    for before, after in zip(seen, seen[1:]):
        best = before[torch.argsort(objective(before))[:kept]]
        assert torch.equal(after[:kept], best)
    # the last iteration contains the mean; the outcome keeps the best elites
    assert outcome.elites.shape == (kept, 6, 1)
    assert torch.equal(outcome.best, outcome.elites[0])

    # through the planner: the next plan's first iteration starts with the elites, shifted
    planner = Planner(DoubleIntegrator(), config, cost_fn=TaskCost([EffortCost(1.0, 1)]))
    planner.plan(np.array([1.0, 0.0]))
    elites = planner._elites.clone()
    assert elites.shape == (kept, 6, 1)
    recorded = []
    score = planner._score

    def recording_score(state, candidates, *args, **kwargs):
        recorded.append(candidates.clone())
        return score(state, candidates, *args, **kwargs)

    planner._score = recording_score
    planner.plan(np.array([1.0, 0.0]))
    assert torch.equal(recorded[0][:kept], shift_plans(elites))
    planner.reset()
    assert planner._elites is None


def lqr_problem():
    cost = TaskCost([JointPositionCost([0, 1], [0.0, 0.0], Q_DI.tolist()),
                     EffortCost(R_DI.tolist(), action_dim=1)])
    return DoubleIntegrator(), cost


def closed_loop_cost(method, seed, steps=15):
    """Realised cost of ``steps`` ticks of MPC on the double integrator from (1, -0.5)."""
    dynamics, cost = lqr_problem()
    config = PlannerConfig(method=method, horizon=10, num_samples=32, num_iterations=3,
                           action_low=(-5.0,), action_high=(5.0,), discount=1.0,
                           momentum=0.0, num_policy_trajectories=0, seed=seed)
    planner = Planner(dynamics, config, cost_fn=cost)
    x, total = np.array([1.0, -0.5]), 0.0
    for _ in range(steps):
        u = planner.plan(x).action.numpy().astype(float)
        x = A_DI @ x + B_DI @ u
        total += float(x @ np.diag(Q_DI) @ x + u @ np.diag(R_DI) @ u)
    return total


def test_icem_controls_at_least_as_well_as_cem_with_equal_samples():
    seeds = range(4)
    icem = np.mean([closed_loop_cost("icem", seed) for seed in seeds])
    cem = np.mean([closed_loop_cost("cem", seed) for seed in seeds])
    assert icem <= cem


def test_mppi_and_cem_plans_are_unchanged_by_the_icem_fields():
    dynamics, cost = lqr_problem()
    base = dict(horizon=6, num_samples=64, num_iterations=2, num_policy_trajectories=0,
                action_low=(-5.0,), action_high=(5.0,))
    for method in ("mppi", "cem"):
        plans = [Planner(dynamics, PlannerConfig(method=method, **base, **extra),
                         cost_fn=cost).plan(np.array([1.0, 0.0])).actions
                 for extra in ({}, dict(noise_exponent=0.5, keep_elites_fraction=1.0,
                                        population_decay=3.0))]
        assert torch.equal(plans[0], plans[1])
