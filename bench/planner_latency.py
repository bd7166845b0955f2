#!/usr/bin/env python3
"""Planner latency benchmark: p50 / p99 per planning step, GFLOP/s, pytorch-mppi side by side.

Example (defaults: 14-dim state, 7-dim action, 5 members, 512 samples x horizon 16 x 3
iterations, 2 threads)::

    python bench/planner_latency.py --propagation ensemble partition --hidden 200,200 64,64 \
        --out planner_latency.json

Dynamics: the real ``mbrl_ros.core.ensemble.ProbabilisticEnsemble`` (untrained, stacked-weight
MLPs evaluated with baddbmm). pytorch-mppi gets the same network, with the next state taken as
the mean over members, the same number of samples and horizon, and one iteration per command
(its design).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Dict, List, Sequence

import numpy as np
import torch

from mbrl_ros.core.costs import EffortCost, JointPositionCost, TaskCost, VelocityCost
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.planning import Planner, PlannerConfig


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=5, help="ensemble members E")
    parser.add_argument("--samples", type=int, default=512, help="samples per iteration N")
    parser.add_argument("--horizon", type=int, default=16, help="planning horizon H")
    parser.add_argument("--iterations", type=int, default=3, help="iterations per step")
    parser.add_argument("--state-dim", type=int, default=14)
    parser.add_argument("--action-dim", type=int, default=7)
    parser.add_argument("--hidden", nargs="+", default=["200,200"],
                        help="hidden sizes, one comma list per variant (e.g. 200,200 64,64)")
    parser.add_argument("--method", default="mppi", choices=["mppi", "cem"])
    parser.add_argument("--propagation", nargs="+", default=["ensemble", "partition"],
                        choices=["ensemble", "mean", "partition"])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--repeats", type=int, default=50, help="timed planning steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed planning steps first")
    parser.add_argument("--no-pytorch-mppi", action="store_true",
                        help="skip the pytorch-mppi comparison")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    return parser.parse_args(argv)


def mlp_flops_per_row(input_dim: int, hidden: Sequence[int], output_dim: int) -> int:
    """Multiply-add flops (2 per MAC) of one member on one input row."""
    sizes = [input_dim, *hidden, output_dim]
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bmm_peak_gflops(device: torch.device, repeats: int = 20) -> float:
    """Batched-matmul throughput on this machine: [8, 1024, 512] x [8, 512, 512], GFLOP/s."""
    left = torch.randn(8, 1024, 512, device=device)
    right = torch.randn(8, 512, 512, device=device)
    out = torch.empty(8, 1024, 512, device=device)
    for _ in range(3):
        torch.bmm(left, right, out=out)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.bmm(left, right, out=out)
    synchronize(device)
    elapsed = time.perf_counter() - start
    return 2 * 8 * 1024 * 512 * 512 * repeats / elapsed / 1e9


def percentiles(times: List[float]) -> Dict[str, float]:
    values = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "mean_ms": float(values.mean())}


def make_model(args, hidden: Sequence[int], device: torch.device) -> ProbabilisticEnsemble:
    config = EnsembleConfig(num_members=args.members, num_elites=args.members,
                            hidden_sizes=tuple(hidden))
    model = ProbabilisticEnsemble(args.state_dim, args.action_dim, config, device=device)
    return model.eval()


def make_cost(args, device: torch.device) -> TaskCost:
    joints = args.state_dim // 2
    return TaskCost([
        JointPositionCost(list(range(joints)), [0.5] * joints, 1.0, args.state_dim, device),
        VelocityCost(list(range(joints, args.state_dim)), 0.01, args.state_dim, device),
        EffortCost(1e-3, args.action_dim, device)])


def time_ours(args, model, propagation: str, device: torch.device) -> Dict[str, float]:
    config = PlannerConfig(method=args.method, horizon=args.horizon, num_samples=args.samples,
                           num_iterations=args.iterations, num_policy_trajectories=0,
                           propagation=propagation, action_low=(-1.0,), action_high=(1.0,))
    planner = Planner(model, config, cost_fn=make_cost(args, device), device=device)
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(args.warmup + args.repeats):
        state = (0.1 * torch.randn(args.state_dim, generator=generator)).to(device)
        result = planner.plan(state)
        if step >= args.warmup:
            times.append(result.planning_time)
    stats = percentiles(times)
    members_per_sample = 1 if propagation == "partition" else args.members
    rows = (args.iterations * args.samples * members_per_sample + 3 * args.members) \
        * args.horizon
    stats["rows_per_step"] = rows
    return stats


def time_pytorch_mppi(args, model, device: torch.device) -> Dict[str, float]:
    from pytorch_mppi import MPPI

    joints = args.state_dim // 2
    target = torch.full((joints,), 0.5, device=device)

    def dynamics(state, action):
        mean, _ = model.predict(state, action)
        return mean.mean(dim=0)

    def running_cost(state, action):
        return ((state[:, :joints] - target).square().sum(-1)
                + 0.01 * state[:, joints:].square().sum(-1) + 1e-3 * action.square().sum(-1))

    controller = MPPI(dynamics, running_cost, args.state_dim,
                      noise_sigma=torch.eye(args.action_dim, device=device),
                      num_samples=args.samples, horizon=args.horizon, device=device,
                      lambda_=0.5, u_min=-torch.ones(args.action_dim, device=device),
                      u_max=torch.ones(args.action_dim, device=device))
    generator = torch.Generator().manual_seed(0)
    times = []
    with torch.inference_mode():
        for step in range(args.warmup + args.repeats):
            state = (0.1 * torch.randn(args.state_dim, generator=generator)).to(device)
            start = time.perf_counter()
            action = controller.command(state)
            float(action.sum())                   # waits for the device
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
    stats = percentiles(times)
    stats["rows_per_step"] = args.samples * args.members * args.horizon
    return stats


def main(argv: Sequence[str] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}",
          flush=True)
    peak = bmm_peak_gflops(device)
    print(f"batched-matmul peak: {peak:.1f} GFLOP/s", flush=True)
    rows = []
    for hidden_text in args.hidden:
        hidden = [int(h) for h in hidden_text.split(",")]
        model = make_model(args, hidden, device)
        flops_row = mlp_flops_per_row(model.input_dim, hidden, 2 * args.state_dim)
        variants = [("mbrl_ros " + args.method, p) for p in args.propagation]
        if not args.no_pytorch_mppi:
            variants.append(("pytorch_mppi", "mean over members"))
        for name, propagation in variants:
            print(f"timing {name} ({propagation}), hidden {hidden_text}: {args.warmup} warm-up + "
                  f"{args.repeats} steps ...", flush=True)
            if name == "pytorch_mppi":
                stats = time_pytorch_mppi(args, model, device)
                iterations = 1
            else:
                stats = time_ours(args, model, propagation, device)
                iterations = args.iterations
            gflops = stats["rows_per_step"] * flops_row / (stats["mean_ms"] / 1e3) / 1e9
            rows.append({"planner": name, "propagation": propagation, "hidden": hidden_text,
                         "iterations": iterations, "gflops": gflops, **stats})
    baseline = {r["hidden"]: r["p50_ms"] for r in rows if r["planner"] == "pytorch_mppi"}
    print(f"\nE={args.members} N={args.samples} H={args.horizon} S={args.state_dim} "
          f"A={args.action_dim} threads={args.threads} device={device} "
          f"bmm peak={peak:.1f} GFLOP/s")
    header = (f"{'planner':<16}{'propagation':<20}{'hidden':<10}{'iters':>6}{'p50 ms':>9}"
              f"{'p99 ms':>9}{'GFLOP/s':>9}{'%peak':>7}{'vs pmppi':>10}")
    print(header)
    print("-" * len(header))
    for row in rows:
        speedup = baseline.get(row["hidden"], float("nan")) / row["p50_ms"]
        row["speedup_vs_pytorch_mppi_p50"] = speedup
        print(f"{row['planner']:<16}{row['propagation']:<20}{row['hidden']:<10}"
              f"{row['iterations']:>6}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
              f"{row['gflops']:>9.1f}{100 * row['gflops'] / peak:>6.0f}%{speedup:>9.2f}x")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"args": vars(args), "bmm_peak_gflops": peak, "rows": rows,
                       "device": str(device), "threads": args.threads}, handle, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
