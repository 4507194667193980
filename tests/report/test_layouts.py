"""Results format version 2 (chunked datasets, local or object store) reads as version 1 does."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
from report_fixtures import Run, write_study
from report_fixtures_v2 import write_study_v2

import cmcl.report.feature_section as feature_section
from cmcl.filestore import FileStore
from cmcl.report.build import build_report, runs_with_accuracy
from cmcl.report.store import load_results
from cmcl.results import study_chunks

SYN = "synthetic-epic"
META = {"selection_metric": "source_val_acc"}
SPEC = {
    "benchmark": [SYN],
    "pairs": ["D2-D1", "D3-D1", "D1-D2"],
    "methods": ["source_only", "cmco"],
}


def _grid() -> list[Run]:
    runs = []
    for seed in (0, 1):
        for pair, base in (("D2-D1", 40.0), ("D3-D1", 50.0)):
            runs += [
                Run(SYN, pair, "source_only", seed, base + seed, features=seed == 0),
                Run(SYN, pair, "cmco", seed, base + 6 + 2 * seed, features=seed == 0),
                Run(SYN, pair, "cmco", seed, base + 3, settings={"method.lam": 1.0}),
                Run(SYN, pair, "cmco", seed, base + 4, settings={"method.threshold": 0.9}),
            ]
    return [*runs, Run(SYN, "D1-D2", "cmco", 0, 30.0, finished=False)]


def _report(study: Path | str, out: Path) -> dict[str, str]:
    build_report([study], out, formats=["md", "csv"], max_tsne=1, command="cmcl report grid")
    files = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}
    return {k: p.read_text() for k, p in files.items() if k.endswith((".md", ".csv"))}


@pytest.fixture(scope="module")
def v1_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("v1")
    return _report(write_study(root, "grid", _grid(), meta=META, spec=SPEC), root / "report")


def test_a_v2_study_gives_the_report_of_the_same_v1_study(tmp_path, v1_report):
    study = write_study_v2(tmp_path, "grid", _grid(), meta=META, spec=SPEC, flush_every=3)
    assert len(study_chunks(FileStore(study))) > 1
    v2 = _report(study, tmp_path / "report")
    assert sorted(v2) == sorted(v1_report)
    assert "csv/table3_epic_synthetic-epic.csv" in v2 and "csv/retrieval_accuracy.csv" in v2
    for name in v1_report:
        assert v2[name] == v1_report[name], name


def test_v2_runs_use_the_recorded_retrieval_and_read_few_feature_files(tmp_path, monkeypatch):
    runs = _grid()[:8]  # seed 0 of two pairs: 4 runs with features
    study = write_study_v2(tmp_path, "grid", runs, meta=META, spec=SPEC)
    read = []
    original = feature_section.read_features

    def counting(path, **kwargs):
        read.append(str(path))
        return original(path, **kwargs)

    monkeypatch.setattr(feature_section, "read_features", counting)
    build_report([study], tmp_path / "out", formats=["csv"], max_tsne=1)
    # Retrieval from the summaries; only the one representative run's file for its t-SNE.
    assert len(read) == 1
    table = pd.read_csv(tmp_path / "out" / "csv" / "retrieval_accuracy.csv")
    assert len(table) == 4
    # Without recorded numbers (an older worker), each run's file is read once for them.
    read.clear()
    older = write_study_v2(tmp_path / "older", "grid", runs, meta=META, spec=SPEC, extra=False)
    build_report([older], tmp_path / "out2", formats=["csv"], max_tsne=0)
    assert len(read) == 4
    assert pd.read_csv(tmp_path / "out2" / "csv" / "retrieval_accuracy.csv").equals(table)


def test_all_features_draws_every_run(tmp_path):
    runs = [Run(SYN, "D2-D1", "cmco", seed, 45.0, features=True) for seed in (0, 1)]
    study = write_study_v2(tmp_path, "grid", runs, meta=META, spec=SPEC)
    build_report([study], tmp_path / "one", formats=["md"], max_tsne=4)
    assert len(list((tmp_path / "one" / "plots").glob("tsne_*.png"))) == 1
    build_report([study], tmp_path / "all", formats=["md"], max_tsne=1, all_features=True)
    assert len(list((tmp_path / "all" / "plots").glob("tsne_*.png"))) == 2


def test_stopped_runs_are_unfinished_and_runs_carry_their_state(tmp_path):
    study = write_study_v2(tmp_path, "grid", _grid(), meta=META, spec=SPEC)
    results = load_results([study])
    runs = results.runs.set_index("run_id")
    assert results.studies[0].layout == "2"
    assert runs.loc["t-cmco-D1-D2-s0", "state"] == "stopped"
    assert not runs.loc["t-cmco-D1-D2-s0", "finished"]
    assert runs["finished"].sum() == 16 and runs["has_features"].sum() == 4
    assert runs.loc["t-cmco-D2-D1-s0", "run_dir"] == str(study / "runs" / "t-cmco-D2-D1-s0")
    assert runs.loc["t-cmco-D2-D1-s1", "wall_s"] == 10.0
    assert runs["retrieval_rgb"].notna().sum() == 4
    # The reported numbers are recomputed from the evaluations, under every rule.
    table = runs_with_accuracy(results, "best").set_index("run_id")
    assert table.loc["t-cmco-D2-D1-s0", "target_acc"] == 46.0 + 4
    assert len(results.evals) == 16 * 14 + 7
    assert set(results.curves({"grid/t-cmco-D2-D1-s0"})["run_id"]) == {"t-cmco-D2-D1-s0"}


def test_a_v1_study_and_its_v2_twin_read_side_by_side(tmp_path):
    old = write_study(tmp_path / "a", "old", _grid()[:4])
    new = write_study_v2(tmp_path / "b", "new", _grid()[:4])
    results = load_results([old, new])
    assert [s.layout for s in results.studies] == ["1", "2"]
    a = runs_with_accuracy(results, "last9").set_index("run_id")
    assert a.groupby("study")["target_acc"].apply(sorted).to_dict() == {
        "new": [40.0, 43.0, 44.0, 46.0],
        "old": [40.0, 43.0, 44.0, 46.0],
    }


def _object_store(monkeypatch, bucket: Path) -> None:
    """``mem://<path>`` resolves to ``bucket/<path>`` through pyarrow's filesystem API, as
    ``s3://`` does: nothing may open it as a local path."""
    original = FileStore.fs

    def fs(self):
        if not self.remote:
            return original.fget(self)
        if self._fs is None:
            assert self.root.startswith("mem://"), self.root
            self._fs = pafs.SubTreeFileSystem(str(bucket), pafs.LocalFileSystem())
            self._base = self.root.removeprefix("mem://")
        return self._fs

    monkeypatch.setattr(FileStore, "fs", property(fs))


