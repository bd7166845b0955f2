#!/usr/bin/env python3
"""Model-based RL on dm_control suite tasks: collect -> train -> plan, with learning curves.

Example::

    python -m bench.dmc --task cartpole-swingup --steps 20000 --seed 0

Loop: ``seed_steps`` of uniform random actions, then the planner acts (plus Gaussian
exploration noise). Every ``model_every`` environment steps the dynamics ensemble is refitted
on the replay buffer (warm start); every ``train_every`` environment steps the learned reward
head and the Q ensemble / policy prior (TD learning on real data mixed with model rollouts,
Dyna style) get their updates. The planner (MPPI over the ensemble) minimises minus the
discounted predicted reward minus the discounted terminal value, with the policy prior among
its samples. Every ``eval_every`` environment steps, ``eval_episodes`` noise-free episodes are
run and ``step,return`` is appended to ``results/bench/dmc/<task>/seed<k>.csv`` (step counts
environment steps, i.e. after action repeat, like the TD-MPC reference curves).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from bench.dmc_agent import Agent, LoopConfig, benchmark_reward_config
from bench.dmc_env import DMCEnv, DMCEnvConfig, default_action_repeat
from bench.recorded import recorded_args
from bench.dmc_gp import GPPlannerAgent
from bench.dmc_latent import LatentAgent
from bench.dmc_mbpo import MBPOAgent
from mbrl_ros.core.ensemble import EnsembleConfig
from mbrl_ros.core.planning import PlannerConfig
from mbrl_ros.core.planning.config import METHODS
from mbrl_ros.core.reward_model import RewardModelConfig
from mbrl_ros.core.types import TransitionBatch
from mbrl_ros.core.value_policy import ValuePolicyConfig

logger = logging.getLogger("bench.dmc")

REPO_ROOT = Path(__file__).resolve().parent.parent
CSV_COLUMNS = ("step", "return")

AGENT_KINDS: Dict[str, Callable[..., Agent]] = {"planner": Agent,
                                                "gp-planner": GPPlannerAgent,
                                                "mbpo": MBPOAgent,
                                                "tdmpc2": LatentAgent}
"""``--agent`` choices: the class that builds each kind (see bench/dmc_agent.py)."""

__all__ = ["AGENT_KINDS", "Agent", "CSV_COLUMNS", "LoopConfig", "benchmark_reward_config",
           "evaluate", "main", "run"]


def evaluate(agent: Optional[Agent], env: DMCEnv, episodes: int,
             rng: np.random.Generator) -> float:
    """Mean return of ``episodes`` noise-free episodes (random actions if ``agent`` is None)."""
    returns = []
    for _ in range(episodes):
        state, done, total = env.reset(), False, 0.0
        if agent is not None:
            agent.reset()
        while not done:
            action = (rng.uniform(env.action_low, env.action_high) if agent is None
                      else agent.act(state))
            state, reward, done = env.step(action)
            total += reward
        returns.append(total)
    return float(np.mean(returns))


def run(task: str, loop: LoopConfig, ensemble_config: EnsembleConfig,
        planner_config: PlannerConfig, value_config: ValuePolicyConfig,
        reward_config: RewardModelConfig, action_repeat: int, seed: int, device: torch.device,
        csv_path: Path, progress: bool = True, episode_length: int = 1000,
        agent_kind: Callable[..., Agent] = Agent) -> List[Tuple[int, float]]:
    """Train on ``task`` for ``loop.total_steps`` environment steps; write and return the curve.

    Raw angles of unbounded hinges (:meth:`DMCEnv.unbounded_angles`) are wrapped in the
    observations and are the ensemble's ``angle_wrap`` dims (``ensemble_config.angle_wrap`` is
    replaced): one rule for every task. ``agent_kind`` builds the agent (default: the planner
    over the dynamics ensemble).

    Returns:
        ``[(env_step, mean_eval_return), ...]``, also written to ``csv_path`` as it grows.
    """
    loop.validate()
    np.random.seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    probe = DMCEnv(DMCEnvConfig(task, action_repeat, episode_length, seed))
    probe.reset()
    wrap = probe.unbounded_angles()  # wrapped in the observations too, so data agree
    logger.info("%s: unbounded hinge angles at state dims %s", task, list(wrap) or "none")
    ensemble_config = dataclasses.replace(ensemble_config, angle_wrap=wrap)
    env = DMCEnv(DMCEnvConfig(task, action_repeat, episode_length, seed, wrap))
    eval_env = DMCEnv(DMCEnvConfig(task, action_repeat, episode_length, seed + 10_000, wrap))
    planner_config = dataclasses.replace(planner_config, seed=seed,
                                         action_low=tuple(env.action_low.tolist()),
                                         action_high=tuple(env.action_high.tolist()))
    agent = agent_kind(env, loop, ensemble_config, planner_config, value_config, reward_config,
                       device, seed)
    scale = loop.reward_scale or 1.0 / action_repeat
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    curve: List[Tuple[int, float]] = []
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerow(CSV_COLUMNS)

    def record(step: int) -> None:
        value = evaluate(agent if agent.trained else None, eval_env, loop.eval_episodes, rng)
        curve.append((step, value))
        with open(csv_path, "a", newline="") as f:
            csv.writer(f).writerow([step, f"{value:.2f}"])
        logger.info("eval at %d env steps: return %.1f", step, value)

    record(0)
    bar = tqdm(total=loop.total_steps, desc=task, unit="env step", disable=not progress,
               dynamic_ncols=True)
    step, since_model, since_train = 0, 0, 0
    state, episode_return = env.reset(), 0.0
    while step < loop.total_steps:
        # collect
        if step < loop.seed_steps or not agent.trained:
            action = rng.uniform(env.action_low, env.action_high)
        else:
            noise = rng.normal(0.0, loop.exploration_std, env.action_dim)
            half = (env.action_high - env.action_low) / 2
            action = np.clip(agent.act(state) + noise * half, env.action_low, env.action_high)
        next_state, reward, done = env.step(action)
        agent.replay.add(TransitionBatch(state[None], action[None].astype(np.float32),
                                         next_state[None], reward=np.array([reward * scale])))
        episode_return += reward
        step += action_repeat
        since_model += action_repeat
        since_train += action_repeat
        bar.update(action_repeat)
        state = next_state
        if done:
            agent.replay.end_episode()
            agent.reset()
            bar.set_postfix(train_return=f"{episode_return:.0f}",
                            last_eval=f"{curve[-1][1]:.0f}")
            state, episode_return = env.reset(), 0.0
        # train
        if step >= loop.seed_steps and (since_model >= loop.model_every or not agent.trained):
            agent.fit_models()
            since_model = 0
        if agent.trained and since_train >= loop.train_every:
            reward_loss, q_loss = agent.train_heads(since_train // action_repeat)
            logger.debug("reward loss %.4g, q loss %.4g", reward_loss, q_loss)
            since_train = 0
        # evaluate
        if step % loop.eval_every < action_repeat and step > 0:
            record(step - step % loop.eval_every)
    bar.close()
    return curve


def run_label(agent: str, method: str) -> str:
    """Folder name of a run's curves below its task: the agent kind and, for planners, the
    planner's update rule (the default agent and method keep the task folder itself)."""
    return agent if agent != "planner" else f"planner-{method}"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="cartpole-swingup", help="<domain>-<task>")
    parser.add_argument("--steps", type=int, default=20000, help="environment steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--action-repeat", type=int, default=0,
                        help="0: TD-MPC's value for the domain (cartpole 8, others 4)")
    parser.add_argument("--episode-length", type=int, default=1000,
                        help="simulator steps per episode (1000 as in the references)")
    parser.add_argument("--seed-steps", type=int, default=LoopConfig.seed_steps)
    parser.add_argument("--eval-every", type=int, default=LoopConfig.eval_every)
    parser.add_argument("--eval-episodes", type=int, default=LoopConfig.eval_episodes)
    parser.add_argument("--model-every", type=int, default=LoopConfig.model_every)
    parser.add_argument("--model-epochs", type=int, default=LoopConfig.model_epochs)
    parser.add_argument("--train-every", type=int, default=LoopConfig.train_every)
    parser.add_argument("--utd", type=float, default=LoopConfig.updates_per_agent_step,
                        help="value / policy updates per agent step")
    parser.add_argument("--exploration-std", type=float, default=LoopConfig.exploration_std)
    parser.add_argument("--members", type=int, default=5, help="dynamics ensemble members")
    parser.add_argument("--hidden", default="200,200,200", help="dynamics hidden sizes")
    parser.add_argument("--value-hidden", default="256,256", help="Q / policy hidden sizes")
    parser.add_argument("--reward-hidden", default="128,128", help="reward model hidden sizes")
    parser.add_argument("--horizon", type=int, default=10, help="planning horizon")
    parser.add_argument("--samples", type=int, default=256, help="planner samples")
    parser.add_argument("--iterations", type=int, default=4, help="planner iterations")
    parser.add_argument("--policy-trajectories", type=int, default=24)
    parser.add_argument("--method", default="mppi", choices=list(METHODS),
                        help="planner update rule")
    parser.add_argument("--agent", default="planner", choices=sorted(AGENT_KINDS),
                        help="agent kind (see bench/dmc_agent.py)")
    parser.add_argument("--propagation", default="partition",
                        choices=["ensemble", "mean", "partition"])
    parser.add_argument("--dyna-horizon", type=int, default=1, help="model-rollout length")
    parser.add_argument("--out-dir", default=str(REPO_ROOT / "results" / "bench" / "dmc"))
    parser.add_argument("--reference-dir",
                        default=str(REPO_ROOT.parent / "shared" / "reference"))
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--no-progress", action="store_true", help="hide the tqdm bar")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _sizes(text: str) -> Tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise SystemExit(f"bad hidden sizes {text!r}: {exc}")
    return sizes


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    torch.set_num_threads(args.threads)
    action_repeat = args.action_repeat or default_action_repeat(args.task)
    loop = LoopConfig(total_steps=args.steps, seed_steps=args.seed_steps,
                      model_every=args.model_every, model_epochs=args.model_epochs,
                      train_every=args.train_every, updates_per_agent_step=args.utd,
                      reward_updates_per_agent_step=args.utd,
                      exploration_std=args.exploration_std, eval_every=args.eval_every,
                      eval_episodes=args.eval_episodes)
    members = max(1, args.members)
    ensemble_config = EnsembleConfig(num_members=members, num_elites=max(1, members - 1),
                                     hidden_sizes=_sizes(args.hidden))
    planner_config = PlannerConfig(method=args.method, horizon=args.horizon,
                                   num_samples=args.samples, num_iterations=args.iterations,
                                   num_policy_trajectories=args.policy_trajectories,
                                   propagation=args.propagation)
    # online learning: the data are the planner's own actions, no pull toward them
    value_config = ValuePolicyConfig(hidden_sizes=_sizes(args.value_hidden),
                                     rollout_horizon=args.dyna_horizon,
                                     behaviour_cloning_weight=0.0)
    reward_config = benchmark_reward_config(hidden_sizes=_sizes(args.reward_hidden))
    try:
        for config in (ensemble_config, planner_config, value_config, reward_config):
            config.validate()
    except ValueError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    csv_path = Path(args.out_dir) / args.task / f"seed{args.seed}.csv"
    if args.agent != "planner" or args.method != "mppi":
        csv_path = Path(args.out_dir) / args.task / run_label(args.agent, args.method) / \
            f"seed{args.seed}.csv"
    start = time.perf_counter()
    curve = run(args.task, loop, ensemble_config, planner_config, value_config, reward_config,
                action_repeat, args.seed, torch.device(args.device), csv_path,
                progress=not args.no_progress, episode_length=args.episode_length,
                agent_kind=AGENT_KINDS[args.agent])
    wall = time.perf_counter() - start
    summary = {"task": args.task, "seed": args.seed, "steps": args.steps,
               "action_repeat": action_repeat, "wall_time_s": round(wall, 1),
               "final_return": curve[-1][1], "best_return": max(r for _, r in curve),
               **recorded_args({"csv": str(csv_path)}), "args": recorded_args(vars(args))}
    with open(csv_path.with_suffix(".json"), "w") as f:
        json.dump(summary, f, indent=2)
    if not args.no_plot:
        from bench.plot_curves import plot_task

        image = plot_task(args.task, Path(args.out_dir), Path(args.reference_dir))
        summary.update(recorded_args({"plot": str(image)}))
    print(json.dumps({k: v for k, v in summary.items() if k != "args"}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    sys.exit(main())
