"""The demo's report: a markdown summary, a plot and an image strip of the arm at each goal."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)

ROUND_TITLES = {"nominal": "the hand-derived model alone", "learned": "the learned model",
                "learned+policy": "+ the learned policy prior"}
"""How the report names each round of goals."""


def plot_run(supervisor, path: Path) -> Path:
    """Distance to goal, model versions and gate state over simulated time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = supervisor.timeline
    time = np.asarray(t.time_s)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].plot(time, 100 * np.asarray(t.distance_m), lw=1)
    axes[0].axhline(100 * supervisor.config.success_radius_m, color="g", ls="--",
                    label="success radius")
    axes[0].set_ylabel("distance to goal [cm]")
    axes[0].set_yscale("log")
    axes[0].legend(loc="upper right")
    axes[1].step(time, t.model_version, where="post")
    axes[1].set_ylabel("model version")
    axes[2].step(time, t.gate_state, where="post")
    axes[2].set_yticks([0, 1, 2, 3], ["pass", "clamped", "fallback", "e-stop"])
    axes[2].set_ylabel("safety gate")
    axes[2].set_xlabel("simulated time [s]")
    starts = [time[i] for i in range(1, len(time)) if t.goal_index[i] != t.goal_index[i - 1]]
    for ax in axes:
        for start in starts:
            ax.axvline(start, color="0.7", lw=0.8)
    fig.suptitle("mbrl_ros arm demo: explore, learn, reach")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_comparison(supervisor, path: Path) -> Optional[Path]:
    """Per goal, the final and the closest distance with each model, side by side (None when
    the run has one model only)."""
    phases = {phase: [r for r in supervisor.results if r.model == phase]
              for phase in supervisor.phases}
    if len(phases) < 2 or not all(phases.values()):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(phases)
    for offset, (phase, results) in enumerate(phases.items()):
        x = np.arange(1, len(results) + 1) + (offset - (len(phases) - 1) / 2) * width
        reached = sum(r.reached for r in results)
        ax.bar(x, [100 * r.final_distance_m for r in results], width,
               label=f"{phase} model: {reached}/{len(results)} reached")
        ax.scatter(x, [100 * r.min_distance_m for r in results], color="k", s=8, zorder=3)
    ax.axhline(100 * supervisor.config.success_radius_m, color="g", ls="--",
               label="success radius")
    ax.set_yscale("log")
    ax.set_xlabel("goal (the same goals with each model)")
    ax.set_ylabel("final distance [cm] (dots: closest)")
    ax.legend(loc="upper right")
    ax.set_title("under model mismatch: " + " vs ".join(ROUND_TITLES.get(p, p) for p in phases))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_goal_strip(urdf: str, supervisor, path: Path) -> Optional[Path]:
    """The arm at the end of each goal, with the goal marked; None if no GL backend works."""
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    if os.environ["MUJOCO_GL"] == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    try:
        import mujoco

        from mbrl_ros.robots.mujoco_builder import BuildOptions, build_mujoco_model
        from mbrl_ros.robots.render import FrameRenderer, RenderError, save_strip
        model, info = build_mujoco_model(urdf, BuildOptions())
        data = mujoco.MjData(model)
        renderer = FrameRenderer(model)
    except Exception as error:  # rendering is optional: report why, keep the report
        logger.warning("no image strip: %s", error)
        return None
    t = supervisor.timeline
    ends = [i - 1 for i in range(1, len(t.goal_index)) if t.goal_index[i] != t.goal_index[i - 1]]
    ends = [i for i in ends if t.goal_index[i] >= 0] + [len(t.goal_index) - 1]
    frames = []
    try:
        for index in ends[:len(supervisor.results)]:
            qpos_address = [model.jnt_qposadr[model.joint(name).id]
                            for name in supervisor.robot.joint_names]
            data.qpos[qpos_address] = t.joint_positions[index]
            mujoco.mj_forward(model, data)
            frames.append(renderer.render(data))
        renderer.close()
        return save_strip(frames, str(path)) if frames else None
    except (RenderError, ValueError, RuntimeError) as error:
        logger.warning("no image strip: %s", error)
        return None


