"""A first run that leaves the checkout clean: stable report file names, the closing
line's file count, and planned-but-missing cells told apart from unplanned ones."""

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from report_fixtures import Run, write_study

from cmcl.cli import cli
from cmcl.report.build import build_report
from cmcl.report.names import run_file_names
from cmcl.report.store import load_results

SYN = "synthetic-epic"
PLAN = {"benchmark": [SYN], "pairs": ["D2-D1"], "methods": ["source_only", "cmco", "mmd"]}


def _files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


def _study(root: Path, tune_id: str, runs: list[Run], spec=PLAN) -> Path:
    return write_study(root, "quick", runs, spec=spec, tune_id=tune_id, meta={"tables": []})


def _runs() -> list[Run]:
    return [
        Run(SYN, "D2-D1", "source_only", 0, 40.0, features=True),
        Run(SYN, "D2-D1", "cmco", 0, 46.0, features=True),
        Run(SYN, "D2-D1", "mmd", 0, 42.0, features=True),
    ]


def test_two_studies_of_one_file_write_the_same_file_names(tmp_path):
    out = tmp_path / "out"
    first = _study(tmp_path / "a", "69f94", _runs())
    build_report([first], out, formats=["md", "csv"], max_tsne=3)
    before = _files(out)
    second = _study(tmp_path / "b", "1c0de", _runs())
    build_report([second], out, formats=["md", "csv"], max_tsne=3)
    after = _files(out)
    assert after == before
    assert {"plots/tsne_quick_cmco-D2-D1-s0.png", "csv/retrieval_quick_mmd-D2-D1-s0.csv"} <= after
    assert not [name for name in after if "69f94" in name or "1c0de" in name]
    md = (out / "index.md").read_text()
    assert "69f94" not in md and "plots/tsne_quick_source_only-D2-D1-s0.png" in md


def test_configurations_of_one_method_get_a_stable_settings_hash(tmp_path):
    # An Optuna study: one method, one pair, one seed, many configurations.
    lams = (0.5, 1.0, 1.5)

    def names(tune_id: str) -> dict[str, str]:
        runs = [Run(SYN, "D2-D1", "cmco", 0, 45.0, settings={"method.lam": x}) for x in lams]
        study = _study(tmp_path / tune_id, tune_id, runs)
        results = load_results([study])
        by_lam = results.runs.set_index("run_key")["cfg.method.lam"].to_dict()
        return {by_lam[k]: v for k, v in run_file_names(results.runs).items()}

    first, second = names("aaaaa"), names("bbbbb")
    assert first == second
    assert len(set(first.values())) == len(lams)
    assert all(v.startswith("quick_cmco-D2-D1-s0-c") and len(v) == 28 for v in first.values())


def test_identical_configurations_fall_back_to_the_trial_number(tmp_path):
    runs = [Run(SYN, "D2-D1", "cmco", 0, 45.0), Run(SYN, "D2-D1", "cmco", 0, 47.0)]
    results = load_results([_study(tmp_path, "abcde", runs)])
    names = run_file_names(results.runs)
    assert sorted(n.rsplit("-", 1)[1] for n in names.values()) == ["t00000", "t00001"]
    assert len({n.rsplit("-", 1)[0] for n in names.values()}) == 1


def test_indistinguishable_runs_are_an_error_not_an_overwrite(tmp_path):
    runs = load_results([_study(tmp_path, "abcde", _runs()[:1])]).runs
    twice = pd.concat([runs.assign(run_key="quick/x"), runs.assign(run_key="quick/y")])
    with pytest.raises(ValueError, match="quick/x and quick/y would both write"):
        run_file_names(twice.assign(trial_id="same"))


def test_the_closing_line_counts_every_file_written(tmp_path):
    study = _study(tmp_path, "69f94", _runs())
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", str(study), "--out", str(out), "--max-tsne", "2"])
    assert result.exit_code == 0, result.output
    written = _files(out)
    assert any(name.startswith("plots/tsne_") for name in written)
    assert f"wrote {out}/ ({len(written)} files)" in result.output


def test_only_planned_cells_without_a_finished_run_are_warnings(tmp_path):
    # mmd was planned on D2-D1 but its run failed; AdaBN and the other pairs were never planned.
    study = _study(tmp_path, "69f94", _runs()[:2])
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", str(study), "--out", str(out), "--max-tsne", "0"])
    assert result.exit_code == 0, result.output
    assert "warning: 1 planned row/pair line(s) without a finished run" in result.output
    md = (out / "index.md").read_text()
    missing = md.split("**Missing** (synthetic-epic)")[1].split("\n\n")[1]
    assert missing.splitlines() == ["- MMD (method mmd): no runs for D2→D1"]
    unplanned = next(line for line in md.splitlines() if line.startswith("Not planned"))
    assert "; AdaBN (method adabn); " in unplanned
    assert "MMD (method mmd) on D3→D1, D1→D2, D3→D2, D1→D3, D2→D3;" in unplanned
    assert "Ours (final) (method cmco) on D3→D1, D1→D2, D3→D2, D1→D3, D2→D3" in unplanned


def test_a_complete_study_has_no_warning(tmp_path):
    summary = build_report([_study(tmp_path, "69f94", _runs())], tmp_path / "r", max_tsne=0)
    assert summary.missing == 0 and summary.unplanned > 0


def test_planned_settings_decide_ablation_rows(tmp_path):
    # Table 5: a study that plans only synchronised windows did not plan the independent rows.
    spec = {
        "benchmark": [SYN],
        "pairs": ["D2-D1"],
        "methods": ["cmco", "source_only"],
        "settings": {"data.sampling": "synchronised"},
        "search": {"method.lam": {"values": [1.0, 1.25]}},
    }
    runs = [
        Run(SYN, "D2-D1", "source_only", 0, 40.0, settings={"data.sampling": "synchronised"}),
    ]
    study = write_study(
        tmp_path, "sync", runs, spec=spec, meta={"tables": ["table5_sampling_epic"]}
    )
    summary = build_report([study], tmp_path / "r", max_tsne=0)
    md = (tmp_path / "r" / "index.md").read_text()
    missing = md.split("**Missing** (synthetic-epic)")[1].split("\n\n")[1]
    assert "sampling=synchronised" in missing and "sampling=independent" not in missing
    assert summary.missing == len(missing.splitlines())


def test_a_variant_and_an_unsafe_study_name_are_part_of_the_name():
    runs = pd.DataFrame(
        [
            {"run_key": "single runs/a", "study": "single runs", "method": "cmco", "pair": "D2-D1"}
            | {"seed": 1, "variant": "lambda=1.0", "trial_id": "", "cfg.method.lam": 1.0},
            {"run_key": "single runs/b", "study": "single runs", "method": "cmco", "pair": "D2-D1"}
            | {"seed": 1, "variant": None, "trial_id": "", "cfg.method.lam": 1.25},
        ]
    )
    assert run_file_names(runs) == {
        "single runs/a": "single_runs_cmco_lambda=1.0-D2-D1-s1",
        "single runs/b": "single_runs_cmco-D2-D1-s1",
    }