def test_a_study_in_an_object_store(tmp_path, monkeypatch, v1_report):
    bucket = tmp_path / "bucket"
    write_study_v2(bucket / "prefix", "grid", _grid(), meta=META, spec=SPEC)
    (bucket / "prefix" / "grid" / "optuna.journal").write_text("")
    _object_store(monkeypatch, bucket)
    report = _report("mem://prefix/grid", tmp_path / "report")
    for name in v1_report:
        assert report[name] == v1_report[name], name
    results = load_results(["mem://prefix/"])  # one level down, as for local folders
    assert [s.name for s in results.studies] == ["grid"]
    assert results.studies[0].journal == "mem://prefix/grid/optuna.journal"
    assert results.runs["run_dir"].str.startswith("mem://prefix/grid/runs/").all()


def test_an_object_store_location_without_a_v2_study(tmp_path, monkeypatch):
    bucket = tmp_path / "bucket"
    write_study(bucket, "old", _grid()[:2])
    (bucket / "nothing").mkdir()
    _object_store(monkeypatch, bucket)
    with pytest.raises(ValueError, match="old: not a study directory in results format version 2"):
        load_results(["mem://old"])
    with pytest.raises(FileNotFoundError, match="mem://nothing: no study directory"):
        load_results(["mem://nothing"])


def test_chunks_are_read_in_parts_that_never_split_a_run(tmp_path, monkeypatch):
    import cmcl.report.chunked as chunked

    study = write_study_v2(tmp_path, "grid", _grid(), meta=META, spec=SPEC, flush_every=17)
    whole = runs_with_accuracy(load_results([study]), "last9").set_index("run_key")
    # 14 rows per finished run: parts of 10 rows end inside runs, which must be held back.
    monkeypatch.setattr(chunked, "EVAL_ROWS", 10)
    parts = runs_with_accuracy(load_results([study]), "last9").set_index("run_key")
    pd.testing.assert_frame_equal(parts, whole)
    assert set(parts["n_evals"]) == {14, 7}


def test_a_chunk_whose_runs_are_interleaved_is_read_whole(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    import cmcl.report.chunked as chunked

    study = write_study_v2(tmp_path, "grid", _grid()[:4], meta=META, spec=SPEC, flush_every=4)
    expected = runs_with_accuracy(load_results([study]), "last9").set_index("run_key")
    (chunk,) = (study / "results").glob("part-*.parquet")
    table = pq.read_table(chunk)
    pq.write_table(table.take(list(range(0, len(table), 2)) + list(range(1, len(table), 2))), chunk)
    monkeypatch.setattr(chunked, "EVAL_ROWS", 10)
    got = runs_with_accuracy(load_results([study]), "last9").set_index("run_key")
    pd.testing.assert_frame_equal(got[expected.columns], expected)
