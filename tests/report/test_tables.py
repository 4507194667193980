"""Paper tables from fixture stores with known numbers (see report_fixtures)."""

import math
from pathlib import Path

import pytest
from report_fixtures import Run, write_study

from cmcl.report.build import runs_with_accuracy
from cmcl.report.layout import cell_text
from cmcl.report.paper import paper_tables
from cmcl.report.store import load_results
from cmcl.report.tables import fill_table

BENCH = "synthetic-epic"


def _fill(
    tmp_path, runs, key, *, metric="target_acc", mean_objective=False, rule="last9", name="s"
):
    """Fill table ``key`` from ``runs`` (a list of Run, or an already written study directory)."""
    study = runs if isinstance(runs, Path) else write_study(tmp_path, name, runs)
    table = runs_with_accuracy(load_results([study]), rule)
    return fill_table(
        paper_tables()[key],
        BENCH,
        True,
        table[table["finished"]],
        metric=metric,
        mean_objective=mean_objective,
        unfinished=table[~table["finished"]],
    )


def _row(result, setting, **required):
    for row in result.rows:
        if row.row.setting == setting and all(
            dict(row.row.required).get(k) == v for k, v in required.items()
        ):
            return row
    raise AssertionError(f"no row {setting} {required}")


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory):
    """A written study, shared by this module's tests (they only read it)."""
    runs = []
    for seed, (so, final, lam1) in enumerate([(40, 45, 44), (41, 47, 44), (42, 49, 44)]):
        runs += [
            Run(BENCH, "D2-D1", "source_only", seed, so),
            Run(BENCH, "D2-D1", "cmco", seed, final),
            Run(BENCH, "D2-D1", "cmco", seed, lam1, settings={"method.lam": 1.0}),
        ]
    runs += [Run(BENCH, "D3-D1", "source_only", s, 50) for s in (0, 1)]
    runs += [
        Run(BENCH, "D3-D1", "cmco", 0, 55),
        Run(BENCH, "D3-D1", "cmco", 0, 53, settings={"method.lam": 1.0}),
    ]
    runs += [Run(BENCH, "D1-D2", "cmco", 0, 10, finished=False)]
    return write_study(tmp_path_factory.mktemp("grid"), "s", runs)


def test_table3_cells_means_and_gains(tmp_path, grid_runs):
    result = _fill(tmp_path, grid_runs, "table3_epic")
    source = _row(result, "Source-only")
    assert (
        source.cells["D2-D1"].fused.mean,
        source.cells["D2-D1"].fused.std,
        source.cells["D2-D1"].fused.n,
    ) == (41.0, 1.0, 3)
    assert (
        source.cells["D3-D1"].fused.mean,
        source.cells["D3-D1"].fused.std,
        source.cells["D3-D1"].fused.n,
    ) == (50.0, 0.0, 2)
    assert source.cells["Mean"].fused.mean == 45.5 and source.cells["Mean"].diff == 0.0
    assert "Gain" not in source.cells

    final = _row(result, "Ours (final)")
    d21, d31 = final.cells["D2-D1"], final.cells["D3-D1"]
    assert (d21.fused.mean, d21.fused.std, d21.fused.n) == (47.0, 2.0, 3)
    assert (d21.rgb.mean, d21.flow.mean) == (44.0, 42.0)
    assert d21.paper == 49.5 and d21.diff == pytest.approx(-2.5)
    assert d21.gain == pytest.approx(6.0)
    assert (d31.fused.mean, d31.fused.n) == (55.0, 1) and math.isnan(d31.fused.std)
    assert d31.diff == pytest.approx(3.5) and d31.gain == pytest.approx(5.0)
    mean = final.cells["Mean"]
    assert mean.fused.mean == 51.0 and mean.paper == 51.0 and mean.diff == 0.0
    assert mean.pairs == ("D2-D1", "D3-D1") and mean.fused.n == 4
    assert mean.ci[0] <= 51.0 <= mean.ci[1]
    gain = final.cells["Gain"]
    assert gain.fused.mean == pytest.approx(5.5) and gain.paper == 5.5
    # lambda=1.0 runs are also cmco; the row's unnamed settings take the paper's defaults.
    assert d21.choice == "lambda=1.25 (paper defaults of 2 configurations)"


