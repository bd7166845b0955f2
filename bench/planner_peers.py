#!/usr/bin/env python3
"""Planner benchmark: mbrl_ros vs pytorch_mppi vs mbrl-lib, one interleaved run.

Run (the mbrl-lib venv once, then the benchmark; progress is logged per round)::

    bash bench/peers_venv.sh                 # .build/peers-venv: mbrl==0.2.0, torch==2.13.0
    python -m bench.planner_peers            # -> results/bench/planner_peers.{json,md}

Every contender plans with the same networks and weights (one mbrl_ros
``ProbabilisticEnsemble``, untrained, copied into the others), the same cost, the same
samples x horizon x iterations, and the same sequence of start states. Defaults: 14-dim state,
7-dim action, 5 members, 512 samples x horizon 16 x 3 iterations, 2 torch threads, hidden
200x200 and 128x128.

Contenders (rows per step = network rows evaluated per horizon step and iteration):

* ``mbrl_ros <method> ensemble`` - the public API, ``Planner(model, PlannerConfig(...),
  cost_fn=...).plan(state)``, every sample through every member (N*E rows).
* ``mbrl_ros <method> partition`` - one member per sample (ceil(N/E)*E rows).
* ``pytorch_mppi stacked`` - ``MPPI.command`` over a stacked-weight (baddbmm) forward of all
  members, next state = mean over members (N*E rows). 3 iterations per planning step: the
  first ``command`` shifts the nominal trajectory, the next two refine it
  (``shift_nominal_trajectory=False``; pytorch_mppi >= 0.9 shifts *before* optimising).
* ``pytorch_mppi nn.Linear`` - the same with one ``nn.Sequential`` of ``nn.Linear`` per member.
* ``mbrl-lib CEM TS x5`` - ``mbrl.planning`` ``TrajectoryOptimizerAgent`` (CEMOptimizer) on
  ``ModelEnv.evaluate_action_sequences`` with ``fixed_model`` (TS-inf) propagation, population
  N, 5 particles: each particle through one member, N*5 rows = the rows of "every member".
* ``mbrl-lib CEM TS x1`` - 1 particle: one member per sample; population ceil(N/E)*E (mbrl-lib
  needs a multiple of E), which is exactly the rows of mbrl_ros' partition.

mbrl_ros and pytorch_mppi use only the members' means, so both run the mean head alone
(mbrl_ros' rollout kernel drops the log-variance head; pytorch_mppi's dynamics function is the
benchmark's to write, so it gets the same saving); mbrl-lib samples from the variance and runs
both heads. ``--precision bf16`` adds mbrl_ros rows with ``bf16_rollouts`` (used only where the
planner's start-up check passes; the row's note says which).

mbrl-lib runs in a persistent subprocess of its own venv (``--peers-python``), driven over a
pipe, so the rounds stay interleaved; it loads the same weights and its per-member outputs are
checked against mbrl_ros' (max abs difference <= 1e-5, asserted) before timing. Each distinct
sequence of matmul shapes (per planning call: every iteration, step and layer) is also timed
alone, interleaved, giving the "matmul rate" a contender's GFLOP/s is compared with.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from bench.recorded import recorded_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PEERS_PYTHON = os.path.join(ROOT, ".build", "peers-venv", "bin", "python")
AGREEMENT_TOL = 1e-5
EVERY = "every member"
ONE = "one member per sample"

Shape = Tuple[int, int, int, int, int]
"""(count, batch, rows, in, out): ``count`` matmuls of ``[batch, rows, in] x [batch, in, out]``;
batch 0 means a plain ``addmm`` ``[rows, in] x [in, out]``."""


# ----------------------------------------------------------------------------- arguments
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=5, help="ensemble members E")
    parser.add_argument("--samples", type=int, default=512, help="samples per iteration N")
    parser.add_argument("--horizon", type=int, default=16, help="planning horizon H")
    parser.add_argument("--iterations", type=int, default=3, help="iterations per call")
    parser.add_argument("--state-dim", type=int, default=14)
    parser.add_argument("--action-dim", type=int, default=7)
    parser.add_argument("--hidden", nargs="+", default=["200,200", "128,128"],
                        help="hidden sizes, one comma list per network (e.g. 200,200 128,128)")
    parser.add_argument("--method", default="mppi", choices=["mppi", "cem"],
                        help="mbrl_ros update rule")
    parser.add_argument("--propagation", nargs="+", default=["ensemble", "partition"],
                        choices=["ensemble", "mean", "partition"], help="mbrl_ros variants")
    parser.add_argument("--particles", type=int, nargs="+", default=[5, 1],
                        help="mbrl-lib TS particles per sample, one contender each")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"],
                        choices=["fp32", "bf16"],
                        help="mbrl_ros rollouts: float32, and bfloat16 behind its start-up "
                        "check (the other contenders are float32)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--logvar-bias", type=float, default=-8.0,
                        help="output bias of the log-variance head (all contenders): an "
                             "untrained head predicts var ~1, which would drown mbrl-lib's "
                             "sampled (TS) rollouts in noise; -8 gives std ~0.02")
    parser.add_argument("--rounds", type=int, default=50, help="round-robin rounds")
    parser.add_argument("--calls-per-round", type=int, default=3,
                        help="timed planning calls per contender per round")
    parser.add_argument("--repeats", type=int, default=0,
                        help="timed calls per contender (overrides --rounds if > 0)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per contender")
    parser.add_argument("--seed", type=int, default=0, help="weights, states and planners")
    parser.add_argument("--no-pytorch-mppi", action="store_true")
    parser.add_argument("--no-mbrl-lib", action="store_true")
    parser.add_argument("--no-matmul", action="store_true", help="skip the matmul-only timing")
    parser.add_argument("--peers-python", default=DEFAULT_PEERS_PYTHON,
                        help="python of the mbrl-lib venv (bash bench/peers_venv.sh)")
    parser.add_argument("--out", default="results/bench/planner_peers.json",
                        help="JSON results; the markdown table goes next to it (.md)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats > 0:
        args.rounds = max(1, math.ceil(args.repeats / args.calls_per_round))
    return args


# ------------------------------------------------------------------------ shared helpers
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percentiles(times: Sequence[float]) -> Dict[str, float]:
    values = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "mean_ms": float(values.mean()), "calls": int(values.size)}


def running_cost(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Per-step cost of the next ``state [B, S]`` and ``action [B, A]`` -> ``[B]``: the same
    terms as :func:`make_task_cost` (joint positions to 0.5, velocities, effort)."""
    joints = state.shape[-1] // 2
    return ((state[:, :joints] - 0.5).square().sum(-1)
            + 0.01 * state[:, joints:].square().sum(-1) + 1e-3 * action.square().sum(-1))


