"""Sensitivity curves (Table 6 style) and training curves, as PNG and SVG.

Sensitivity: for each study, benchmark and method whose runs vary lambda, T,
tau or delta, the mean over pairs of the accuracy (under the report's rule)
against each varied value, with the other searched settings held at the
paper's defaults where such runs exist (else at their most common value). The
band is ± one standard deviation over seeds of the seed's mean over pairs. A
setting with more than 12 values (an HPO study) is drawn as a scatter of
configurations, coloured by pair.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cmcl.common import pair_label
from cmcl.report.aggregate import matches, normalise_value
from cmcl.report.choose import Choice, choose
from cmcl.report.document import Figure
from cmcl.report.names import safe_name
from cmcl.report.paper import (
    PAPER_DEFAULTS,
    benchmark_family,
    family_pairs,
    paper_sensitivity,
)

SWEPT = {
    "cfg.method.lam": "λ (weight of the adaptation terms)",
    "cfg.method.threshold": "T (pseudo-label threshold)",
    "cfg.method.tau": "τ (temperature)",
    "cfg.method.delta": "δ (memory-bank momentum)",
}
MAX_CURVE_VALUES = 12
METHOD_COLOURS = {
    "source_only": "#7f7f7f",
    "supervised_target": "#000000",
    "adabn": "#bcbd22",
    "mmd": "#17becf",
    "mcd": "#8c564b",
    "mm_sada": "#1f77b4",
    "mm_sada_modality": "#aec7e8",
    "mm_sada_domain": "#9467bd",
    "pseudo_label": "#e377c2",
    "cmco_modality": "#ff9896",
    "cmco_domain": "#ff7f0e",
    "cmco": "#d62728",
    "adv_adv": "#2ca02c",
    "con_adv": "#98df8a",
}
plt.rcParams.update(
    {"font.size": 10, "axes.titlesize": 11, "figure.dpi": 100, "svg.hashsalt": "cmcl-report"}
)


def save(fig: plt.Figure, folder: Path, stem: str) -> str:
    """Write ``folder/stem.png`` and ``.svg``; returns ``plots/stem`` for the document.

    Raises:
        FileExistsError: a figure of this report already took the name (a report is
            written into a fresh folder, so an existing file is one of its own).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / f"{stem}.png").exists():
        plt.close(fig)
        raise FileExistsError(f"two figures of one report are both named {stem!r} in {folder}")
    fig.savefig(folder / f"{stem}.png", dpi=150, bbox_inches="tight")
    # No date and fixed ids: regenerating a checked-in report changes no file needlessly.
    fig.savefig(folder / f"{stem}.svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return f"{folder.name}/{stem}"


def data_kind(benchmark: str) -> str:
    return "SYNTHETIC data" if benchmark_family(benchmark)[1] else "real data"


def _hold_others(group: pd.DataFrame, varied: str) -> pd.DataFrame:
    subset = group
    for other in SWEPT:
        if other == varied or other not in group or group[other].nunique() < 2:
            continue
        at_default = subset[subset[other].map(lambda v, w=PAPER_DEFAULTS[other]: matches(v, w))]
        if at_default[varied].nunique() >= 2:
            subset = at_default
        else:
            mode = subset[other].map(normalise_value).mode().iloc[0]
            subset = subset[subset[other].map(lambda v, w=mode: matches(v, w))]
    return subset


def _seed_band(runs: pd.DataFrame) -> tuple[float, float]:
    per_pair = runs.groupby("pair")["target_acc"].mean()
    per_seed = runs.groupby("seed")["target_acc"].mean()
    spread = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0
    return float(per_pair.mean()), spread


def _sweep_axis(
    ax: plt.Axes,
    group: pd.DataFrame,
    column: str,
    reference: float | None,
    paper: dict[float, float] | None,
) -> None:
    subset = _hold_others(group, column)
    values = sorted({normalise_value(v) for v in subset[column]})
    if len(values) <= MAX_CURVE_VALUES:
        stats = [
            _seed_band(subset[subset[column].map(lambda v, w=x: matches(v, w))]) for x in values
        ]
        mean = np.array([s[0] for s in stats])
        spread = np.array([s[1] for s in stats])
        seeds = subset["seed"].nunique()
        ax.plot(values, mean, "o-", color="#d62728", label="reproduced (mean over pairs)")
        ax.fill_between(
            values,
            mean - spread,
            mean + spread,
            color="#d62728",
            alpha=0.2,
            label=f"± std over {seeds} seed{'s' if seeds > 1 else ' (no band)'}",
        )
    else:
        for i, (pair, runs) in enumerate(group.groupby("pair")):
            by_config = runs.groupby("config").agg({column: "first", "target_acc": "mean"})
            ax.scatter(
                by_config[column],
                by_config["target_acc"],
                s=18,
                alpha=0.7,
                color=plt.cm.tab10(i % 10),
                label=pair_label(pair),
            )
    if reference is not None:
        ax.axhline(reference, color="#7f7f7f", linestyle="--", label="source-only")
    if paper:
        ax.plot(list(paper), list(paper.values()), "kx", markersize=8, label="paper (Table 6)")
    ax.axvline(PAPER_DEFAULTS[column], color="#999999", linestyle=":", linewidth=1)
    ax.set_xlabel(SWEPT[column])
    ax.set_ylabel("target accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def sensitivity_figures(runs: pd.DataFrame, folder: Path, rule: str) -> list[Figure]:
    """One figure per (study, benchmark, method) that varies a swept setting."""
    figures = []
    for (study, benchmark, method), group in runs.groupby(["study", "benchmark", "method"]):
        columns = [c for c in SWEPT if c in group and group[c].map(normalise_value).nunique() > 1]
        if not columns or method == "source_only":
            continue
        family, synthetic = benchmark_family(benchmark)
        base = runs[
            (runs["study"] == study)
            & (runs["benchmark"] == benchmark)
            & (runs["method"] == "source_only")
        ]
        reference = float(base.groupby("pair")["target_acc"].mean().mean()) if len(base) else None
        fig, axes = plt.subplots(1, len(columns), figsize=(4.6 * len(columns), 3.8), squeeze=False)
        # The paper's Table 6 points: only beside real-data EPIC runs of its own method.
        paper = paper_sensitivity(method) if family == "epic" and not synthetic else {}
        for ax, column in zip(axes[0], columns, strict=True):
            _sweep_axis(ax, group, column, reference, paper.get(column))
        pairs = group["pair"].nunique()
        fig.suptitle(
            f"Sensitivity of {method} — {benchmark} ({data_kind(benchmark)}), study {study}\n"
            f"accuracy rule: {rule}; mean over {pairs} pair(s); "
            f"dotted line: paper default",
            fontsize=10,
        )
        fig.tight_layout()
        stem = save(fig, folder, safe_name(f"sensitivity_{study}_{benchmark}_{method}"))
        figures.append(
            Figure(stem, f"Sensitivity of {method} on {benchmark} (study {study}, rule {rule})")
        )
    return figures


def curve_choices(runs: pd.DataFrame, metric: str) -> dict[tuple[str, str, str], Choice]:
    """(benchmark, pair, method) -> the configuration whose seeds a training curve shows."""
    choices = {}
    for (benchmark, pair, method), group in runs.groupby(["benchmark", "pair", "method"]):
        chosen = choose(group, metric=metric)
        if chosen is not None:
            choices[(benchmark, pair, method)] = chosen
    return choices


def training_curve_figures(
    evals: pd.DataFrame,
    runs: pd.DataFrame,
    folder: Path,
    metric: str,
    choices: dict[tuple[str, str, str], Choice] | None = None,
) -> list[Figure]:
    """Per benchmark: target accuracy against global step, one panel per pair, a line per method.

    ``evals`` needs to hold the evaluations of the chosen runs only (:func:`curve_choices`,
    computed here when not given).
    """
    choices = curve_choices(runs, metric) if choices is None else choices
    figures = []
    for benchmark, bench_runs in runs.groupby("benchmark"):
        order = family_pairs(benchmark_family(benchmark)[0])
        pairs = [p for p in order if p in set(bench_runs["pair"])]
        pairs += sorted(set(bench_runs["pair"]) - set(pairs))
        columns = min(3, len(pairs))
        rows = -(-len(pairs) // columns)
        fig, axes = plt.subplots(
            rows, columns, figsize=(max(7.0, 5.0 * columns), 3.6 * rows), squeeze=False, sharey=True
        )
        for ax, pair in zip(axes.flat, pairs, strict=False):
            for method in _method_order(bench_runs["method"].unique()):
                chosen = choices.get((benchmark, pair, method))
                if chosen is None:
                    continue
                curves = evals[evals["run_key"].isin(chosen.runs["run_key"])]
                stats = curves.groupby("global_step")["target_acc"].agg(["mean", "std"]).fillna(0.0)
                colour = METHOD_COLOURS.get(method)
                seeds = chosen.runs["seed"].nunique()
                ax.plot(
                    stats.index,
                    stats["mean"],
                    color=colour,
                    linewidth=1.4,
                    label=f"{method} ({seeds} seed{'s' if seeds > 1 else ''})",
                )
                ax.fill_between(
                    stats.index,
                    stats["mean"] - stats["std"],
                    stats["mean"] + stats["std"],
                    color=colour,
                    alpha=0.15,
                )
            warmup = bench_runs.get("cfg.train.warmup_steps")
            if warmup is not None and warmup.notna().any():
                ax.axvline(
                    float(warmup.dropna().iloc[0]),
                    color="#555555",
                    linestyle=":",
                    linewidth=1,
                    label="end of warm-up",
                )
            ax.set_title(pair_label(pair))
            ax.set_xlabel("global step")
            ax.set_ylabel("target accuracy (%)")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(pairs) :]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=min(4, len(labels)),
            fontsize=8,
            bbox_to_anchor=(0.5, -0.02 - 0.03 * (len(labels) // 4)),
        )
        fig.suptitle(
            f"Training curves — {benchmark} ({data_kind(benchmark)})\nfused target "
            "accuracy at each evaluation, mean ± std over seeds",
            fontsize=11,
        )
        fig.tight_layout(rect=(0, 0.06, 1, 0.97))
        stem = save(fig, folder, f"training_curves_{benchmark}")
        figures.append(Figure(stem, f"Training curves on {benchmark}, mean ± std over seeds"))
    return figures


def _method_order(methods: np.ndarray) -> list[str]:
    known = [m for m in METHOD_COLOURS if m in set(methods)]
    return known + sorted(set(methods) - set(known))
