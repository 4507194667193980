"""The results datasets: one schema for every benchmark, chunks, merges, a killed writer."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from cmcl.config import RunConfig
from cmcl.filestore import FileStore
from cmcl.results import (
    MERGE_FAN_IN,
    RESULTS_DIR,
    SCHEMA_VERSION,
    SUMMARIES_DIR,
    Chunk,
    ResultsWriter,
    RunIdentity,
    _to_bytes,
    chunks_in,
    ended_runs,
    evaluation_rows,
    evaluation_schema,
    live_chunks,
    read_dataset,
    study_chunks,
    summary_row,
)


def _history(classes: int, losses: tuple[str, ...], evaluations: int = 3) -> list[dict]:
    rows = []
    for k in range(1, evaluations + 1):
        row = {"stage": "adapt", "step": 10 * k, "global_step": 10 * k + 20, "lr": 0.01}
        row.update({"target_acc": 50.0 + k, "target_acc_rgb": 40.0, "target_acc_flow": 41.0})
        row.update({f"class_acc_{c}": float(c) for c in range(classes)})
        row.update({f"loss_{name}": 1.0 / k for name in losses})
        row["source_val_acc"] = math.nan
        rows.append(row)
    return rows


def _run(study: str, benchmark: str, pair: str, seed: int, **settings) -> tuple:
    config = RunConfig.from_overrides(
        {"data.benchmark": benchmark, "data.pair": pair, "train.seed": seed, **settings}
    )
    identity = RunIdentity(
        study=study,
        trial_id="t0000",
        run_id=f"t0000-{pair}-s{seed}",
        benchmark=benchmark,
        pair=pair,
        method=config.method.name,
        seed=seed,
    )
    return identity, config.flat()


def _flush(writer: ResultsWriter, runs: list[tuple], classes: int = 8, losses=("total",)) -> Chunk:
    evaluations, summaries = [], []
    for identity, settings in runs:
        evaluations += evaluation_rows(
            _history(classes, losses), identity=identity, settings=settings
        )
        summaries.append(
            summary_row(
                {"rule": "last9", "target_acc": 52.0, "best": {"target_acc": 53.0, "step": 30}},
                identity=identity,
                settings=settings,
                state="done",
                run_dir=f"runs/{identity.run_id}",
                has_features=True,
                has_weights=True,
            )
        )
    return writer.flush(evaluations, summaries)


def test_two_benchmarks_write_one_schema_that_reads_as_one_dataset(tmp_path):
    epic, ucf = FileStore(tmp_path / "a"), FileStore(tmp_path / "b")
    _flush(ResultsWriter(epic), [_run("a", "synthetic-epic", "D2-D1", 0)], classes=8)
    _flush(
        ResultsWriter(ucf),
        [_run("b", "synthetic-ucf-hmdb", "U-H", 0, **{"data.root": None})],
        classes=12,
        losses=("total", "mmd_rgb"),
    )
    files = [str(tmp_path / s / RESULTS_DIR / "part-000001-000001.parquet") for s in ("a", "b")]
    schemas = [pa.parquet.read_schema(f) for f in files]
    assert schemas[0] == schemas[1]
    assert schemas[0].metadata[b"cmcl.schema_version"] == SCHEMA_VERSION.encode()
    both = ds.dataset([ds.dataset(str(tmp_path / s / RESULTS_DIR)) for s in ("a", "b")])
    frame = both.to_table().to_pandas()
    assert sorted(frame["benchmark"].unique()) == ["synthetic-epic", "synthetic-ucf-hmdb"]
    assert {len(v) for v in frame["class_acc"]} == {8, 12}
    # A setting that is None everywhere is still a typed (string) column.
    assert both.schema.field("cfg.data.root").type == pa.string()
    concat = pd.concat([pd.read_parquet(f) for f in files])
    assert list(concat.columns) == evaluation_schema().names
    assert len(concat) == 6


def test_settings_outside_the_schema_are_refused(tmp_path):
    identity, settings = _run("a", "synthetic-epic", "D2-D1", 0)
    with pytest.raises(ValueError, match=r"not in the results schema: cfg\.train\.bogus"):
        evaluation_rows(_history(8, ()), identity=identity, settings={**settings, "train.bogus": 1})


def test_chunks_merge_into_few_files_and_every_run_stays_once(tmp_path):
    store = FileStore(tmp_path)
    writer = ResultsWriter(store)
    writer.recover()
    runs = [_run("a", "synthetic-epic", "D2-D1", seed) for seed in range(MERGE_FAN_IN**2 + 3)]
    for run in runs:
        _flush(writer, [run])
    chunks = study_chunks(store)
    assert len(chunks) < 2 * MERGE_FAN_IN
    assert chunks[0] == Chunk(1, MERGE_FAN_IN**2)
    assert len(ended_runs(store)) == len(runs)
    evals = read_dataset(store, RESULTS_DIR, columns=["run_id", "step"]).to_pandas()
    assert len(evals) == 3 * len(runs)
    assert not evals.duplicated().any()


def test_a_merge_killed_before_deleting_its_inputs_reads_each_run_once(tmp_path):
    store = FileStore(tmp_path)
    writer = ResultsWriter(store)
    runs = [_run("a", "synthetic-epic", "D2-D1", seed) for seed in range(MERGE_FAN_IN)]
    for run in runs[:-1]:
        _flush(writer, [run])
    # The last flush and the merge it triggers, but the merge stops before its deletes.
    writer.merge = lambda: None
    _flush(writer, [runs[-1]])
    inputs = study_chunks(store)
    merged = Chunk(1, MERGE_FAN_IN)
    for directory in (RESULTS_DIR, SUMMARIES_DIR):
        parts = [ResultsWriter(store).read_chunk(directory, c) for c in inputs]
        store.write_bytes(
            f"{directory}/{merged.name}",
            _to_bytes(pa.concat_tables(parts)),
        )
    assert study_chunks(store) == [merged]
    assert len(ended_runs(store)) == MERGE_FAN_IN
    removed = ResultsWriter(store).recover()
    assert len(removed) == 2 * MERGE_FAN_IN
    assert chunks_in(store, RESULTS_DIR) == [merged]


def test_half_a_flush_or_half_a_merge_is_ignored_and_removed(tmp_path):
    store = FileStore(tmp_path)
    writer = ResultsWriter(store)
    _flush(writer, [_run("a", "synthetic-epic", "D2-D1", 0)])
    # A flush killed between its two files: evaluations written, no summaries.
    store.write_bytes(f"{RESULTS_DIR}/part-000002-000002.parquet", b"half")
    # A merge killed after its evaluations chunk: it must not hide the chunk it covers.
    store.write_bytes(f"{RESULTS_DIR}/part-000001-000008.parquet", b"half")
    assert study_chunks(store) == [Chunk(1, 1)]
    assert ended_runs(store) == {"t0000-D2-D1-s0": "done"}
    again = ResultsWriter(store)
    assert sorted(again.recover()) == [
        f"{RESULTS_DIR}/part-000001-000008.parquet",
        f"{RESULTS_DIR}/part-000002-000002.parquet",
    ]
    assert again.next_flush == 9
    assert ended_runs(store) == {"t0000-D2-D1-s0": "done"}


def test_live_chunks_skip_covered_ones():
    small = [Chunk(i, i) for i in range(1, 9)]
    assert live_chunks([*small, Chunk(1, 8), Chunk(9, 9)]) == [Chunk(1, 8), Chunk(9, 9)]
    assert live_chunks(small) == small


def test_an_empty_study_reads_as_empty_tables_of_the_schema(tmp_path):
    store = FileStore(tmp_path)
    assert ended_runs(store) == {}
    empty = read_dataset(store, RESULTS_DIR, columns=["run_id", "target_acc"])
    assert empty.num_rows == 0 and empty.schema.names == ["run_id", "target_acc"]