def write_report(supervisor, out_dir: Path, urdf: str, wall_s: float) -> Path:
    """results: report.md, demo.png, goals.png (if rendering works), run.json."""
    results = supervisor.results
    plot = plot_run(supervisor, out_dir / "demo.png")
    comparison = plot_comparison(supervisor, out_dir / "comparison.png")
    strip = render_goal_strip(urdf, supervisor, out_dir / "goals.png")
    models = supervisor.models_seen
    last = models[-1] if models else {}
    first_goal_time = next((t for t, g in zip(supervisor.timeline.time_s,
                                              supervisor.timeline.goal_index) if g >= 0), None)
    lines = [
        "# mbrl_ros arm demo",
        "",
        f"- wall time: {wall_s / 60:.1f} min; simulated time: "
        f"{supervisor.timeline.time_s[-1] if supervisor.timeline.time_s else 0:.1f} s",
        f"- robot data before the first goal: {first_goal_time or 0:.1f} s of simulated data",
        f"- transitions in the last model: {last.get('transitions', 0)}",
        f"- model versions deployed: {len(models)} (last v{last.get('version', 0)}, held-out "
        f"one-step error {last.get('holdout_error') or float('nan'):.4f} in normalised units)",
        f"- value/policy versions deployed: {len(supervisor.values_seen)}"
        + (f" (last v{supervisor.values_seen[-1]['version']})" if supervisor.values_seen
           else ""),
    ]
    for phase in supervisor.phases:
        done = [r for r in results if r.model == phase]
        times = [r.time_to_reach_s for r in done if r.reached] or [float("nan")]
        final = [r.final_distance_m for r in done] or [float("nan")]
        stages = sorted({r.stage for r in done if r.stage})
        lines.append(f"- goals reached within {100 * supervisor.config.success_radius_m:.0f} cm "
                     f"with {ROUND_TITLES.get(phase, phase)}: "
                     f"**{sum(r.reached for r in done)}/{len(done)}** "
                     f"(median time {np.median(times):.1f} s, median final distance "
                     f"{100 * np.median(final):.1f} cm; planner stage "
                     f"{', '.join(stages) or 'none recorded'})")
    lines += [
        f"- safety-gate interventions: {supervisor.interventions}",
        f"- planner recoveries (untrusted plans): {supervisor.recoveries}, "
        f"{supervisor.recovered} back to the task (mean time to recover "
        f"{supervisor.recovery_s:.1f} s)",
    ]
    if supervisor.switch_error:
        lines.append(f"- stopped early: {supervisor.switch_error}")
    lines += [
        "",
        "| goal | round | planner stage | reached | time [s] | final distance [cm] | "
        "closest [cm] | model | value/policy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for number, r in enumerate(results, 1):
        lines.append(f"| {(number - 1) % len(supervisor.goals) + 1} | {r.model} | "
                     f"{r.stage or '-'} | {'yes' if r.reached else 'no'} | "
                     f"{r.time_to_reach_s:.1f} | {100 * r.final_distance_m:.1f} | "
                     f"{100 * r.min_distance_m:.1f} | v{r.model_version} | "
                     f"{'v%d' % r.value_version if r.value_version else '-'} |")
    if comparison is not None:
        lines += ["", f"![rounds compared]({comparison.name})"]
    lines += ["", f"![run]({plot.name})"]
    if strip is not None:
        lines += ["", "The arm at the end of each goal:", "", f"![goals]({strip.name})"]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (out_dir / "run.json").write_text(json.dumps(dict(
        goals=[asdict(r) for r in results], models=models, value_policies=supervisor.values_seen,
        interventions=supervisor.interventions,
        recoveries=supervisor.recoveries, recovered=supervisor.recovered,
        mean_recovery_s=supervisor.recovery_s, wall_s=wall_s), indent=1))
    return report
