"""``cmcl report``: read result directories, write a report folder.

Which paper tables are shown, per benchmark of the results: those that a
study's ``study.json`` lists under ``tables``; for studies that list none,
Tables 2 and 3 when at least one row has a run, and an ablation table (4-8)
when at least two of its non-source-only rows have runs and one of them is
something Table 3 does not already show (another method or a non-default
setting); otherwise it would only repeat Table 3.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pandas as pd

from cmcl import __version__
from cmcl.report.aggregate import check_rule, with_configuration
from cmcl.report.document import (
    Document,
    Heading,
    Text,
    render_html,
    render_latex,
    render_markdown,
    write_csvs,
)
from cmcl.report.feature_section import feature_blocks
from cmcl.report.fidelity import fidelity_blocks
from cmcl.report.hpo import hpo_blocks
from cmcl.report.layout import table_blocks
from cmcl.report.paper import benchmark_family, paper_tables
from cmcl.report.planned import study_plan
from cmcl.report.plots import (
    curve_choices,
    data_kind,
    sensitivity_figures,
    training_curve_figures,
)
from cmcl.report.progress import Progress, release_memory
from cmcl.report.sections import overview_blocks, selection_blocks
from cmcl.report.store import Results, load_results
from cmcl.report.tables import TableResult, fill_table

FORMATS = ("md", "tex", "csv", "html")
OWNED = ("index.md", "index.tex", "index.html", "csv", "plots")
"""What a report writes in its folder, and replaces wholesale when it is regenerated."""


@dataclass
class ReportSummary:
    """What :func:`build_report` wrote."""

    out: Path
    files: list[Path] = field(default_factory=list)
    """Every file written: index files, CSVs and plots."""
    tables: list[str] = field(default_factory=list)
    """``table3_epic/synthetic-epic`` for every table shown."""
    missing: int = 0
    """Lines in the report that list planned rows or pairs without a finished run."""
    unplanned: int = 0
    """Lines that list rows or pairs of the paper's tables no study planned."""
    studies: list[str] = field(default_factory=list)
    """The names of the studies read (a two-fidelity study: its own and its stages')."""


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    items = [f.strip() for f in (text.split(",") if isinstance(text, str) else text) if f.strip()]
    unknown = [f for f in items if f not in FORMATS]
    if unknown or not items:
        raise ValueError(
            f"formats must be a comma-separated subset of {','.join(FORMATS)}; got {text!r}"
        )
    return tuple(dict.fromkeys(items))


def _metric(results: Results, studies: Sequence[str]) -> str:
    named = [
        s.selection_metric for s in results.studies if s.name in studies and s.selection_metric
    ]
    return named[0] if named else "target_acc"


def _mean_objective(results: Results, studies: Sequence[str]) -> bool:
    found = [results.study(s) for s in studies]
    return bool(found) and all(s is not None and s.objective == "mean" for s in found)


def runs_with_accuracy(results: Results, rule: str) -> pd.DataFrame:
    """One row per run: identity, settings, ``config``, accuracies and metrics under ``rule``."""
    runs = with_configuration(results.runs)
    return runs.merge(results.accuracy[check_rule(rule)], on="run_key", how="left")


def fill_tables(results: Results, runs: pd.DataFrame) -> list[TableResult]:
    """Every paper table to show, per benchmark (see the module docstring)."""
    finished = runs[runs["finished"]]
    unfinished = runs[~runs["finished"]]
    filled = []
    for benchmark in sorted(runs["benchmark"].unique()):
        family, synthetic = benchmark_family(benchmark)
        mine = finished[finished["benchmark"] == benchmark]
        studies = sorted(runs.loc[runs["benchmark"] == benchmark, "study"].unique())
        infos = [results.study(s) for s in studies]
        for table in paper_tables().values():
            if table.family != family:
                continue
            declaring = [
                i.name for i in infos if i is not None and i.tables and table.key in i.tables
            ]
            undeclared = [
                s for s, i in zip(studies, infos, strict=True) if i is None or i.tables is None
            ]
            pool = mine[mine["study"].isin(declaring)] if declaring else mine
            source = declaring or studies
            plans = [
                study_plan(i) if i is not None else None
                for i in infos
                if i is None or i.name in source
            ]
            result = fill_table(
                table,
                benchmark,
                synthetic,
                pool,
                metric=_metric(results, source),
                mean_objective=_mean_objective(results, source),
                unfinished=unfinished[unfinished["benchmark"] == benchmark],
                baselines=mine,
                plans=plans,
            )
            if declaring or (undeclared and result.worth_showing()):
                filled.append(result)
    return filled


def build_report(
    dirs: Sequence[str | Path],
    out: str | Path,
    *,
    formats: Sequence[str] = ("md",),
    rule: str = "last9",
    max_tsne: int = 4,
    command: str | None = None,
    all_features: bool = False,
    progress: TextIO | None = None,
) -> ReportSummary:
    """Read ``dirs``, write ``out/index.<fmt>``, ``out/plots/`` and ``out/csv/``.

    The report is built in a staging folder beside ``out`` and then replaces
    what a report owns in ``out`` (:data:`OWNED`): files of an earlier report
    that this one does not write (plots of runs no longer read, a format not
    asked for) go, other files in ``out`` stay, and a report that fails half
    way leaves the earlier one intact.

    ``all_features``: t-SNE and nearest-neighbour tables for every run with features,
    not one representative run per benchmark and method (``max_tsne`` is then ignored).
    ``progress``: where progress lines go (e.g. ``sys.stderr``); None: silent.
    """
    check_rule(rule)
    formats = parse_formats(formats)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        options = _Options(formats, rule, max_tsne, all_features, command, Progress(progress))
        summary = _build(dirs, stage, options)
        _publish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    summary.out = out
    summary.files = [out / f.relative_to(stage) for f in summary.files]
    return summary


