"""Commands on study directories of 100 to 10,000 runs: time, peak memory, the study's size.

A study directory of N runs is synthesised without training (:func:`build_study`),
in results format version 2 (what a study driver writes: ``results/`` and
``summaries/`` chunks flushed 64 runs at a time through
:class:`cmcl.results.ResultsWriter`, ``runs/<run_id>/features.parquet`` and
``model.pt``) or version 1 (``results/evals-<run_id>.parquet``, run
directories with ``summary.json``), so that the report before and after the
version-2 reader can be compared on the same runs. The shapes are copied from
a few real tiny runs (``cmcl train``, 20 + 40 steps; cached in the work
folder): their metric columns and loss terms, summary keys, feature dump
(rows, dimension, bytes) and weights. Each synthetic run has the evaluations
of its benchmark's default schedule (600 warm-up + 1200 adaptation steps, an
evaluation every 20: 90 rows), accuracies near the paper's number for its
table cell, and a features.parquet and model.pt that are hard links to a
template run's (the bytes counted are those an object store would hold; the
disk holds one copy).

The runs: every cell of the paper's Tables 2-8 on synthetic-epic and
synthetic-ucf-hmdb (22 + 6 configurations, all pairs, 3 seeds: 432 runs),
then cmco configurations with random lambda and T (an HPO study's shape) on
the six EPIC pairs, 3 seeds each; N takes the first N.

A measurement is a function per command (:func:`measure_report`; ``cmcl study
status`` and ``resume`` can be added the same way): it runs the command as a
subprocess and reads its peak RSS from ``wait4``.

    PYTHONPATH=. python benchmarks/study_scale.py [--sizes 15,100,1000,10000]
        [--v1-sizes 100,1000] [--before-code DIR] [--work DIR] [--json FILE]

``--before-code DIR``: a checkout of the code to compare with (e.g. ``git
archive 671ae43 | tar -x -C DIR``), run on the version-1 directories.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmcl.config import RunConfig
from cmcl.filestore import FileStore
from cmcl.report.aggregate import matches
from cmcl.report.paper import PAPER_DEFAULTS, paper_tables
from cmcl.report.retrieval import retrieval_metrics
from cmcl.results import ResultsWriter, RunIdentity, evaluation_rows, summary_row

ROOT = Path(__file__).resolve().parents[1]
EPIC, UCF = "synthetic-epic", "synthetic-ucf-hmdb"
TEMPLATE_RUNS = (
    (EPIC, "D2-D1", "cmco"),
    (EPIC, "D2-D1", "source_only"),
    (EPIC, "D2-D1", "mm_sada"),
    (UCF, "U-H", "cmco"),
)
TINY = ("train.warmup_steps=20", "train.steps=40", "train.eval_every=10")
FLUSH_RUNS = 64
SEEDS = (0, 1, 2)
SPEC_SETTINGS = {"lambda": "method.lam", "T": "method.threshold"}


# -- templates: a few real runs ----------------------------------------------------------


@dataclass
class Template:
    benchmark: str
    method: str
    history: list[dict[str, Any]]
    features: Path
    weights: Path
    extra: dict[str, float]


def real_templates(work: Path) -> dict[tuple[str, str], Template]:
    """(benchmark, method) -> a real tiny run's shapes (trained once, then cached in ``work``)."""
    found = {}
    for benchmark, pair, method in TEMPLATE_RUNS:
        out = work / "templates" / f"{benchmark}-{method}"
        if not (out / "model.pt").exists():
            shutil.rmtree(out, ignore_errors=True)
            command = ["cmcl", "train", "--benchmark", benchmark, "--pair", pair]
            command += ["--method", method, "--out", str(out)]
            command += [a for s in TINY for a in ("--set", s)]
            print("training a template run:", " ".join(command), flush=True)
            subprocess.run(command, check=True, capture_output=True)
            _final_weights(out)
        history = pd.read_parquet(out / "metrics.parquet").to_dict("records")
        extra = retrieval_metrics(out / "features.parquet")
        found[(benchmark, method)] = Template(
            benchmark, method, history, out / "features.parquet", out / "model.pt", extra
        )
    return found


