"""Smoke test of the dm_control benchmark loop: a few short episodes with tiny networks."""

import csv
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("dm_control")

# bench/ lives at the repository root, next to the package (not installed with it)
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench import dmc  # noqa: E402
from bench.dmc_env import DMCEnv, DMCEnvConfig, default_action_repeat, split_task  # noqa: E402

TINY = ["--steps", "96", "--seed-steps", "32", "--episode-length", "32", "--eval-every", "48",
        "--eval-episodes", "1", "--model-every", "32", "--model-epochs", "2",
        "--train-every", "16", "--members", "2", "--hidden", "16,16", "--value-hidden", "16",
        "--reward-hidden", "8", "--horizon", "3", "--samples", "16", "--iterations", "2",
        "--policy-trajectories", "2", "--threads", "1", "--no-progress",
        "--log-level", "WARNING"]


def test_loop_writes_curve_csv_and_plot(tmp_path, capsys):
    out_dir = tmp_path / "dmc"
    code = dmc.main(["--task", "cartpole-swingup", "--seed", "3", "--out-dir", str(out_dir),
                     "--reference-dir", str(tmp_path / "missing"), *TINY])
    assert code == 0
    csv_path = out_dir / "cartpole-swingup" / "seed3.csv"
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == dmc.CSV_COLUMNS
    steps = [int(r[0]) for r in rows[1:]]
    returns = [float(r[1]) for r in rows[1:]]
    assert steps == [0, 48, 96]
    # an episode is 32 simulator steps with rewards in [0, 1] each
    assert all(0.0 <= value <= 32.0 for value in returns)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["action_repeat"] == 8 and summary["steps"] == 96
    assert (out_dir / "cartpole-swingup" / "curve.png").stat().st_size > 0


def test_loop_trains_and_plans(tmp_path, monkeypatch):
    """After the seed phase the models are fitted and the planner drives the episodes."""
    import torch

    planned = []
    original_act = dmc.Agent.act

    def counting_act(self, state):
        planned.append(self.trained)
        return original_act(self, state)

    monkeypatch.setattr(dmc.Agent, "act", counting_act)

    from mbrl_ros.core.ensemble import EnsembleConfig
    from mbrl_ros.core.planning import PlannerConfig
    from mbrl_ros.core.value_policy import ValuePolicyConfig

    loop = dmc.LoopConfig(total_steps=64, seed_steps=16, model_every=16, model_epochs=2,
                          train_every=8, eval_every=64, eval_episodes=1)
    curve = dmc.run("reacher-easy", loop,
                    EnsembleConfig(num_members=2, num_elites=1, hidden_sizes=(16,)),
                    PlannerConfig(horizon=3, num_samples=16, num_iterations=1,
                                  num_policy_trajectories=2),
                    ValuePolicyConfig(hidden_sizes=(16,), batch_size=32),
                    dmc.benchmark_reward_config(hidden_sizes=(8,), batch_size=32), action_repeat=4,
                    seed=0, device=torch.device("cpu"), csv_path=tmp_path / "c.csv",
                    progress=False, episode_length=16)
    assert [step for step, _ in curve] == [0, 64]
    # 48 collection steps after seeding (12 agent steps) + one 4-step evaluation episode
    assert len(planned) == 16 and all(planned)


def test_env_flattens_and_repeats():
    env = DMCEnv(DMCEnvConfig("reacher-easy", action_repeat=4, episode_length=8, seed=1))
    state = env.reset()
    assert state.shape == (env.state_dim,) == (6,)
    _, _, done = env.step([0.0, 0.0])
    assert not done
    _, _, done = env.step([5.0, -5.0])  # clipped to the bounds
    assert done and env.max_agent_steps == 2
    with pytest.raises(ValueError):
        env.step([float("nan"), 0.0])
    assert default_action_repeat("cartpole-swingup") == 8
    assert default_action_repeat("reacher-easy") == 4
    # TD-MPC's cfgs/tasks: 2 for walker, finger, humanoid and dog, 4 for every other domain
    assert [default_action_repeat(t) for t in ("walker-walk", "finger-spin", "humanoid-stand",
                                               "cup-catch")] == [2, 2, 2, 4]
    with pytest.raises(ValueError):
        split_task("cartpole")


def test_env_wraps_unbounded_angles():
    import numpy as np

    wrapped = DMCEnv(DMCEnvConfig("reacher-easy", action_repeat=4, seed=2, wrap_angles=(0,)))
    raw = DMCEnv(DMCEnvConfig("reacher-easy", action_repeat=4, seed=2))
    for _ in range(3):
        a, b = wrapped.reset(), raw.reset()
        assert -np.pi <= a[0] < np.pi
        assert np.isclose(np.cos(a[0]), np.cos(b[0]), atol=1e-5)
        assert np.allclose(a[1:], b[1:])
    with pytest.raises(ValueError):
        DMCEnv(DMCEnvConfig("reacher-easy", wrap_angles=(6,)))


