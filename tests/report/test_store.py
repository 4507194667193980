import json

import pandas as pd
import pytest
from report_fixtures import Run, evals_frame, write_run_dir, write_study

from cmcl.report.store import SINGLE_RUNS, flatten_config, load_results


def _runs(**extra):
    return [
        Run("synthetic-epic", "D2-D1", "cmco", 0, 50.0, **extra),
        Run("synthetic-epic", "D2-D1", "cmco", 1, 52.0),
        Run("synthetic-epic", "D3-D1", "source_only", 0, 40.0),
    ]


def test_a_study_directory(tmp_path):
    study = write_study(
        tmp_path,
        "grid",
        [*_runs(features=True), Run("synthetic-epic", "D1-D2", "cmco", 0, 45.0, finished=False)],
        meta={"selection_metric": "snd", "objective": "mean", "tables": ["table3_epic"]},
    )
    results = load_results([study])
    assert [s.name for s in results.studies] == ["grid"]
    info = results.studies[0]
    assert (info.selection_metric, info.objective, info.tables) == ("snd", "mean", ("table3_epic",))
    assert info.spec == "name: grid\n"
    assert info.journal is None
    runs = results.runs.set_index("run_id")
    assert len(runs) == 4
    assert runs["finished"].to_dict() == {
        "t-cmco-D1-D2-s0": False,
        "t-cmco-D2-D1-s0": True,
        "t-cmco-D2-D1-s1": True,
        "t-source_only-D3-D1-s0": True,
    }
    assert runs.loc["t-cmco-D2-D1-s0", "has_features"]
    assert not runs.loc["t-cmco-D2-D1-s1", "has_features"]
    assert runs.loc["t-cmco-D2-D1-s1", "cfg.method.lam"] == 1.25
    assert runs.loc["t-cmco-D2-D1-s1", "wall_s"] == 10.0
    # 2 warm-up + 12 adaptation evaluations per finished run, 2 + 5 for the unfinished one.
    assert len(results.evals) == 3 * 14 + 7
    assert set(results.evals["run_key"]) == {f"grid/{r}" for r in runs.index}
    assert results.problems == []


def test_finished_from_steps_when_run_directories_are_absent(tmp_path):
    runs = [*_runs(), Run("synthetic-epic", "D1-D2", "cmco", 0, 45.0, finished=False)]
    study = write_study(tmp_path, "bare", runs, run_dirs=False)
    results = load_results([study])
    assert results.runs["finished"].sum() == 3
    assert results.runs["run_dir"].isna().all()


def test_bare_run_directories_pool_as_one_pseudo_study(tmp_path):
    for run in _runs():
        write_run_dir(tmp_path / "out" / run.run_id, run)
    results = load_results(
        [tmp_path / "out" / _runs()[0].run_id, tmp_path / "out" / _runs()[1].run_id]
    )
    assert [s.name for s in results.studies] == [SINGLE_RUNS]
    assert sorted(results.runs["seed"]) == [0, 1]
    assert set(results.runs["method"]) == {"cmco"}
    assert set(results.runs["pair"]) == {"D2-D1"}
    # A folder of run directories is read one level down.
    assert len(load_results([tmp_path / "out"]).runs) == 3


def test_several_studies_and_a_parent_folder(tmp_path):
    write_study(tmp_path / "all", "a", _runs())
    write_study(tmp_path / "all", "b", _runs()[:1])
    results = load_results([tmp_path / "all"])
    assert sorted(s.name for s in results.studies) == ["a", "b"]
    assert results.runs.groupby("study").size().to_dict() == {"a": 3, "b": 1}


def test_partial_and_broken_files_become_problems(tmp_path):
    study = write_study(tmp_path, "broken", _runs())
    (study / "results" / "evals-zzz.parquet").write_bytes(b"PAR1 truncated")
    (study / "study.json").write_text("{not json")
    results = load_results([study])
    assert len(results.runs) == 3
    assert len(results.problems) == 2
    assert any("evals-zzz.parquet" in p and "unreadable Parquet" in p for p in results.problems)
    assert any("study.json" in p for p in results.problems)
    assert results.studies[0].name == "broken"


def test_an_empty_study_and_a_runs_dir_without_results(tmp_path):
    empty = tmp_path / "fresh"
    empty.mkdir()
    (empty / "spec.yaml").write_text("name: fresh\n")
    results = load_results([empty])
    assert results.runs.empty and results.evals.empty
    # A run directory inside runs/ whose rows never reached results/ is still read.
    study = write_study(tmp_path, "late", [])
    write_run_dir(study / "runs" / "t-x", _runs()[0])
    assert load_results([study]).runs["run_id"].tolist() == ["t-x"]


def test_resumed_runs_keep_the_later_row_of_a_repeated_step(tmp_path):
    run = _runs()[0]
    path = tmp_path / "run"
    write_run_dir(path, run)
    frame = evals_frame(run)
    repeated = frame.iloc[[-1]].assign(target_acc=99.0)
    pd.concat([frame, repeated]).to_parquet(path / "metrics.parquet")
    evals = load_results([path]).evals
    assert len(evals) == len(frame)
    assert evals["target_acc"].iloc[-1] == 99.0


def test_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_results([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no study"):
        load_results([tmp_path / "empty"])


def test_config_from_summary_when_config_json_is_missing(tmp_path):
    run = _runs()[0]
    write_run_dir(tmp_path / "r", run)
    (tmp_path / "r" / "config.json").unlink()
    summary = {"config": {"data.pair": "D3-D2", "data.benchmark": "epic", "method.name": "mmd"}}
    (tmp_path / "r" / "summary.json").write_text(json.dumps(summary))
    runs = load_results([tmp_path / "r"]).runs
    assert runs[["benchmark", "pair", "method"]].iloc[0].tolist() == ["epic", "D3-D2", "mmd"]


def test_flatten_config():
    assert flatten_config({"data": {"pair": "D2-D1"}, "out": None}) == {
        "cfg.data.pair": "D2-D1",
        "cfg.out": None,
    }
    assert flatten_config({"method.lam": 1.0}) == {"cfg.method.lam": 1.0}