def _final_weights(out: Path) -> None:
    """model.pt: the last checkpoint's model weights (what a run keeps once it ended)."""
    import torch

    last = sorted((out / "checkpoints").iterdir())[-1]
    state = torch.load(last / "state.pt", map_location="cpu", weights_only=False)
    weights = {k: v for k, v in state["method"].items() if k.startswith("model.")}
    torch.save(weights, out / "model.pt")
    shutil.rmtree(out / "checkpoints")


def _template(templates: dict, benchmark: str, method: str) -> Template:
    if (benchmark, method) in templates:
        return templates[(benchmark, method)]
    # Methods without their own template take the one with the closest loss terms.
    near = "source_only" if method in ("source_only", "supervised_target", "adabn") else "cmco"
    if method.startswith("mm_sada") or method in ("adv_adv", "mcd", "mmd"):
        near = "mm_sada"
    return templates.get((benchmark, near)) or templates[(benchmark, "cmco")]


# -- the runs of a study of N ------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    benchmark: str
    method: str
    variant: str
    settings: tuple[tuple[str, Any], ...]
    trial: int
    pair: str
    seed: int
    level: float


def _paper_cells() -> list[tuple[str, str, str, tuple, dict[str, float]]]:
    """(benchmark, method, variant, settings, {pair: paper value}) of every reproducible row."""
    from cmcl.data.benchmarks import BENCHMARKS

    cells, seen = [], set()
    for table in paper_tables().values():
        benchmark = UCF if table.family == "ucf-hmdb" else EPIC
        pairs = BENCHMARKS[benchmark].pairs
        for row in table.rows:
            if row.method is None:
                continue
            # A row naming the paper's defaults (Table 6's final row) is Table 3's run.
            settings = tuple(
                (c.removeprefix("cfg."), v)
                for c, v in row.required
                if not matches(v, PAPER_DEFAULTS.get(c))
            )
            key = (benchmark, row.method, settings)
            if key in seen:
                continue
            seen.add(key)
            mean = table.paper_value(row, "Mean") or 50.0
            values = {p: table.paper_value(row, p) or mean for p in pairs}
            shown = "+".join(f"{k.split('.')[-1]}={v}" for k, v in settings)
            variant = f"{row.method}_{shown}" if shown else ""
            cells.append((benchmark, row.method, variant, settings, values))
    # A method with variants has its plain configuration as a variant too (a grid study's form).
    varied = {c[1] for c in cells if c[2]}
    return [(b, m, v or (f"{m}_default" if m in varied else ""), s, x) for b, m, v, s, x in cells]


def plan_runs(n: int) -> list[Planned]:
    """The first ``n`` runs: the paper's cells (3 seeds), then random cmco configurations."""
    rng = np.random.default_rng(0)
    runs: list[Planned] = []
    cells = _paper_cells()
    for seed in SEEDS:
        for trial, (benchmark, method, variant, settings, values) in enumerate(cells):
            for pair, value in values.items():
                noise = float(rng.normal(0.0, 1.0))
                runs.append(
                    Planned(benchmark, method, variant, settings, trial, pair, seed, value + noise)
                )
    trial = len(cells)
    epic_pairs = next(c[4] for c in cells if c[0] == EPIC and c[1] == "cmco")
    while len(runs) < n:
        lam, threshold = (
            round(float(rng.uniform(0.5, 2.0)), 3),
            round(float(rng.uniform(0.5, 0.95)), 3),
        )
        settings = (("method.lam", lam), ("method.threshold", threshold))
        penalty = 3.0 * abs(math.log(lam / 1.25)) + 10.0 * abs(threshold - 0.8)
        for seed in SEEDS:
            for pair, value in epic_pairs.items():
                level = value - penalty + float(rng.normal(0.0, 1.0))
                variant = f"cmco_lam={lam}+threshold={threshold}"
                runs.append(Planned(EPIC, "cmco", variant, settings, trial, pair, seed, level))
        trial += 1
    return runs[:n]


