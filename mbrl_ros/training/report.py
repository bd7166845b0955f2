"""The evaluation report of ``mbrl-ros evaluate``: markdown + HTML with PNG plots (Agg).

One list of blocks (headings, paragraphs, lists, tables, images) is rendered to both
``report.md`` and ``report.html``, so the two always say the same.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mbrl_ros.training.evaluation_result import EvaluationResult

IDEAL_1_SIGMA = 0.6827
"""Share of a Gaussian within 1 sigma."""
IDEAL_2_SIGMA = 0.9545
"""Share of a Gaussian within 2 sigma."""


@dataclass(frozen=True)
class ReportConfig:
    """Thresholds of the plain-words verdicts and plot sizes."""

    calibration_tolerance: float = 0.1
    """A 1-sigma share further than this from 0.683 is called over/underconfident."""
    useful_rank_correlation: float = 0.3
    """Spearman correlation of disagreement with error above which disagreement is useful."""
    panel_inches: float = 2.4
    """Size of one plot panel [inch]."""
    dpi: int = 110
    """Resolution of the PNG plots."""
    max_scatter_points: int = 5000
    """Rows drawn in the disagreement scatter plot (evenly subsampled)."""

    def validate(self) -> "ReportConfig":
        """Raise ValueError on a bad setting; return self."""
        if not (0 < self.calibration_tolerance < 1 and self.panel_inches > 0 and self.dpi > 0
                and self.max_scatter_points > 0):
            raise ValueError("ReportConfig values must be positive (tolerance below 1)")
        return self


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.4g}"


def _save(figure: Figure, path: Path, dpi: int) -> str:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    return path.name


def plot_error_vs_horizon(result: EvaluationResult, path: Path, config: ReportConfig) -> str:
    """Grid [position, velocity] x joints of RMSE vs horizon, model vs URDF model."""
    joints = result.joints
    steps = np.arange(1, len(result.windows) + 1)
    seconds = steps * result.model_period_s
    model, base = np.asarray(result.model.rmse), np.asarray(result.baseline.rmse)
    figure = Figure(figsize=(config.panel_inches * len(joints), config.panel_inches * 2))
    axes = figure.subplots(2, len(joints), squeeze=False)
    for row, (label, offset) in enumerate((("position RMSE [rad]", 0),
                                           ("velocity RMSE [rad/s]", len(joints)))):
        for j, name in enumerate(joints):
            ax = axes[row, j]
            ax.plot(seconds, model[:, offset + j], "o-", ms=2, label="learned model")
            ax.plot(seconds, base[:, offset + j], "s--", ms=2, label="URDF model")
            ax.set_yscale("log")
            ax.set_title(name if row == 0 else "", fontsize=8)
            ax.set_xlabel("horizon [s]", fontsize=7)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
    axes[0, 0].legend(fontsize=6)
    return _save(figure, path, config.dpi)


def plot_calibration(result: EvaluationResult, path: Path, config: ReportConfig) -> str:
    """Coverage curve (expected vs observed) and per-entry shares inside 1 and 2 sigma."""
    figure = Figure(figsize=(config.panel_inches * 4, config.panel_inches * 1.6))
    curve, bars = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
    curve.plot([0, 1], [0, 1], "k:", lw=1, label="ideal")
    curve.plot(result.coverage_levels, result.coverage_observed, "o-", label="model")
    curve.set_xlabel("predicted probability of the interval", fontsize=7)
    curve.set_ylabel("observed share of errors inside", fontsize=7)
    curve.legend(fontsize=6)
    curve.set_title("one-step coverage (below the diagonal: overconfident)", fontsize=8)
    x = np.arange(len(result.state_names))
    bars.bar(x - 0.2, result.within_1_sigma, 0.4, label="inside 1σ")
    bars.bar(x + 0.2, result.within_2_sigma, 0.4, label="inside 2σ")
    bars.axhline(IDEAL_1_SIGMA, color="C0", ls=":", lw=1)
    bars.axhline(IDEAL_2_SIGMA, color="C1", ls=":", lw=1)
    bars.set_xticks(x, result.state_names, rotation=90, fontsize=6)
    bars.set_ylim(0, 1.05)
    bars.legend(fontsize=6)
    bars.set_title("share of one-step errors inside the predicted sigma (dotted: ideal)",
                   fontsize=8)
    return _save(figure, path, config.dpi)


def plot_disagreement(samples: Dict[str, np.ndarray], path: Path, config: ReportConfig) -> str:
    """Scatter of ensemble disagreement vs normalised one-step error (log-log)."""
    disagreement, error = samples["disagreement"], samples["error"]
    every = max(1, len(error) // config.max_scatter_points)
    tiny = np.finfo(np.float32).tiny
    figure = Figure(figsize=(config.panel_inches * 2, config.panel_inches * 1.6))
    ax = figure.subplots()
    ax.scatter(np.maximum(disagreement[::every], tiny), np.maximum(error[::every], tiny),
               s=3, alpha=0.4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ensemble disagreement", fontsize=7)
    ax.set_ylabel("normalised one-step squared error", fontsize=7)
    ax.set_title("does disagreement flag large errors?", fontsize=8)
    return _save(figure, path, config.dpi)


def _verdicts(result: EvaluationResult, config: ReportConfig) -> List[str]:
    lines = []
    for h in result.horizons:
        model, base = result.model.normalised_mse[h - 1], result.baseline.normalised_mse[h - 1]
        if not (math.isfinite(model) and math.isfinite(base) and base > 0):
            lines.append(f"{h} step(s): no finite comparison (model {_fmt(model)}, URDF "
                         f"{_fmt(base)})")
            continue
        change = 100.0 * (1.0 - model / base)
        word = "lower" if change >= 0 else "HIGHER"
        lines.append(f"{h} step(s) ({h * result.model_period_s:g} s): normalised error "
                     f"{_fmt(model)} vs {_fmt(base)} for the URDF model alone: "
                     f"{abs(change):.0f} % {word}.")
    share = float(np.mean(result.within_1_sigma))
    if share < IDEAL_1_SIGMA - config.calibration_tolerance:
        calibration = "overconfident: errors exceed the predicted uncertainty too often"
    elif share > IDEAL_1_SIGMA + config.calibration_tolerance:
        calibration = "underconfident: the predicted uncertainty is larger than the errors"
    else:
        calibration = "about right"
    lines.append(f"Uncertainty: {share:.0%} of one-step errors inside 1σ and "
                 f"{np.mean(result.within_2_sigma):.0%} inside 2σ (ideal 68 % / 95 %): "
                 f"{calibration}.")
    rho = result.disagreement_spearman
    useful = math.isfinite(rho) and rho >= config.useful_rank_correlation
    lines.append(f"Disagreement vs error: rank correlation {_fmt(rho)}; disagreement "
                 + ("does flag where the model is wrong (useful for the safety gate)."
                    if useful else "is a weak indicator of error on this data."))
    return lines


def _error_table(result: EvaluationResult, offset: int) -> tuple:
    header = ["joint"] + [f"{h} step{'s' if h > 1 else ''}: {who}"
                          for h in result.horizons for who in ("model", "URDF")]
    rows = [[name] + [_fmt(errors.rmse[h - 1][offset + j]) for h in result.horizons
                      for errors in (result.model, result.baseline)]
            for j, name in enumerate(result.joints)]
    return header, rows


def build_blocks(result: EvaluationResult, plots: Dict[str, str],
                 config: ReportConfig) -> List[tuple]:
    """The report as blocks: ("h1"|"h2"|"p", text), ("ul", items), ("table", header, rows),
    ("img", file, caption)."""
    meta = result.checkpoint.get("metadata", {})
    joints = len(result.joints)
    blocks: List[tuple] = [
        ("h1", "Dynamics model evaluation"),
        ("ul", [f"checkpoint: `{result.checkpoint['path']}` "
                f"({result.checkpoint['model_class']}, version {meta.get('version', '?')})",
                f"sha256: `{result.checkpoint['sha256']}`",
                f"trained on {meta.get('num_transitions', '?')} transitions; "
                f"model step {result.model_period_s:g} s",
                f"evaluated on {result.num_transitions} transitions in "
                f"{result.num_episodes} episodes",
                f"alignment: {result.alignment}"])]
    for warning in result.warnings:
        blocks.append(("p", f"**Warning: {warning}**"))
    blocks += [("h2", "Summary"), ("ul", _verdicts(result, config)),
               ("h2", "Open-loop prediction error"),
               ("p", "From every recorded state the model is rolled forward with the recorded "
                     "actions (ensemble mean, inside one episode) and compared with the "
                     "recorded states. 'URDF' is the analytical model alone. Normalised error: "
                     "squared error of each state entry divided by the mean square of the "
                     "recorded change over the same horizon, averaged over entries: 1 is no "
                     "better than predicting no motion.")]
    for title, offset in (("Position RMSE [rad]", 0), ("Velocity RMSE [rad/s]", joints)):
        header, rows = _error_table(result, offset)
        blocks += [("p", f"**{title}**"), ("table", header, rows)]
    blocks += [("table", ["", *[f"{h} step{'s' if h > 1 else ''}" for h in result.horizons]],
                [["normalised error, model"] + [_fmt(result.model.normalised_mse[h - 1])
                                                for h in result.horizons],
                 ["normalised error, URDF"] + [_fmt(result.baseline.normalised_mse[h - 1])
                                               for h in result.horizons],
                 ["rollouts"] + [str(result.windows[h - 1]) for h in result.horizons],
                 ["diverged (model)"] + [str(result.model.diverged[h - 1])
                                         for h in result.horizons]]),
               ("img", plots["horizon"], "RMSE vs horizon per joint: learned vs URDF model"),
               ("h2", "Calibration of the predicted uncertainty"),
               ("p", "Total predicted variance = mean aleatoric variance of the members + "
                     "variance of the member means (epistemic). A calibrated model has 68.3 % "
                     "of its one-step errors inside 1σ and 95.4 % inside 2σ."),
               ("table", ["joint", "q in 1σ", "q in 2σ", "qd in 1σ", "qd in 2σ"],
                [[name, f"{result.within_1_sigma[j]:.3f}", f"{result.within_2_sigma[j]:.3f}",
                  f"{result.within_1_sigma[joints + j]:.3f}",
                  f"{result.within_2_sigma[joints + j]:.3f}"]
                 for j, name in enumerate(result.joints)]),
               ("img", plots["calibration"], "coverage curve and per-entry calibration"),
               ("h2", "Ensemble disagreement vs error"),
               ("p", f"Spearman rank correlation {_fmt(result.disagreement_spearman)}, "
                     f"Pearson {_fmt(result.disagreement_pearson)}. Mean normalised one-step "
                     f"error per disagreement quantile bin, low to high: "
                     + ", ".join(_fmt(e) for e in result.disagreement_bin_error) + "."),
               ("img", plots["disagreement"], "disagreement vs one-step error")]
    return blocks


def render_markdown(blocks: Sequence[tuple]) -> str:
    """Blocks as GitHub markdown."""
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            out.append(("#" if kind == "h1" else "##") + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    text = html.escape(text)
    for mark, tag in (("**", "b"), ("`", "code")):
        parts = text.split(mark)
        text = "".join(part if i % 2 == 0 else f"<{tag}>{part}</{tag}>"
                       for i, part in enumerate(parts))
    return text


def render_html(blocks: Sequence[tuple]) -> str:
    """Blocks as a standalone HTML page (images referenced next to it)."""
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Model evaluation</title>",
           "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
           "text-align:right}img{max-width:100%}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "p"):
            out.append(f"<{kind}>{_inline(block[1])}</{kind}>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(c)}</th>" for c in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                           for row in block[2])
            out.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif kind == "img":
            out.append(f"<figure><img src='{html.escape(block[1])}' alt='{_inline(block[2])}'>"
                       f"<figcaption>{_inline(block[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(result: EvaluationResult, samples: Dict[str, np.ndarray], out_dir: Path,
                 config: ReportConfig = ReportConfig()) -> Dict[str, Path]:
    """Write the plots, ``report.md`` and ``report.html`` into ``out_dir``; returns their paths
    (keys markdown, html, horizon, calibration, disagreement)."""
    config.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {"horizon": plot_error_vs_horizon(result, out_dir / "error_vs_horizon.png", config),
             "calibration": plot_calibration(result, out_dir / "calibration.png", config),
             "disagreement": plot_disagreement(samples, out_dir / "disagreement.png", config)}
    blocks = build_blocks(result, plots, config)
    paths = {name: out_dir / file for name, file in plots.items()}
    paths["markdown"] = out_dir / "report.md"
    paths["html"] = out_dir / "report.html"
    paths["markdown"].write_text(render_markdown(blocks))
    paths["html"].write_text(render_html(blocks))
    return paths
