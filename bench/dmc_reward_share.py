#!/usr/bin/env python3
"""How often a DMControl task rewards random actions: the share of rewarded agent steps and the
mean episode return under uniform random actions (TD-MPC's action repeat per domain).

A learned reward head (and a planner that plans with it) sees a reward only as often as the
data have one; a task whose reward random exploration almost never reaches is where a
model-based agent without a value function waits longest. Example::

    python -m bench.dmc_reward_share --tasks finger-spin cup-catch reacher-hard --episodes 5
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from bench.dmc_env import DMCEnv, DMCEnvConfig, default_action_repeat
from bench.recorded import recorded_args

REPO_ROOT = Path(__file__).resolve().parent.parent


def reward_share(task: str, episodes: int, seed: int) -> Dict[str, float]:
    """``{"agent_steps", "rewarded_share", "episode_return"}`` of ``episodes`` episodes of
    uniform random actions (seeded) on ``task``."""
    env = DMCEnv(DMCEnvConfig(task=task, action_repeat=default_action_repeat(task), seed=seed))
    rng = np.random.default_rng(seed)
    rewards: List[float] = []
    for _ in range(episodes):
        env.reset()
        done = False
        while not done:
            _, reward, done = env.step(rng.uniform(env.action_low, env.action_high))
            rewards.append(float(reward))
    values = np.asarray(rewards)
    return {"agent_steps": int(len(values)), "rewarded_share": float(np.mean(values > 0.0)),
            "episode_return": float(values.sum() / episodes)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["finger-spin", "cup-catch",
                                                       "reacher-hard"])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO_ROOT / "results" / "bench"
                                             / "dmc_reward_share.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = {task: reward_share(task, args.episodes, args.seed) for task in args.tasks}
    print(f"{'task':28s} {'agent steps':>12s} {'rewarded':>9s} {'episode return':>15s}")
    for task, row in results.items():
        print(f"{task:28s} {row['agent_steps']:12d} {100 * row['rewarded_share']:8.2f}% "
              f"{row['episode_return']:15.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": recorded_args(vars(args)), "results": results},
                              indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