@pytest.mark.parametrize("task, angles", [("reacher-easy", (0,)), ("cartpole-swingup", ()),
                                          ("cheetah-run", (1,)), ("cup-catch", ())])
def test_unbounded_hinge_angles_are_found_from_the_model(task, angles):
    """Raw angles of hinges without limits are found from the joint types (reacher's shoulder,
    cheetah's pitch); angles observed as cos / sin (cartpole's pole) and limited hinges are
    not; the physics state is left as it was."""
    import numpy as np

    env = DMCEnv(DMCEnvConfig(task, seed=4))
    state = env.reset()
    assert env.unbounded_angles() == angles
    assert np.array_equal(env._flatten(env._env.task.get_observation(env._env.physics)), state)


def test_run_wraps_the_detected_angles_with_no_flag(tmp_path, monkeypatch):
    """The loop gives the ensemble the detected angle dims (no per-task setting)."""
    import torch

    from mbrl_ros.core.ensemble import EnsembleConfig
    from mbrl_ros.core.planning import PlannerConfig
    from mbrl_ros.core.value_policy import ValuePolicyConfig

    seen = []
    original_init = dmc.Agent.__init__

    def recording_init(self, env, loop, ensemble_config, *args):
        seen.append((ensemble_config.angle_wrap, tuple(env.config.wrap_angles)))
        original_init(self, env, loop, ensemble_config, *args)

    monkeypatch.setattr(dmc.Agent, "__init__", recording_init)
    loop = dmc.LoopConfig(total_steps=8, seed_steps=8, model_every=8, model_epochs=1,
                          train_every=8, eval_every=8, eval_episodes=1)
    dmc.run("reacher-easy", loop, EnsembleConfig(num_members=2, num_elites=1, hidden_sizes=(8,)),
            PlannerConfig(horizon=2, num_samples=8, num_iterations=1, num_policy_trajectories=1),
            ValuePolicyConfig(hidden_sizes=(8,), batch_size=8),
            dmc.benchmark_reward_config(hidden_sizes=(8,), batch_size=8), action_repeat=4,
            seed=0, device=torch.device("cpu"), csv_path=tmp_path / "c.csv", progress=False,
            episode_length=8)
    assert seen == [((0,), (0,))]


@pytest.mark.parametrize("agent", ["gp-planner", "mbpo", "tdmpc2"])
def test_every_agent_kind_runs_the_loop(tmp_path, agent):
    """Each agent kind of ``--agent`` collects, trains, plans and writes its curve."""
    out_dir = tmp_path / "dmc"
    code = dmc.main(["--task", "cartpole-swingup", "--agent", agent, "--seed", "0",
                     "--out-dir", str(out_dir), "--reference-dir", str(tmp_path / "none"),
                     "--no-plot", *TINY])
    assert code == 0
    with open(out_dir / "cartpole-swingup" / agent / "seed0.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert [int(r[0]) for r in rows] == [0, 48, 96]


@pytest.mark.parametrize("method", ["icem", "ilqr"])
def test_planner_methods_run_the_loop(tmp_path, method):
    out_dir = tmp_path / "dmc"
    code = dmc.main(["--task", "cartpole-swingup", "--method", method, "--seed", "0",
                     "--out-dir", str(out_dir), "--reference-dir", str(tmp_path / "none"),
                     "--no-plot", *TINY])
    assert code == 0
    assert (out_dir / "cartpole-swingup" / f"planner-{method}" / "seed0.json").exists()


def test_reward_share_counts_rewarded_random_steps(tmp_path):
    from bench.dmc_reward_share import main, reward_share
    dense, sparse = reward_share("reacher-easy", 1, 0), reward_share("finger-spin", 1, 0)
    assert dense["agent_steps"] == 250 and sparse["agent_steps"] == 500  # action repeat 4, 2
    assert 0.0 <= sparse["rewarded_share"] < dense["rewarded_share"] <= 1.0
    assert main(["--tasks", "cartpole-swingup", "--episodes", "1",
                 "--out", str(tmp_path / "share.json")]) == 0
    saved = json.loads((tmp_path / "share.json").read_text())
    assert saved["results"]["cartpole-swingup"]["agent_steps"] == 125
    assert saved["args"]["out"] == "share.json"  # no machine folder recorded
