"""The whole report: formats, labels, partial studies, plots, HPO, CLI, no torch or ray."""

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from report_fixtures import Run, write_study

from cmcl.cli import cli
from cmcl.report.build import build_report

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SYN = "synthetic-epic"


def _grid():
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


def _journal(study: Path) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(study / "optuna.journal")))
    hpo = optuna.create_study(study_name="hpo", storage=storage, direction="maximize")
    space = {
        "lambda": optuna.distributions.FloatDistribution(0.1, 2.0, log=True),
        "tau": optuna.distributions.FloatDistribution(0.05, 0.5),
    }
    for i, (lam, tau) in enumerate([(0.2, 0.1), (1.0, 0.3), (1.5, 0.05), (0.5, 0.45), (1.2, 0.2)]):
        hpo.add_trial(
            optuna.trial.create_trial(
                params={"lambda": lam, "tau": tau}, distributions=space, value=40.0 + i + lam
            )
        )


BLOCKED_RUN = """
import json, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "ray"):
            raise ImportError(f"blocked import of {name}")
        return None

sys.meta_path.insert(0, Block())
from cmcl.report.build import build_report

dirs, out = json.loads(sys.argv[1]), sys.argv[2]
summary = build_report(dirs, out, formats=["md", "tex", "csv", "html"], max_tsne=1)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ray"))
print(json.dumps({"tables": summary.tables, "missing": summary.missing, "loaded": loaded}))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The full report, built in a subprocess where torch and ray cannot be imported."""
    root = tmp_path_factory.mktemp("studies")
    grid = write_study(root, "grid", _grid(), meta={"selection_metric": "source_val_acc"})
    hpo_runs = [
        Run("synthetic-ucf-hmdb", "U-H", "cmco", 0, 70.0 + i, settings={"method.tau": tau})
        for i, tau in enumerate((0.05, 0.2, 0.3))
    ]
    hpo = write_study(
        root, "hpo", hpo_runs, meta={"selection_metric": "snd", "objective": "per_pair"}
    )
    _journal(hpo)
    out = root / "report"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, json.dumps([str(grid), str(hpo)]), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads(done.stdout.strip().splitlines()[-1])


def test_report_runs_without_torch_and_ray(report):
    # The fixture's build ran with torch and ray unimportable, through every section
    # (tables, selection, sensitivity, Optuna, training curves, retrieval, t-SNE).
    out, summary = report
    assert summary["loaded"] == []
    assert (out / "index.md").exists()
    assert any(p.name.startswith("tsne_") for p in (out / "plots").iterdir())