@dataclass
class _Options:
    formats: Sequence[str]
    rule: str
    max_tsne: int
    all_features: bool
    command: str | None
    progress: Progress


def _build(dirs: Sequence[str | Path], out: Path, options: _Options) -> ReportSummary:
    plots = out / "plots"
    progress, rule = options.progress, options.rule
    results = load_results(dirs, progress=progress)
    release_memory()
    runs = runs_with_accuracy(results, rule)
    finished = runs[runs["finished"]]
    progress.stage(f"building the report: {len(runs)} runs, {len(finished)} finished")
    names = ", ".join(s.name for s in results.studies)
    kinds = {data_kind(b) for b in runs["benchmark"].unique()}
    label = " and ".join(sorted(kinds)) if kinds else "no runs"
    doc = Document(f"cmcl report: {names} ({label})")
    command = options.command or "cmcl report " + " ".join(shlex.quote(str(d)) for d in dirs)
    doc.add(Text(f"Generated by `{command}` (cmcl {__version__}); never edit by hand."))
    if any("SYNTHETIC" in k for k in kinds):
        doc.add(
            Text(
                "**Results on synthetic data are not comparable to the paper's numbers**; "
                "the paper's values are printed beside them for orientation only."
            )
        )
    doc.add(*overview_blocks(results, runs))
    summary = ReportSummary(out=out)
    summary.studies = [str(m.get("name")) for _, m in results.fidelity]
    summary.studies += [s.name for s in results.studies if s.kind == "study"]
    doc.add(Heading(1, "The paper's tables"))
    tables = fill_tables(results, runs)
    progress.stage(f"paper tables: {len(tables)} to show")
    if not tables:
        doc.add(Text("No finished run fills any row of the paper's tables yet."))
    for table in tables:
        doc.add(*table_blocks(table, rule))
        summary.tables.append(f"{table.table.key}/{table.benchmark}")
        summary.missing += len(table.missing)
        summary.unplanned += len(table.unplanned)
    metric = _metric(results, [s.name for s in results.studies])
    release_memory()
    if len(finished):
        progress.stage("selection metrics and sensitivity figures")
        doc.add(*selection_blocks(results.checkpoints, finished, rule))
        sensitivity = sensitivity_figures(finished, plots, rule)
        if sensitivity:
            doc.add(
                Heading(1, "Sensitivity to lambda, T, tau and delta (Table 6 style)"), *sensitivity
            )
    for location, meta in results.fidelity:
        progress.stage(f"fidelity of {meta.get('name')}")
        doc.add(Heading(1, "Fidelity: screen on features, confirm on video"))
        doc.add(*fidelity_blocks(location, meta))
    for study in results.studies:
        if study.journal is not None:
            progress.stage(f"HPO plots of {study.name}")
            benchmarks = runs.loc[runs["study"] == study.name, "benchmark"].unique()
            kind = " and ".join(sorted({data_kind(b) for b in benchmarks})) or "no runs read"
            doc.add(*hpo_blocks(study, plots, kind))
    if len(finished):
        choices = curve_choices(finished, metric)
        keys = {k for c in choices.values() for k in c.runs["run_key"]}
        progress.stage(f"training curves: reading the evaluations of {len(keys)} chosen runs")
        curves = training_curve_figures(results.curves(keys), finished, plots, metric, choices)
        doc.add(Heading(1, "Training curves"), *curves)
        release_memory()
        doc.add(
            *feature_blocks(
                finished,
                plots,
                metric,
                options.max_tsne,
                all_features=options.all_features,
                progress=progress,
            )
        )
    progress.stage("writing " + ", ".join(options.formats))
    _write(doc, out, options.formats)
    # Everything in the staging folder, plots included: what the closing line counts.
    summary.files = sorted(p for p in out.rglob("*") if p.is_file())
    return summary


def _publish(stage: Path, out: Path) -> None:
    """Replace every entry of :data:`OWNED` in ``out`` by the staged one (or none)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OWNED:
        old = out / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
        if (stage / name).exists():
            (stage / name).rename(old)


def _write(doc: Document, out: Path, formats: Sequence[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_links = "csv" in formats
    files = []
    writers = {
        "md": ("index.md", lambda: render_markdown(doc, csv_links=csv_links)),
        "tex": ("index.tex", lambda: render_latex(doc)),
        "html": ("index.html", lambda: render_html(doc, csv_links=csv_links)),
    }
    for fmt in formats:
        if fmt == "csv":
            files += write_csvs(doc, out / "csv")
        else:
            name, render = writers[fmt]
            (out / name).write_text(render(), encoding="utf-8")
            files.append(out / name)
    return files