def _config(run: Planned) -> RunConfig:
    return RunConfig.from_overrides(
        {
            "data.benchmark": run.benchmark,
            "data.pair": run.pair,
            "method.name": run.method,
            "train.seed": run.seed,
            **dict(run.settings),
        }
    )


def history_of(run: Planned, config: RunConfig, template: Template, rng) -> list[dict]:
    """The evaluations of ``config``'s schedule with ``template``'s columns, near ``run.level``."""
    train = config.train
    warmup = list(range(train.eval_every, train.warmup_steps + 1, train.eval_every))
    adapt = list(range(train.eval_every, train.steps + 1, train.eval_every))
    last = template.history[-1]
    rows = []
    for stage, steps in (("warmup", warmup), ("adapt", adapt)):
        for i, step in enumerate(steps):
            progress = (i + 1) / len(steps)
            acc = run.level - (6.0 if stage == "warmup" else 3.0) * (1 - progress) ** 2
            acc += float(rng.normal(0.0, 0.6))
            row = {**last}
            row.update(
                stage=stage,
                step=step,
                global_step=step + (train.warmup_steps if stage == "adapt" else 0),
                lr=train.lr,
                target_acc=acc,
                target_acc_rgb=acc - 3.0 + float(rng.normal(0.0, 0.5)),
                target_acc_flow=acc - 4.0 + float(rng.normal(0.0, 0.5)),
                target_mean_class_acc=acc - 8.0,
                target_entropy=float(last["target_entropy"]) * (1.5 - 0.5 * progress),
                snd=float(last["snd"]) + float(rng.normal(0.0, 0.1)),
                source_val_acc=float(last["source_val_acc"]) + float(rng.normal(0.0, 0.5)),
                elapsed_s=0.05 * (step + (train.warmup_steps if stage == "adapt" else 0)),
            )
            for key in row:
                if key.startswith("loss_"):
                    row[key] = float(last[key]) * (1.0 + float(rng.normal(0.0, 0.05)))
            rows.append(row)
    return rows


def summary_of(history: list[dict], last_k: int, wall_s: float) -> dict[str, Any]:
    """The engine's summary (mean of the last k adaptation evaluations, best, final)."""
    adapt = [r for r in history if r["stage"] == "adapt"]
    tail = adapt[-last_k:]
    best = max(adapt, key=lambda r: r["target_acc"])
    summary = {
        "rule": f"last{last_k}",
        "eval_last_k": last_k,
        "evaluations": len(tail),
        "best": {"target_acc": best["target_acc"], "step": best["step"], "stage": "adapt"},
        "final": {"target_acc": adapt[-1]["target_acc"], "step": adapt[-1]["step"]},
        "target_acc_std": float(np.std([r["target_acc"] for r in tail], ddof=1)),
        "steps": history[-1]["global_step"],
        "wall_s": wall_s,
    }
    for key in ("target_acc", "target_acc_rgb", "target_acc_flow", "target_mean_class_acc"):
        summary[key] = float(np.mean([r[key] for r in tail]))
    for key in ("pl_acc", "pl_coverage", "source_val_acc", "target_entropy", "snd"):
        summary[key] = float(np.nanmean([r.get(key, math.nan) for r in tail]))
    return summary


# -- writing a study directory -----------------------------------------------------------


def _spec(name: str, runs: list[Planned]) -> dict[str, Any]:
    """The study file of ``runs``: a grid of every method, each configuration a variant."""
    names = {v: k for k, v in SPEC_SETTINGS.items()}
    methods = sorted({r.method for r in runs})
    varied = {r.method for r in runs if r.variant}
    variants: dict[str, dict[str, Any]] = {}
    for run in runs:
        if run.method not in varied:
            continue
        label = run.variant
        settings = {names.get(k, k): v for k, v in run.settings}
        variants[label] = {"name": label, "methods": [run.method], "settings": settings}
    return {
        "name": name,
        "description": f"{len(runs)} synthetic runs: the paper's table cells, then cmco over "
        "lambda and T (benchmarks/study_scale.py)",
        "benchmark": sorted({r.benchmark for r in runs}),
        "pairs": "all",
        "methods": methods,
        "variants": list(variants.values()),
        "seeds": len(SEEDS),
        "searcher": "grid",
        "objective": "per_pair",
        "metric": "source_val_acc",
    }