def test_the_cli_imports_neither_torch_nor_ray():
    script = BLOCKED_RUN.split("from cmcl.report.build")[0] + textwrap.dedent(
        """
        from click.testing import CliRunner
        from cmcl.cli import cli
        result = CliRunner().invoke(cli, ["report", "--help"])
        assert result.exit_code == 0, result.output
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ray")))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def test_every_format_is_written(report):
    out, summary = report
    for name in ("index.md", "index.tex", "index.html"):
        assert (out / name).stat().st_size > 1000
    assert (out / "csv" / "table3_epic_synthetic-epic.csv").exists()
    assert (out / "csv" / "table2_ucf_hmdb_synthetic-ucf-hmdb.csv").exists()
    assert (out / "csv" / "selection_configurations.csv").exists()
    assert sorted(summary["tables"]) == [
        "table2_ucf_hmdb/synthetic-ucf-hmdb",
        "table3_epic/synthetic-epic",
        "table6_hyperparameters_epic/synthetic-epic",
    ]
    tex = (out / "index.tex").read_text()
    assert tex.startswith("\\documentclass") and tex.rstrip().endswith("\\end{document}")
    assert "±" not in tex and "$\\pm$" in tex and "Δ" not in tex
    html = (out / "index.html").read_text()
    assert "<table>" in html and 'src="plots/training_curves_synthetic-epic.svg"' in html


def test_csv_numbers_are_exact(report):
    out, _ = report
    table = pd.read_csv(out / "csv" / "table3_epic_synthetic-epic.csv")
    final = table[(table["method"] == "cmco")].set_index("column")
    # cmco (paper defaults): D2-D1 seeds 46, 48; D3-D1 seeds 56, 58. source_only 40, 41 and 50, 51.
    assert final.loc["D2-D1", ["mean", "n", "paper"]].tolist() == [47.0, 2, 49.5]
    assert final.loc["D2-D1", "std"] == pytest.approx(2**0.5)
    assert final.loc["D2-D1", "diff"] == pytest.approx(-2.5)
    assert final.loc["D2-D1", "gain_vs_source_only"] == pytest.approx(6.5)
    assert final.loc["D2-D1", "rgb_mean"] == 44.0 and final.loc["D2-D1", "flow_mean"] == 42.0
    assert final.loc["Mean", "mean"] == 52.0 and final.loc["Mean", "diff"] == pytest.approx(1.0)
    assert final.loc["Mean", "gain_vs_source_only"] == pytest.approx(6.5)
    assert final.loc["Mean", "pairs"] == "D2-D1 D3-D1"
    assert final.loc["Mean", "ci_low"] <= 52.0 <= final.loc["Mean", "ci_high"]
    assert set(table["rule"]) == {"last9"} and set(table["selection_metric"]) == {"source_val_acc"}
    t6 = pd.read_csv(out / "csv" / "table6_hyperparameters_epic_synthetic-epic.csv")
    t09 = t6[(t6["setting"] == "Ours (T=0.9)") & (t6["column"] == "Mean")].iloc[0]
    assert (t09["mean"], t09["paper"]) == (49.0, 49.6)


def test_every_table_says_rule_metric_and_synthetic(report):
    out, summary = report
    md = (out / "index.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("### Table")]
    assert len(headings) == len(summary["tables"]) == 3
    assert all(h.endswith("(synthetic data)") for h in headings)
    assert md.count("**Synthetic data — not comparable to the paper's numbers.**") == 3
    assert md.count("Rule: last9: mean of the last k=9 adaptation-stage evaluations") == 3
    assert md.count("Selection metric: source_val_acc") == 2
    assert md.count("Selection metric: snd") == 1
    assert "| Ours (final)      | 47.0 ± 1.4 (2) / 49.5 (Δ -2.5)" in md


def test_partial_study_lists_what_is_missing(report):
    out, summary = report
    md = (out / "index.md").read_text()
    assert summary["missing"] > 0
    assert "- AdaBN (method adabn): no runs" in md
    assert (
        "- Ours (final) (method cmco): no runs for D1→D2, D3→D2, D1→D3, D2→D3; "
        "1 unfinished run(s) not counted"
    ) in md
    assert "1 unfinished run(s)" in md and "grid/t-cmco-D1-D2-s0" in md
    assert "Values marked * are over fewer pairs than the paper's 6" in md


def test_plots_are_written_and_referenced(report):
    out, _ = report
    md = (out / "index.md").read_text()
    stems = [
        line.split("](")[1][: -len(".png)")] for line in md.splitlines() if line.startswith("![")
    ]
    kinds = {Path(s).name.split("_")[0] for s in stems}
    assert {"sensitivity", "training", "tsne", "hpo"} <= kinds
    assert any(s.endswith("_importances") for s in stems)
    assert any(s.endswith("_parallel") for s in stems)
    assert any(s.endswith("_history") for s in stems)
    for stem in stems:
        png = (out / f"{stem}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 5000, stem
        assert ET.parse(out / f"{stem}.svg").getroot().tag.endswith("svg"), stem


def test_selection_and_retrieval_sections(report):
    out, _ = report
    md = (out / "index.md").read_text()
    assert "## Selection metrics: what each criterion would pick" in md
    picks = pd.read_csv(out / "csv" / "selection_configurations.csv")
    d21 = picks[(picks["pair"] == "D2-D1") & (picks["method"] == "cmco")].iloc[0]
    assert d21["configurations"] == 3 and d21["oracle_acc"] == 47.0
    assert "## Cross-domain retrieval (the paper's Figure 6)" in md
    assert "retrieval accuracy" in md


def test_declared_tables_and_real_data(tmp_path):
    runs = [Run("epic", "D2-D1", m, 0, 45.0) for m in ("source_only", "cmco", "mm_sada")]
    study = write_study(tmp_path, "real", runs, meta={"tables": ["table5_sampling_epic"]})
    summary = build_report([study], tmp_path / "out", formats=["md"], max_tsne=0)
    assert summary.tables == ["table5_sampling_epic/epic"]
    md = (tmp_path / "out" / "index.md").read_text()
    assert "(real data)" in md and "not comparable to the paper's numbers" not in md
    assert not (tmp_path / "out" / "csv").exists() and "[CSV]" not in md


def test_a_study_declaring_no_tables_gets_every_table_it_fills(tmp_path):
    # `cmcl study run` writes `tables: []` for a study file without a `tables` key
    # (the quickstart): its runs still fill Table 3.
    runs = [Run(SYN, pair, "source_only", 0, 45.0) for pair in ("D2-D1", "D3-D1")]
    study = write_study(tmp_path, "quick", runs, meta={"tables": []})
    summary = build_report([study], tmp_path / "out", formats=["md"], max_tsne=0)
    assert summary.tables == ["table3_epic/synthetic-epic"]
    md = (tmp_path / "out" / "index.md").read_text()
    assert "No finished run fills any row" not in md


def test_regenerating_replaces_the_earlier_report_and_keeps_other_files(tmp_path):
    out = tmp_path / "out"
    first = write_study(tmp_path / "a", "s", [Run(SYN, "D2-D1", "cmco", 0, 45.0, features=True)])
    build_report([first], out, formats=["md", "tex", "csv"], max_tsne=1)
    old = {p.name for p in (out / "plots").iterdir()}
    assert any(name.startswith("tsne_s_") for name in old) and (out / "index.tex").exists()
    (out / "notes.txt").write_text("mine")
    # Another study (other run ids) into the same folder, Markdown only.
    second = write_study(tmp_path / "b", "t", [Run(SYN, "D3-D1", "cmco", 0, 47.0, features=True)])
    summary = build_report([second], out, formats=["md"], max_tsne=1)
    new = {p.name for p in (out / "plots").iterdir()}
    assert new and not any(name.startswith("tsne_s_") for name in new)
    assert not (out / "index.tex").exists() and not (out / "csv").exists()
    assert (out / "notes.txt").read_text() == "mine"
    written = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "notes.txt")
    assert summary.files == written and out / "index.md" in written
    assert any(p.parent.name == "plots" for p in written)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


def test_a_failing_report_leaves_the_earlier_one_intact(tmp_path, monkeypatch):
    import cmcl.report.build as build

    out = tmp_path / "out"
    study = write_study(tmp_path, "s", [Run(SYN, "D2-D1", "cmco", 0, 45.0)])
    build_report([study], out, formats=["md"], max_tsne=0)
    before = (out / "index.md").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(build, "training_curve_figures", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        build_report([study], out, formats=["md"], max_tsne=0)
    assert (out / "index.md").read_text() == before
    assert (out / "plots").is_dir()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


def test_best_rule_is_labelled_oracle(tmp_path):
    study = write_study(tmp_path, "s", [Run(SYN, "D2-D1", "cmco", 0, 45.0)])
    build_report([study], tmp_path / "out", formats=["csv", "md"], rule="best", max_tsne=0)
    md = (tmp_path / "out" / "index.md").read_text()
    assert "Rule: best: best adaptation-stage evaluation of each run (ORACLE" in md
    table = pd.read_csv(tmp_path / "out" / "csv" / "table3_epic_synthetic-epic.csv")
    assert table.loc[table["column"] == "D2-D1", "mean"].tolist() == [49.0]


def test_cli(tmp_path):
    study = write_study(tmp_path, "s", [Run(SYN, "D2-D1", "cmco", 0, 45.0)])
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "report",
            str(study),
            "--out",
            str(tmp_path / "r"),
            "--formats",
            "md,csv",
            "--max-tsne",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "table3_epic/synthetic-epic" in result.output
    assert (tmp_path / "r" / "index.md").exists() and not (tmp_path / "r" / "index.html").exists()
    bad = runner.invoke(cli, ["report", str(study), "--formats", "md,pdf"])
    assert bad.exit_code == 2 and "subset of md,tex,csv,html" in bad.output


def test_a_study_with_nothing_finished_yet(tmp_path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "spec.yaml").write_text("name: fresh\n")
    summary = build_report([fresh], tmp_path / "a", formats=["md"], max_tsne=0)
    assert summary.tables == []
    running = write_study(
        tmp_path,
        "running",
        [Run(SYN, "D2-D1", "cmco", 0, 45.0, finished=False)],
        meta={"tables": ["table3_epic"]},
    )
    summary = build_report([running], tmp_path / "b", formats=["md", "csv"], max_tsne=0)
    md = (tmp_path / "b" / "index.md").read_text()
    assert summary.tables == ["table3_epic/synthetic-epic"]
    assert "- Ours (final) (method cmco): no runs; 1 unfinished run(s) not counted" in md