def test_partial_tables_say_what_is_missing(tmp_path, grid_runs):
    result = _fill(tmp_path, grid_runs, "table3_epic")
    final = _row(result, "Ours (final)")
    assert final.missing_pairs == ("D1-D2", "D3-D2", "D1-D3", "D2-D3")
    assert (
        "Ours (final) (method cmco): no runs for D1→D2, D3→D2, D1→D3, D2→D3; "
        "1 unfinished run(s) not counted"
    ) in result.missing
    assert "AdaBN (method adabn): no runs" in result.missing
    assert _row(result, "AdaBN").cells == {}
    assert [r.row.setting for r in result.filled_rows()] == ["Source-only", "Ours (final)"]
    assert result.worth_showing()
    assert cell_text(result, _row(result, "AdaBN"), "D2-D1") == "— / 44.6"
    assert cell_text(result, final, "D2-D1") == "47.0 ± 2.0 (3) / 49.5 (Δ -2.5)"
    assert cell_text(result, final, "D3-D1") == "55.0 (1) / 51.5 (Δ +3.5)"
    ci = final.cells["Mean"].ci
    assert cell_text(result, final, "Mean") == f"51.0 [{ci[0]:.1f}, {ci[1]:.1f}]* / 51.0 (Δ +0.0)"
    assert cell_text(result, final, "Gain").endswith("* / +5.5 (Δ +0.0)")


def test_table6_rows_follow_lambda(tmp_path, grid_runs):
    result = _fill(tmp_path, grid_runs, "table6_hyperparameters_epic")
    lam1 = _row(result, "Ours (lambda=1.0)")
    assert lam1.cells["Mean"].fused.mean == pytest.approx((44 + 53) / 2)
    assert lam1.cells["Mean"].paper == 50.1
    assert lam1.cells["Mean"].diff == pytest.approx(48.5 - 50.1)
    assert lam1.cells["Gain"].fused.mean == pytest.approx(3.0)
    assert _row(result, "Ours (lambda=1.25, T=0.8)").cells["Mean"].fused.mean == 51.0
    assert _row(result, "Ours (lambda=1.5)").cells == {}
    assert result.worth_showing()


def test_table5_gain_via_sampling_and_matching_baselines(tmp_path):
    sync = {"data.sampling": "synchronised"}
    runs = [
        Run(BENCH, "D2-D1", "mm_sada", 0, 40),
        Run(BENCH, "D2-D1", "mm_sada", 1, 42),
        Run(BENCH, "D2-D1", "mm_sada", 0, 38, settings=sync),
        Run(BENCH, "D2-D1", "cmco", 0, 45),
        Run(BENCH, "D2-D1", "cmco", 0, 44, settings=sync),
        Run(BENCH, "D2-D1", "source_only", 0, 30),
        Run(BENCH, "D2-D1", "source_only", 0, 29, settings=sync),
    ]
    result = _fill(tmp_path, runs, "table5_sampling_epic")
    mm_ind = _row(result, "MM-SADA", **{"cfg.data.sampling": "independent"})
    mm_sync = _row(result, "MM-SADA", **{"cfg.data.sampling": "synchronised"})
    ours_ind = _row(result, "Ours", **{"cfg.data.sampling": "independent"})
    ours_sync = _row(result, "Ours", **{"cfg.data.sampling": "synchronised"})
    assert mm_ind.cells["Mean"].fused.mean == 41.0 and mm_sync.cells["Mean"].fused.mean == 38.0
    assert mm_ind.cells["Gain via sampling"].fused.mean == pytest.approx(3.0)
    assert mm_ind.cells["Gain via sampling"].paper == 0.5
    assert ours_ind.cells["Gain via sampling"].fused.mean == pytest.approx(1.0)
    assert "Gain via sampling" not in ours_sync.cells
    # Each row's source-only baseline has the row's sampling: 45-30 and 44-29.
    assert ours_ind.cells["D2-D1"].gain == pytest.approx(15.0)
    assert ours_sync.cells["D2-D1"].gain == pytest.approx(15.0)
    assert result.notes == []


def test_table7_projection_head_rows(tmp_path):
    runs = [
        Run(BENCH, "D2-D1", "cmco_modality", 0, 43),
        Run(BENCH, "D2-D1", "cmco_modality", 0, 42, settings={"method.head_in_modality": False}),
        Run(BENCH, "D2-D1", "cmco", 0, 47),
        Run(BENCH, "D2-D1", "cmco", 0, 46, settings={"method.head_in_domain": True}),
    ]
    result = _fill(tmp_path, runs, "table7_projection_head_epic")
    assert [r.cells["Mean"].fused.mean for r in result.rows] == [43.0, 42.0, 46.0, 47.0]
    # no source-only run at all: gains are absent and a note says so
    assert all("Gain" not in r.cells for r in result.rows)
    assert any("no source-only run" in n for n in result.notes)


