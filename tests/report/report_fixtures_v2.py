"""Study directories in results format version 2, from the same runs as report_fixtures.

:func:`write_study_v2` writes what a study driver writes (cmcl.results):
``results/`` and ``summaries/`` chunks flushed a few runs at a time (and merged
as they accumulate), ``runs/<run_id>/features.parquet`` with the retrieval
numbers in the summary's ``extra`` (as the run worker records them), and the
same ``study.json`` and ``spec.yaml`` as :func:`report_fixtures.write_study`,
so that both layouts of one set of runs can be compared.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from report_fixtures import Run, evals_frame, run_names, write_features

from cmcl.filestore import FileStore
from cmcl.report.retrieval import retrieval_metrics
from cmcl.results import ResultsWriter, RunIdentity, evaluation_rows, summary_row


def write_study_v2(
    root: Path,
    name: str,
    runs: Sequence[Run],
    *,
    meta: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    tune_id: str | None = None,
    flush_every: int = 2,
    extra: bool = True,
) -> Path:
    """Write the study ``name`` under ``root``; returns its directory.

    A run with ``finished=False`` ended ``stopped`` (by ASHA) after its few evaluations.
    ``extra``: record the retrieval numbers in the summaries (False: as an older worker).
    """
    store = FileStore(root / name)
    store.write_bytes("study.json", json.dumps({"name": name, **(meta or {})}).encode())
    store.write_bytes("spec.yaml", yaml.safe_dump({"name": name, **(spec or {})}).encode())
    writer = ResultsWriter(store)
    writer.recover()
    evaluations: list[dict] = []
    summaries: list[dict] = []
    for index, run in enumerate(runs):
        config = run.config()
        trial_id, run_id = run_names(run, index, tune_id)
        identity = RunIdentity(
            study=name,
            trial_id=trial_id,
            run_id=run_id,
            benchmark=run.benchmark,
            pair=run.pair,
            method=run.method,
            seed=run.seed,
        )
        settings = config.flat()
        history = evals_frame(run, config).to_dict("records")
        evaluations += evaluation_rows(history, identity=identity, settings=settings)
        numbers = None
        if run.features:
            local = store.local_path(f"runs/{run_id}")
            local.mkdir(parents=True, exist_ok=True)
            write_features(local / "features.parquet", run.seed)
            numbers = retrieval_metrics(local / "features.parquet") if extra else None
        summaries.append(
            summary_row(
                {"rule": "last9", "eval_last_k": 9, "target_acc": run.level, "wall_s": 10.0},
                identity=identity,
                settings=settings,
                state="done" if run.finished else "stopped",
                run_dir=f"runs/{run_id}",
                has_features=run.features,
                has_weights=False,
                extra=numbers,
            )
        )
        if len(summaries) == flush_every:
            writer.flush(evaluations, summaries)
            evaluations, summaries = [], []
    if summaries:
        writer.flush(evaluations, summaries)
    return store.local_path()