def _study_files(store: FileStore, name: str, runs: list[Planned]) -> None:
    """spec.yaml (in the study layer's normal form) and study.json, as `cmcl study run` writes."""
    import yaml

    from cmcl.study.spec import parse_spec

    raw = _spec(name, runs)
    spec = parse_spec(raw, source="benchmarks/study_scale.py")
    store.write_bytes("spec.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False).encode())
    meta = {
        "name": name,
        "description": raw["description"],
        "cmcl_version": "benchmark",
        "created": time.time(),
        "source_file": "benchmarks/study_scale.py",
        "synthetic": True,
        "benchmarks": raw["benchmark"],
        "pairs": sorted({r.pair for r in runs}),
        "methods": raw["methods"],
        "objective": "per_pair",
        "selection_metric": "source_val_acc",
        "mode": "max",
        "oracle": False,
        "searcher": "grid",
        "trials": len({(r.benchmark, r.trial) for r in runs}),
        "seeds": list(SEEDS),
        "tables": [],
        "run_overrides": {},
    }
    store.write_json("study.json", meta)


def _identity(name: str, run: Planned) -> RunIdentity:
    trial_id = f"5ca1e_{run.trial:05d}"
    return RunIdentity(
        study=name,
        trial_id=trial_id,
        run_id=f"{trial_id}-{run.pair}-s{run.seed}",
        benchmark=run.benchmark,
        pair=run.pair,
        method=run.method,
        seed=run.seed,
        variant=run.variant,
    )


def write_state(store: FileStore, name: str, runs: list[Planned], values: dict) -> None:
    """state.json as a study driver leaves it when every trial has ended and was saved
    (cmcl/study/records.py): what `cmcl study status` and `resume` read."""
    from cmcl.study.records import RunRecord, StudyState, TrialRecord

    trials: dict[str, TrialRecord] = {}
    for run in runs:
        identity = _identity(name, run)
        trial = trials.get(identity.trial_id)
        if trial is None:
            trial = TrialRecord(
                trial_id=identity.trial_id,
                number=run.trial,
                method=run.method,
                variant=run.variant or None,
                pairs=[[run.benchmark, run.pair]],
                params=dict(run.settings),
                names={},
                description=f"{run.method} {run.variant} on {run.pair}".strip(),
                runs=[],
                state="done",
                told=True,
            )
            trials[identity.trial_id] = trial
        trial.runs.append(
            RunRecord(
                run_id=identity.run_id,
                benchmark=run.benchmark,
                pair=run.pair,
                seed=run.seed,
                state="done",
                attempts=1,
                evaluations=9,
                saved=True,
                slot_s=90.0,
            )
        )
    for trial in trials.values():
        mine = [values[r.run_id] for r in trial.runs]
        trial.value = sum(mine) / len(mine)
        trial.per_pair = {trial.pairs[0][1]: trial.value}
    store.write_json("state.json", StudyState(trials=trials, sessions=1).to_dict())
    meta = store.read_json("study.json")
    meta.update(trials=len(trials), runs=len(runs), layout=2)
    store.write_json("study.json", meta)


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.link(source, target)


def build_study(root: Path, n: int, templates: dict, *, layout: str = "2") -> Path:
    """A study directory of ``n`` runs under ``root`` (format ``layout``); returns its path."""
    name = f"scale{n}-v{layout}"
    path = root / name
    if (path / "DONE").exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    store = FileStore(path)
    runs = plan_runs(n)
    _study_files(store, name, runs)
    rng = np.random.default_rng(1)
    writer = ResultsWriter(store)
    writer.recover()
    evaluations: list[dict] = []
    summaries: list[dict] = []
    values: dict[str, float] = {}
    for run in runs:
        config = _config(run)
        template = _template(templates, run.benchmark, run.method)
        identity = _identity(name, run)
        history = history_of(run, config, template, rng)
        summary = summary_of(history, config.train.eval_last_k, wall_s=90.0)
        values[identity.run_id] = summary["source_val_acc"]
        run_dir = path / "runs" / identity.run_id
        _link(template.features, run_dir / "features.parquet")
        if layout == "1":
            _write_v1_run(path, run_dir, identity, config, history, summary)
            continue
        _link(template.weights, run_dir / "model.pt")
        settings = config.flat()
        evaluations += evaluation_rows(history, identity=identity, settings=settings)
        summaries.append(
            summary_row(
                summary,
                identity=identity,
                settings=settings,
                state="done",
                run_dir=f"runs/{identity.run_id}",
                has_features=True,
                has_weights=True,
                extra=template.extra,
            )
        )
        if len(summaries) == FLUSH_RUNS:
            writer.flush(evaluations, summaries)
            evaluations, summaries = [], []
    if summaries:
        writer.flush(evaluations, summaries)
    if layout == "2":
        write_state(store, name, runs, values)
    (path / "DONE").write_text("")
    return path


def _write_v1_run(study: Path, run_dir: Path, identity, config, history, summary) -> None:
    """Version 1: results/evals-<run_id>.parquet plus the run directory's files."""
    frame = pd.DataFrame(history)
    config.save(run_dir / "config.json")
    frame.to_parquet(run_dir / "metrics.parquet")
    (run_dir / "summary.json").write_text(json.dumps({**summary, "config": config.flat()}))
    wide = frame.assign(**identity.columns(), **{f"cfg.{k}": v for k, v in config.flat().items()})
    (study / "results").mkdir(exist_ok=True)
    wide.to_parquet(study / "results" / f"evals-{identity.run_id}.parquet")


def directory_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path``, as an object store would hold them (links counted each)."""
    total = count = 0
    for folder, _, files in os.walk(path):
        for name in files:
            total += os.stat(os.path.join(folder, name)).st_size
            count += 1
    return total, count


# -- measurements: one function per command ----------------------------------------------


@dataclass
class Measurement:
    command: str
    wall_s: float
    peak_mb: float
    returncode: int
    note: str = ""
    stderr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _run(command: list[str], *, env: dict[str, str], cwd: Path, cap_mb: float) -> Measurement:
    """Run ``command``; its wall time and peak RSS (``wait4``), killed above ``cap_mb``."""
    start = time.monotonic()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    killed, ended = threading.Event(), threading.Event()

    def watch() -> None:
        # Reads /proc rather than polling the process: wait4 below must be the one to reap it.
        status = Path(f"/proc/{process.pid}/status")
        while not ended.wait(0.2):
            try:
                lines = status.read_text().splitlines()
            except OSError:
                return
            rss = [int(line.split()[1]) for line in lines if line.startswith("VmRSS")]
            if rss and rss[0] / 1024 > cap_mb:
                killed.set()
                process.kill()
                return

    threading.Thread(target=watch, daemon=True).start()
    _, status, usage = os.wait4(process.pid, 0)
    ended.set()
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    wall = time.monotonic() - start
    note = f"killed above {cap_mb:.0f} MB" if killed.is_set() else ""
    if process.returncode and not killed.is_set():
        note = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {process.returncode}"
    return Measurement(
        " ".join(command), wall, usage.ru_maxrss / 1024, process.returncode, note, stderr
    )


def measure_report(
    study: Path, out: Path, *, code: Path = ROOT, cap_mb: float = 12_000
) -> Measurement:
    """`cmcl report STUDY --out OUT` with the cmcl at ``code``: wall time and peak memory."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(code)}
    # `python -c` puts the working directory first on sys.path: run from an empty one, or a
    # checkout there would shadow ``code``. The first stderr line says which cmcl ran.
    script = (
        "import sys, cmcl; print(cmcl.__file__, file=sys.stderr); from cmcl.cli import main; main()"
    )
    command = [sys.executable, "-c", script, "report", str(study), "--out", str(out)]
    neutral = out.parent / "cwd"
    neutral.mkdir(parents=True, exist_ok=True)
    result = _run(command, env=env, cwd=neutral, cap_mb=cap_mb)
    result.extra["cmcl"] = result.stderr.splitlines()[0] if result.stderr else ""
    if not result.extra["cmcl"].startswith(str(code)):
        raise RuntimeError(f"the report ran {result.extra['cmcl']!r}, not the cmcl in {code}")
    return result


def measure_study_command(study: Path, command: str, *, cap_mb: float = 12_000) -> Measurement:
    """`cmcl study status|resume STUDY` with this checkout's cmcl: wall time and peak memory
    (a resume of a finished study must start no Ray: it says so and returns)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = "from cmcl.cli import main; main()"
    args = [sys.executable, "-c", script, "study", command, str(study)]
    if command == "resume":
        args.append("--quiet")
    neutral = study.parent / "cwd"
    neutral.mkdir(parents=True, exist_ok=True)
    return _run(args, env=env, cwd=neutral, cap_mb=cap_mb)


# -- main ---------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="15,100,1000,10000")
    parser.add_argument("--v1-sizes", default="100,1000")
    parser.add_argument("--before-code", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cmcl-study-scale"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--cap-mb", type=float, default=12_000)
    args = parser.parse_args()
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )
    args.work.mkdir(parents=True, exist_ok=True)
    templates = real_templates(args.work)
    rows = []
    plans = [("2", n) for n in _sizes(args.sizes)] + [("1", n) for n in _sizes(args.v1_sizes)]
    for layout, n in plans:
        start = time.monotonic()
        study = build_study(args.work / "studies", n, templates, layout=layout)
        built = time.monotonic() - start
        size, files = directory_size(study)
        codes = [("after", ROOT)]
        if layout == "1" and args.before_code is not None:
            codes.insert(0, ("before", args.before_code))
        for label, code in codes:
            result = measure_report(
                study, args.work / "out" / f"{study.name}-{label}", code=code, cap_mb=args.cap_mb
            )
            row = {
                "layout": layout,
                "runs": n,
                "code": label,
                "wall_s": round(result.wall_s, 1),
                "peak_mb": round(result.peak_mb),
                "bytes": size,
                "files": files,
                "build_s": round(built, 1),
                "note": result.note,
            }
            if layout == "2" and label == "after":
                for command in ("status", "resume"):
                    measured = measure_study_command(study, command, cap_mb=args.cap_mb)
                    row[f"{command}_s"] = round(measured.wall_s, 2)
                    row[f"{command}_mb"] = round(measured.peak_mb)
                    if measured.returncode:
                        row["note"] += f" {command}: {measured.note}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    _print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _print_table(rows: list[dict]) -> None:
    print("\n| layout | runs | code | wall (s) | peak RSS (MB) | study bytes | files | note |")
    print("|---|---:|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| v{r['layout']} | {r['runs']:,} | {r['code']} | {r['wall_s']:.1f} | {r['peak_mb']:,} "
            f"| {r['bytes'] / 1e9:.2f} GB | {r['files']:,} | {r['note']} |"
        )
    after = sorted(
        (r for r in rows if r["layout"] == "2" and not r["note"]), key=lambda r: r["runs"]
    )
    if len(after) >= 2:
        a, b = after[-2], after[-1]
        per_run_ms = 1000 * (b["wall_s"] - a["wall_s"]) / (b["runs"] - a["runs"])
        per_1000_mb = 1000 * (b["peak_mb"] - a["peak_mb"]) / (b["runs"] - a["runs"])
        print(
            f"\nslope (v2, {a['runs']:,} -> {b['runs']:,} runs): {per_run_ms:.1f} ms per run, "
            f"{per_1000_mb:+.1f} MB peak per 1,000 runs"
        )


if __name__ == "__main__":
    main()