def test_the_selection_metric_breaks_ties_without_paper_defaults(tmp_path):
    runs = [
        Run(BENCH, "D2-D1", "cmco", 0, 50, settings={"method.tau": 0.05}, source_val=60),
        Run(BENCH, "D2-D1", "cmco", 0, 48, settings={"method.tau": 0.2}, source_val=70),
    ]
    by_source = _fill(tmp_path / "a", runs, "table3_epic", metric="source_val_acc")
    cell = _row(by_source, "Ours (final)").cells["D2-D1"]
    assert cell.fused.mean == 48.0
    assert cell.choice == "tau=0.2 (best source_val_acc of 2 configurations)"
    oracle = _fill(tmp_path / "b", runs, "table3_epic", metric="target_acc")
    assert _row(oracle, "Ours (final)").cells["D2-D1"].fused.mean == 50.0


def test_mean_objective_chooses_one_configuration_for_all_pairs(tmp_path):
    runs = [
        Run(BENCH, "D2-D1", "cmco", 0, 50, settings={"method.tau": 0.05}, source_val=60),
        Run(BENCH, "D3-D1", "cmco", 0, 40, settings={"method.tau": 0.05}, source_val=80),
        Run(BENCH, "D2-D1", "cmco", 0, 48, settings={"method.tau": 0.2}, source_val=70),
        Run(BENCH, "D3-D1", "cmco", 0, 42, settings={"method.tau": 0.2}, source_val=65),
    ]
    per_pair = _row(
        _fill(tmp_path / "a", runs, "table3_epic", metric="source_val_acc"), "Ours (final)"
    )
    assert (per_pair.cells["D2-D1"].fused.mean, per_pair.cells["D3-D1"].fused.mean) == (48.0, 40.0)
    mean = _row(
        _fill(tmp_path / "b", runs, "table3_epic", metric="source_val_acc", mean_objective=True),
        "Ours (final)",
    )
    assert (mean.cells["D2-D1"].fused.mean, mean.cells["D3-D1"].fused.mean) == (50.0, 40.0)


@pytest.mark.parametrize(("rule", "expected"), [("best", 51.0), ("final", 47.0)])
def test_rules_reach_the_tables(tmp_path, grid_runs, rule, expected):
    result = _fill(tmp_path, grid_runs, "table3_epic", rule=rule)
    assert _row(result, "Ours (final)").cells["D2-D1"].fused.mean == expected


def test_table2_keeps_other_papers_rows(tmp_path):
    runs = [
        Run("synthetic-ucf-hmdb", "U-H", "cmco", 0, 80),
        Run("synthetic-ucf-hmdb", "U-H", "source_only", 0, 70),
    ]
    results = load_results([write_study(tmp_path, "u", runs)])
    table = runs_with_accuracy(results, "last9")
    result = fill_table(
        paper_tables()["table2_ucf_hmdb"], "synthetic-ucf-hmdb", True, table, metric="target_acc"
    )
    ta3n = _row(result, "TA3N")
    assert cell_text(result, ta3n, "U-H") == "n/a / 81.4"
    final = _row(result, "Ours (final)")
    assert final.cells["U-H"].gain == 10.0
    assert final.cells["Mean"].paper is None
    assert "Ours (final) (method cmco): no runs for H→U" in result.missing
    assert not any("TA3N" in m for m in result.missing)


def test_ablation_tables_are_worth_showing_only_when_they_compare_something(tmp_path):
    defaults_only = [
        Run(BENCH, "D2-D1", "cmco_modality", 0, 43),
        Run(BENCH, "D2-D1", "cmco", 0, 47),
        Run(BENCH, "D2-D1", "source_only", 0, 40),
    ]
    t7 = _fill(tmp_path / "a", defaults_only, "table7_projection_head_epic")
    assert len(t7.filled_rows()) == 2 and not t7.worth_showing()
    t8 = _fill(
        tmp_path / "b",
        [*defaults_only, Run(BENCH, "D2-D1", "adv_adv", 0, 45)],
        "table8_alignment_epic",
    )
    assert t8.worth_showing()
    assert _row(t8, "Adv.").cells["D2-D1"].gain == 5.0