def matmul_flops(shapes: Sequence[Shape]) -> int:
    return sum(2 * count * max(batch, 1) * rows * fan_in * fan_out
               for count, batch, rows, fan_in, fan_out in shapes)


def layer_sizes(input_dim: int, hidden: Sequence[int], output_dim: int) -> List[Tuple[int, int]]:
    sizes = [input_dim, *hidden, output_dim]
    return list(zip(sizes[:-1], sizes[1:]))


def rollout_shapes(layers, calls: int, batch: int, rows: int) -> List[Shape]:
    """``calls`` network evaluations (iterations x steps) of ``batch`` x ``rows`` each."""
    return [(calls, batch, rows, fan_in, fan_out) for fan_in, fan_out in layers]


# ------------------------------------------------------------------ matmul-only workloads
class MatmulWorkload:
    """The matmuls of one planning call alone, in the contender's order and shapes."""

    def __init__(self, shapes: Sequence[Shape], device: torch.device, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ops = []
        for count, batch, rows, fan_in, fan_out in shapes:
            lead = (batch,) if batch else ()
            x = torch.randn(*lead, rows, fan_in, generator=generator).to(device)
            w = torch.randn(*lead, fan_in, fan_out, generator=generator).to(device)
            b = torch.randn(*lead, 1 if batch else fan_out, fan_out, generator=generator)
            b = (b if batch else b[0]).to(device)
            out = torch.empty(*lead, rows, fan_out, device=device)
            self.ops.append((count, torch.baddbmm if batch else torch.addmm, b, x, w, out))
        # the ops interleave layer by layer within each network evaluation
        self.evaluations = max(count for count, *_ in shapes)
        self.flops = matmul_flops(shapes)
        self.device = device

    def __call__(self, _state=None):
        for evaluation in range(self.evaluations):
            for count, op, b, x, w, out in self.ops:
                if evaluation < count:
                    op(b, x, w, out=out)
        synchronize(self.device)
        return None


# -------------------------------------------------------------------------- contenders
@dataclass
class Contender:
    name: str
    kind: str
    hidden: str
    rows_per_step: int
    shapes: List[Shape]
    call: Callable[[np.ndarray], Optional[np.ndarray]]
    """plan from ``state [S]``; returns the plan ``[H, A]`` (or None for matmul-only)."""
    times: List[float] = field(default_factory=list)
    plans: List[Tuple[int, np.ndarray]] = field(default_factory=list)
    note: str = ""
    matmul_key: str = ""

    @property
    def flops(self) -> int:
        return matmul_flops(self.shapes)


def make_model(args, hidden: Sequence[int], device: torch.device):
    from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble

    config = EnsembleConfig(num_members=args.members, num_elites=args.members,
                            hidden_sizes=tuple(hidden))
    model = ProbabilisticEnsemble(args.state_dim, args.action_dim, config, device=device,
                                  seed=args.seed)
    with torch.no_grad():
        model.net.biases[-1][..., args.state_dim:] = args.logvar_bias
    return model.eval()


def make_task_cost(args, device: torch.device):
    from mbrl_ros.core.costs import EffortCost, JointPositionCost, TaskCost, VelocityCost

    joints = args.state_dim // 2
    return TaskCost([
        JointPositionCost(list(range(joints)), [0.5] * joints, 1.0, args.state_dim, device),
        VelocityCost(list(range(joints, args.state_dim)), 0.01, args.state_dim, device),
        EffortCost(1e-3, args.action_dim, device)])


def network_tensors(model) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Stacked weights ``[E, in, out]`` and biases ``[E, 1, out]`` of the ensemble; checks that
    the inputs are the plain ``[state, action]`` (identity normalisers, no angle encoding)."""
    identity = all(bool((n.mean == 0).all() and (n.std == 1).all())
                   for n in (model.input_normalizer, model.target_normalizer))
    if not identity or len(model.angle_index) or len(model.relative_index):
        raise RuntimeError("the peers' networks assume an untrained, plain ensemble")
    return ([w.detach() for w in model.net.weights], [b.detach() for b in model.net.biases])


def stacked_members(weights, biases, state_dim: int):
    """All members in one stacked-weight forward: ``(state [B,S], action [B,A]) -> [E,B,S]``."""
    last = len(weights) - 1

    def members(state, action):
        x = torch.cat([state, action], -1).expand(weights[0].shape[0], -1, -1)
        for i, (w, b) in enumerate(zip(weights, biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = torch.nn.functional.silu(x)
        return state + x[..., :state_dim]
    return members


def linear_members(weights, biases, state_dim: int):
    """One ``nn.Sequential`` of ``nn.Linear`` per member (same weights)."""
    nets = []
    for member in range(weights[0].shape[0]):
        layers: List[torch.nn.Module] = []
        for i, (w, b) in enumerate(zip(weights, biases)):
            linear = torch.nn.Linear(w.shape[1], w.shape[2], device=w.device)
            with torch.no_grad():
                linear.weight.copy_(w[member].T)
                linear.bias.copy_(b[member, 0])
            layers.append(linear)
            if i < len(weights) - 1:
                layers.append(torch.nn.SiLU())
        nets.append(torch.nn.Sequential(*layers).eval().requires_grad_(False))

    def members(state, action):
        x = torch.cat([state, action], -1)
        return state + torch.stack([net(x)[..., :state_dim] for net in nets])
    return members


def mbrl_ros_contender(args, model, propagation: str, hidden: str, layers,
                       device: torch.device, bf16: bool = False) -> Contender:
    from mbrl_ros.core.planning import Planner, PlannerConfig

    config = PlannerConfig(method=args.method, horizon=args.horizon, num_samples=args.samples,
                           num_iterations=args.iterations, num_policy_trajectories=0,
                           propagation=propagation, action_low=(-1.0,), action_high=(1.0,),
                           seed=args.seed, bf16_rollouts=bf16)
    planner = Planner(model, config, cost_fn=make_task_cost(args, device), device=device)
    note = "Planner.plan (public API)"
    if bf16:  # the first plan runs the planner's bfloat16 check
        planner.plan(torch.zeros(args.state_dim, device=device))
        note += (", bfloat16 rollouts (start-up check passed)" if planner._bf16_ok
                 else ", bfloat16 refused by the start-up check: float32 rollouts")
    members, samples, steps = args.members, args.samples, args.iterations * args.horizon
    rows = -(-samples // members) if propagation == "partition" else samples
    # the returned plan is chosen among 2 options (mean, best sample), scored by every member
    shapes = rollout_shapes(layers, steps, members, rows)
    shapes += rollout_shapes(layers, args.horizon, members, 2)

    def call(state):
        result = planner.plan(torch.as_tensor(state, device=device))
        return result.actions.cpu().numpy()

    kind = ONE if propagation == "partition" else EVERY
    name = f"mbrl_ros {args.method} {propagation}" + (" bf16" if bf16 else "")
    return Contender(name, kind, hidden, rows * members, shapes, call, note=note)


def pytorch_mppi_contender(args, members_fn, variant: str, hidden: str, layers,
                           device: torch.device) -> Contender:
    from pytorch_mppi import MPPI

    def dynamics(state, action):
        return members_fn(state, action).mean(dim=0)

    torch.manual_seed(args.seed)
    ones = torch.ones(args.action_dim, device=device)
    controller = MPPI(dynamics, running_cost, args.state_dim,
                      noise_sigma=torch.eye(args.action_dim, device=device),
                      num_samples=args.samples, horizon=args.horizon, device=device,
                      lambda_=0.5, u_min=-ones, u_max=ones)
    steps = args.iterations * args.horizon
    if variant == "stacked":
        shapes = rollout_shapes(layers, steps, args.members, args.samples)
    else:
        shapes = rollout_shapes(layers, steps * args.members, 0, args.samples)

    def call(state):
        state = torch.as_tensor(state, device=device)
        with torch.inference_mode():
            for iteration in range(args.iterations):
                # pytorch_mppi shifts U at the start of command(): shift once per planning step
                action = controller.command(state, shift_nominal_trajectory=iteration == 0)
            plan = controller.U.clamp(-1.0, 1.0)
            assert torch.equal(action, controller.U[0])
            return plan.cpu().numpy()

    return Contender(f"pytorch_mppi {variant}", EVERY, hidden, args.samples * args.members,
                     shapes, call, note=f"{args.iterations} x command (shift on the first)")


# ------------------------------------------------------------------- mbrl-lib (subprocess)
class PeerProcess:
    """The mbrl-lib venv's python running ``bench.planner_peers --worker``; JSON lines."""

    def __init__(self, python: str, threads: int) -> None:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PYTHONPATH"] = ROOT
        self.proc = subprocess.Popen([python, "-m", "bench.planner_peers", "--worker",
                                      "--threads", str(threads)], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def request(self, **message) -> dict:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"mbrl-lib worker died (exit {self.proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"mbrl-lib worker: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.request(cmd="quit")
            except (RuntimeError, OSError, ValueError):
                pass
            self.proc.wait(timeout=30)


def mbrl_lib_contender(args, peer: PeerProcess, key: str, weights_path: str, particles: int,
                       hidden: str, layers, device: torch.device) -> Contender:
    members = args.members
    population = args.samples
    while population * particles % members:      # mbrl-lib: rows must split evenly
        population += 1
    peer.request(cmd="setup", key=key, weights=weights_path, particles=particles,
                 population=population, iterations=args.iterations, horizon=args.horizon,
                 state_dim=args.state_dim, action_dim=args.action_dim, members=members,
                 device=str(device), seed=args.seed)
    rows = population * particles
    shapes = rollout_shapes(layers, args.iterations * args.horizon, members, rows // members)

    def call(state):
        reply = peer.request(cmd="plan", key=key, state=np.asarray(state).tolist())
        call.last_time = reply["time"]                      # timed inside the worker
        return np.asarray(reply["plan"], dtype=np.float32)

    kind = EVERY if particles == members else ONE
    note = (f"TS, population {population}, {particles} particle(s): {rows} rows/step"
            + ("" if population == args.samples else f" (population {population}: a "
               f"multiple of {members} rows, as mbrl-lib needs)"))
    return Contender(f"mbrl-lib CEM TS x{particles}", kind, hidden, rows, shapes, call, note=note)


def worker_main(args) -> int:
    """The mbrl-lib side: runs in the peers venv; requests on stdin, replies on stdout."""
    protocol, sys.stdout = sys.stdout, sys.stderr      # keep library prints off the pipe
    torch.set_num_threads(args.threads)
    import mbrl
    import mbrl.models
    import mbrl.planning
    import omegaconf

    agents: Dict[str, dict] = {}

    class _Space:
        def __init__(self, low, high):
            self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
            self.shape = self.low.shape

    def setup(msg):
        device = torch.device(msg["device"])
        tensors = np.load(msg["weights"])
        n_layers = sum(1 for k in tensors.files if k.startswith("w"))
        weights = [torch.from_numpy(tensors[f"w{i}"]) for i in range(n_layers)]
        biases = [torch.from_numpy(tensors[f"b{i}"]) for i in range(n_layers)]
        hidden = [w.shape[2] for w in weights[:-1]]
        if len(set(hidden)) != 1:
            raise ValueError(f"mbrl-lib GaussianMLP needs equal hidden sizes, got {hidden}")
        state_dim = msg["state_dim"]
        net = mbrl.models.GaussianMLP(
            weights[0].shape[1], state_dim, device, num_layers=len(hidden),
            ensemble_size=msg["members"], hid_size=hidden[0],
            propagation_method="fixed_model", activation_fn_cfg={"_target_": "torch.nn.SiLU"})
        linears = [layer[0] for layer in net.hidden_layers] + [net.mean_and_logvar]
        with torch.no_grad():
            for linear, w, b in zip(linears, weights, biases):
                linear.weight.copy_(w)
                linear.bias.copy_(b)
            net.min_logvar.copy_(torch.from_numpy(tensors["min_logvar"]))
            net.max_logvar.copy_(torch.from_numpy(tensors["max_logvar"]))
        net.eval()
        dynamics = mbrl.models.OneDTransitionRewardModel(net, target_is_delta=True,
                                                         normalize=False, learned_rewards=False)
        torch.manual_seed(msg["seed"])
        generator = torch.Generator(device=device).manual_seed(msg["seed"])
        action_dim = msg["action_dim"]
        env = type("Env", (), {})()
        env.observation_space = _Space(-np.ones(state_dim), np.ones(state_dim))
        env.action_space = _Space(-np.ones(action_dim), np.ones(action_dim))

        def reward_fn(actions, next_obs):
            return -running_cost(next_obs, actions).unsqueeze(-1)

        def termination_fn(actions, next_obs):
            return torch.zeros(next_obs.shape[0], 1, dtype=torch.bool, device=next_obs.device)

        model_env = mbrl.models.ModelEnv(env, dynamics, termination_fn, reward_fn,
                                         generator=generator)
        agent_cfg = omegaconf.OmegaConf.create({
            "_target_": "mbrl.planning.TrajectoryOptimizerAgent",
            "_recursive_": False,          # hydra >= 1.1; mbrl 0.2.0 was written for 1.0
            "action_lb": [-1.0] * action_dim, "action_ub": [1.0] * action_dim,
            "planning_horizon": msg["horizon"], "replan_freq": 1, "verbose": False,
            "keep_last_solution": True,
            "optimizer_cfg": {
                "_target_": "mbrl.planning.CEMOptimizer", "num_iterations": msg["iterations"],
                "elite_ratio": 0.1, "population_size": msg["population"], "alpha": 0.1,
                "lower_bound": "???", "upper_bound": "???", "device": str(device),
                "return_mean_elites": False, "clipped_normal": False}})
        agent = mbrl.planning.create_trajectory_optim_agent_for_model(
            model_env, agent_cfg, num_particles=msg["particles"])
        agents[msg["key"]] = {"agent": agent, "net": net, "device": device}
        return {"ok": True, "mbrl": mbrl.__version__, "torch": torch.__version__}

    def check(msg):
        entry = agents[msg["key"]]
        state = torch.tensor(msg["state"], dtype=torch.float32, device=entry["device"])
        action = torch.tensor(msg["action"], dtype=torch.float32, device=entry["device"])
        with torch.no_grad():
            mean, logvar = entry["net"](torch.cat([state, action], -1), use_propagation=False)
        return {"next_state": (state + mean).cpu().tolist(), "logvar": logvar.cpu().tolist()}

    def plan(msg):
        entry = agents[msg["key"]]
        agent, device = entry["agent"], entry["device"]
        obs = np.asarray(msg["state"], dtype=np.float32)
        start = time.perf_counter()
        action = agent.act(obs)
        synchronize(device)
        elapsed = time.perf_counter() - start
        # the full plan: act() keeps best.roll(-1) (last entry reset) as the next warm start
        rest = agent.optimizer.previous_solution[:-1].cpu().numpy()
        return {"time": elapsed, "plan": np.concatenate([action[None], rest]).tolist()}

    def hello(_msg):
        return {"ok": True, "mbrl": mbrl.__version__, "torch": torch.__version__,
                "python": platform.python_version()}

    handlers = {"hello": hello, "setup": setup, "check": check, "plan": plan}
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            protocol.write(json.dumps({"ok": True}) + "\n")
            protocol.flush()
            break
        try:
            reply = handlers[msg["cmd"]](msg)
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            import traceback
            traceback.print_exc()
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()
    return 0


# ---------------------------------------------------------------------- checks, quality
def check_agreement(model, members_fns: Dict[str, Callable], peer: Optional[PeerProcess],
                    peer_key: Optional[str], args, device: torch.device) -> Dict[str, float]:
    """Max abs difference of every contender's per-member next states from mbrl_ros'."""
    generator = torch.Generator().manual_seed(args.seed + 1)
    state = torch.randn(64, args.state_dim, generator=generator).to(device)
    action = (2 * torch.rand(64, args.action_dim, generator=generator) - 1).to(device)
    with torch.no_grad():
        reference, _ = model.predict(state, action)
        out = {}
        for name, fn in members_fns.items():
            out[name] = float((fn(state, action) - reference).abs().max())
        if peer is not None:
            reply = peer.request(cmd="check", key=peer_key, state=state.cpu().tolist(),
                                 action=action.cpu().tolist())
            theirs = torch.tensor(reply["next_state"], device=device)
            out["mbrl-lib"] = float((theirs - reference).abs().max())
            _, ours_logvar = model.forward_normalized(
                model.input_normalizer.normalize(torch.cat([state, action], -1))
                .expand(args.members, -1, -1))
            out["mbrl-lib logvar"] = float(
                (torch.tensor(reply["logvar"], device=device) - ours_logvar).abs().max())
    for name, diff in out.items():
        if not diff <= AGREEMENT_TOL:
            raise AssertionError(f"{name} disagrees with mbrl_ros' ensemble: max abs "
                                 f"difference {diff:.3g} > {AGREEMENT_TOL}")
    return out


def plan_costs(model, states: torch.Tensor, plans: torch.Tensor) -> torch.Tensor:
    """Cost of ``plans [M, H, A]`` from ``states [M, S]`` under every member (mean over them),
    with the shared running cost: one common yardstick for every contender's plan."""
    with torch.no_grad():
        current = states
        total = torch.zeros(model.num_members, states.shape[0], device=states.device)
        for step in range(plans.shape[1]):
            action = plans[:, step]
            current, _ = model.predict(current, action)
            total += running_cost(current.reshape(-1, states.shape[-1]),
                                  action.repeat(model.num_members, 1)).view_as(total)
        return total.mean(dim=0)


# ------------------------------------------------------------------------------- driver
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build(args, device: torch.device, peer: Optional[PeerProcess], peer_info: dict,
          tmpdir: str):
    """Contenders and matmul workloads per network size; agreement checks."""
    contenders: List[Contender] = []
    workloads: Dict[str, Contender] = {}
    checks: Dict[str, Dict[str, float]] = {}
    models = {}
    for hidden_text in args.hidden:
        hidden = [int(h) for h in hidden_text.split(",")]
        model = make_model(args, hidden, device)
        models[hidden_text] = model
        layers = layer_sizes(model.input_dim, hidden, 2 * args.state_dim)
        weights, biases = network_tensors(model)
        # planners that use only the means get the mean head alone (mbrl_ros' rollout kernel
        # drops the log-variance head; pytorch_mppi's dynamics function is ours to write, so
        # it gets the same saving); mbrl-lib samples from the variance, so it needs both heads
        mean_layers = layer_sizes(model.input_dim, hidden, args.state_dim)
        mean_weights = [*weights[:-1], weights[-1][..., :args.state_dim].contiguous()]
        mean_biases = [*biases[:-1], biases[-1][..., :args.state_dim].contiguous()]
        fns = {"pytorch_mppi stacked": stacked_members(mean_weights, mean_biases,
                                                       args.state_dim),
               "pytorch_mppi nn.Linear": linear_members(mean_weights, mean_biases,
                                                        args.state_dim)}
        group = [mbrl_ros_contender(args, model, p, hidden_text, mean_layers, device,
                                    precision == "bf16")
                 for precision in args.precision for p in args.propagation]
        if not args.no_pytorch_mppi:
            group += [pytorch_mppi_contender(args, fns[f"pytorch_mppi {v}"], v, hidden_text,
                                             mean_layers, device)
                      for v in ("stacked", "nn.Linear")]
        peer_key = None
        if peer is not None and peer_info.get("used"):
            path = os.path.join(tmpdir, f"weights_{hidden_text.replace(',', 'x')}.npz")
            np.savez(path, **{f"w{i}": w.cpu().numpy() for i, w in enumerate(weights)},
                     **{f"b{i}": b.cpu().numpy() for i, b in enumerate(biases)},
                     min_logvar=_shared_bound(model.min_logvar),
                     max_logvar=_shared_bound(model.max_logvar))
            try:
                peers = [mbrl_lib_contender(args, peer, f"{hidden_text}/x{particles}", path,
                                            particles, hidden_text, layers, device)
                         for particles in args.particles]
                group += peers
                peer_key = f"{hidden_text}/x{args.particles[0]}"
            except RuntimeError as exc:             # keep the rest of the benchmark
                peer_info.update(used=False, reason=f"mbrl-lib set-up failed: {exc}")
                log(f"mbrl-lib skipped: {peer_info['reason']}")
                contenders = [c for c in contenders if not c.name.startswith("mbrl-lib")]
        checks[hidden_text] = check_agreement(model, fns, peer if peer_key else None, peer_key,
                                              args, device)
        log(f"hidden {hidden_text}: outputs agree with mbrl_ros (max abs diff "
            + ", ".join(f"{k} {v:.1e}" for k, v in checks[hidden_text].items()) + ")")
        if not args.no_matmul:
            for contender in group:
                key = f"{hidden_text} {sorted(contender.shapes)}"
                if key not in workloads:
                    label = f"matmul-only #{len(workloads) + 1} ({contender.name} shapes)"
                    workload = MatmulWorkload(contender.shapes, device, args.seed)
                    workloads[key] = Contender(label, "matmul", hidden_text, 0,
                                               contender.shapes, workload)
                contender.matmul_key = key
        contenders += group
    return contenders, workloads, checks, models


def _shared_bound(bound: torch.Tensor) -> np.ndarray:
    """mbrl-lib's log-variance bounds are shared by the members: ``[1, S]``."""
    if not bool((bound == bound[:1]).all()):
        raise RuntimeError("mbrl-lib shares the logvar bounds across members; these differ")
    return bound[0].detach().cpu().numpy()


def run_rounds(args, timed: List[Contender], states: np.ndarray, device: torch.device) -> None:
    calls = args.calls_per_round
    log(f"warm-up: {args.warmup} call(s) per contender")
    for contender in timed:
        begin = time.perf_counter()
        for index in range(args.warmup):
            contender.call(states[index % len(states)])
        log(f"  {contender.hidden} {contender.name}: {time.perf_counter() - begin:.1f} s")
    start = time.perf_counter()
    for round_index in range(args.rounds):
        # rotate the order each round so no contender always follows the same one
        shift = round_index % len(timed)
        for contender in timed[shift:] + timed[:shift]:
            for k in range(calls):
                index = round_index * calls + k
                state = states[index]
                begin = time.perf_counter()
                plan = contender.call(state)
                synchronize(device)
                elapsed = time.perf_counter() - begin
                elapsed = getattr(contender.call, "last_time", elapsed)
                contender.times.append(elapsed)
                if plan is not None:
                    contender.plans.append((index, plan))
        done = time.perf_counter() - start
        eta = done / (round_index + 1) * (args.rounds - round_index - 1)
        log(f"round {round_index + 1}/{args.rounds} done, {done:.0f} s elapsed, "
            f"~{eta:.0f} s left")


def summarise(args, contenders, workloads, models, states, device) -> List[dict]:
    rows = []
    for contender in contenders:
        stats = percentiles(contender.times)
        gflops = contender.flops / (stats["p50_ms"] / 1e3) / 1e9
        row = {"contender": contender.name, "kind": contender.kind, "hidden": contender.hidden,
               "rows_per_step": contender.rows_per_step, "flops_per_call": contender.flops,
               "gflops": gflops, "note": contender.note, **stats}
        workload = workloads.get(contender.matmul_key)
        if workload is not None:
            mm = percentiles(workload.times)
            row["matmul_p50_ms"] = mm["p50_ms"]
            row["matmul_gflops"] = workload.flops / (mm["p50_ms"] / 1e3) / 1e9
            row["pct_matmul_rate"] = 100.0 * gflops / row["matmul_gflops"]
        model = models[contender.hidden]
        index = torch.tensor([i for i, _ in contender.plans])
        plans = torch.tensor(np.stack([p for _, p in contender.plans]), device=device)
        start = torch.tensor(states, device=device)[index]
        cost = plan_costs(model, start, plans)
        zero = plan_costs(model, start, torch.zeros_like(plans))
        row["plan_cost_median"] = float(cost.median())
        row["zero_plan_cost_median"] = float(zero.median())
        row["plan_beats_zero_plan"] = float((cost < zero).float().mean())
        rows.append(row)
    for row in rows:
        same = [r for r in rows if r["hidden"] == row["hidden"]]
        mppi = [r["p50_ms"] for r in same if r["contender"].startswith("pytorch_mppi")]
        row["speedup_vs_best_pytorch_mppi"] = min(mppi) / row["p50_ms"] if mppi else None
        peer = [r["p50_ms"] for r in same if r["contender"].startswith("mbrl-lib")
                and r["rows_per_step"] == row["rows_per_step"]]
        row["speedup_vs_mbrl_lib_same_rows"] = peer[0] / row["p50_ms"] if peer else None
    return rows


def _fmt(value, spec: str, dash: str = "–") -> str:
    return dash if value is None else format(value, spec)


def table(rows: List[dict], markdown: bool) -> str:
    head = ["hidden", "work", "contender", "rows/step", "p50 ms", "p99 ms", "GFLOP/s",
            "% matmul", "vs best pytorch_mppi", "vs mbrl-lib", "plan cost (zero plan)"]
    lines = []
    for hidden in dict.fromkeys(r["hidden"] for r in rows):
        for kind in (EVERY, ONE):
            group = [r for r in rows if r["hidden"] == hidden and r["kind"] == kind]
            for r in group:
                lines.append([hidden, kind, r["contender"], str(r["rows_per_step"]),
                              f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['gflops']:.1f}",
                              _fmt(r.get("pct_matmul_rate"), ".0f") + "%",
                              _fmt(r["speedup_vs_best_pytorch_mppi"], ".2f") + "x",
                              _fmt(r["speedup_vs_mbrl_lib_same_rows"], ".2f") + "x",
                              f"{r['plan_cost_median']:.2f} ({r['zero_plan_cost_median']:.2f})"])
            if group and kind == ONE and any(r["contender"].startswith("pytorch_mppi")
                                             for r in rows if r["hidden"] == hidden):
                lines.append([hidden, kind, "pytorch_mppi (cannot)"] + ["–"] * 8)
    lines = [[c.replace("–%", "–").replace("–x", "–") for c in line] for line in lines]
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(x) for x in column) for column in zip(head, *lines)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*head), "-" * (sum(widths) + 2 * len(widths))]
                     + [fmt.format(*line) for line in lines])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker_main(args)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    import pytorch_mppi  # noqa: F401 - fail early, before the long part

    log(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"CPU {cpu_model()}")
    peer, peer_info = None, {"used": False}
    if not args.no_mbrl_lib:
        if os.path.exists(args.peers_python):
            peer = PeerProcess(args.peers_python, args.threads)
            try:
                hello = peer.request(cmd="hello")
                peer_info = {"used": True, "mbrl": hello["mbrl"],
                             "python": recorded_args({"python": args.peers_python})["python"],
                             "torch": hello["torch"], "python_version": hello["python"]}
                log(f"mbrl-lib {hello['mbrl']} (torch {hello['torch']}) in {args.peers_python}")
            except (RuntimeError, OSError, ValueError) as exc:
                peer.close()
                peer, peer_info["reason"] = None, f"the mbrl-lib worker failed to start: {exc}"
        else:
            peer_info["reason"] = (f"{args.peers_python} not found; create it with "
                                   "`bash bench/peers_venv.sh`")
        if peer is None:
            log(f"mbrl-lib skipped: {peer_info['reason']}")
    else:
        peer_info["reason"] = "--no-mbrl-lib"
    try:
        with tempfile.TemporaryDirectory() as tmpdir:     # the weights handed to mbrl-lib
            built = build(args, device, peer, peer_info, tmpdir)
        contenders, workloads, checks, models = built
        generator = np.random.default_rng(args.seed)
        count = args.rounds * args.calls_per_round + args.warmup
        states = (0.1 * generator.standard_normal((count, args.state_dim))).astype(np.float32)
        timed = contenders + list(workloads.values())
        log(f"{len(contenders)} contenders + {len(workloads)} matmul-only workloads, "
            f"{args.rounds} rounds x {args.calls_per_round} calls each")
        run_rounds(args, timed, states, device)
        rows = summarise(args, contenders, workloads, models, states, device)
    finally:
        if peer is not None:
            peer.close()
    meta = {"args": recorded_args({k: v for k, v in vars(args).items() if k != "worker"}),
            "torch": torch.__version__, "device": str(device), "cpu": cpu_model(),
            "threads": torch.get_num_threads(), "seed": args.seed,
            "timed_calls_per_contender": args.rounds * args.calls_per_round,
            "pytorch_mppi": importlib.metadata.version("pytorch_mppi"), "mbrl_lib": peer_info,
            "python": platform.python_version(), "agreement_max_abs_diff": checks,
            "matmul_workloads": {w.name: {"hidden": w.hidden, "shapes": w.shapes,
                                          "flops": w.flops, **percentiles(w.times)}
                                 for w in workloads.values()}}
    text = table(rows, markdown=False)
    settings = (f"E={args.members} N={args.samples} H={args.horizon} iterations="
                f"{args.iterations} S={args.state_dim} A={args.action_dim} threads={args.threads}"
                f" device={device} torch {torch.__version__} CPU {cpu_model()}; "
                f"{args.rounds * args.calls_per_round} timed calls per contender, interleaved")
    print("\n" + settings + "\n" + text, flush=True)
    markdown = (f"{settings}.\n\n" + table(rows, markdown=True) + "\n\n"
                "GFLOP/s = network flops per call / p50; % matmul = that / the rate of the same "
                "matmul shapes timed alone in the same run; vs = p50 ratio (>1: faster); vs "
                "best pytorch_mppi is against its faster variant, which always evaluates every "
                "member; vs mbrl-lib compares rows with equal rows/step (mbrl-lib TS x5: 5 "
                "particles per sample, one member each = the rows of every member; TS x1: "
                "population rounded up to a multiple of E = the rows of partition); plan cost = "
                "median "
                "cost of the returned plan under every member (zero-action plan in brackets). "
                f"Seed {args.seed}; log-variance head bias {args.logvar_bias}; pytorch_mppi "
                f"{meta['pytorch_mppi']}; mbrl-lib {peer_info.get('mbrl', 'not run')}.\n")
    with open(args.out, "w") as handle:
        json.dump({"meta": meta, "rows": rows}, handle, indent=2)
    md_path = os.path.splitext(args.out)[0] + ".md"
    with open(md_path, "w") as handle:
        handle.write(markdown)
    log(f"wrote {args.out} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
