"""The report's Fidelity section: rank correlations, regret, and the table from two stages."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from cmcl.config import RunConfig
from cmcl.filestore import FileStore
from cmcl.report.document import Table, Text
from cmcl.report.fidelity import fidelity_blocks, fidelity_groups, kendall, regret, spearman
from cmcl.results import ResultsWriter, RunIdentity, summary_row


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]),
        ([5.0, 1.0, 3.0, 3.0, 2.0], [4.0, 2.0, 2.0, 5.0, 1.0]),
        ([0.3, 0.1, 0.7], [0.9, 0.8, 0.2]),
    ],
)
def test_rank_correlations_equal_scipys(a, b):
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert kendall(a, b) == pytest.approx(stats.kendalltau(a, b).statistic)


def test_too_few_points_or_a_constant_side_give_no_correlation():
    assert math.isnan(spearman([1.0, 2.0], [2.0, 1.0]))
    assert math.isnan(kendall([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_regret_of_trusting_the_screens_top_k():
    rows = [
        {"screen": 60.0, "confirm": 40.0},
        {"screen": 55.0, "confirm": 48.0},
        {"screen": 50.0, "confirm": 45.0},
    ]
    assert regret(rows, 1, mode="max") == pytest.approx(8.0)
    assert regret(rows, 2, mode="max") == 0.0
    # Lower is better: the screen's best is the lowest.
    assert regret(rows, 1, mode="min") == pytest.approx(5.0)


def _stage(root: FileStore, name: str, rows: list[tuple]) -> None:
    """A stage directory with one summary row per (trial, variant, method, pair, seed, value)."""
    store = root.child(name)
    summaries = []
    for trial, variant, method, pair, seed, value in rows:
        config = RunConfig.from_overrides({"data.pair": pair, "method.name": method})
        identity = RunIdentity(
            study=name,
            trial_id=trial,
            run_id=f"{trial}-{pair}-s{seed}",
            benchmark="synthetic-epic",
            pair=pair,
            method=method,
            seed=seed,
            variant=variant,
        )
        summaries.append(
            summary_row(
                {"target_acc": value},
                identity=identity,
                settings=config.flat(),
                state="done",
                run_dir=f"runs/{identity.run_id}",
                has_features=False,
                has_weights=False,
            )
        )
    ResultsWriter(store).flush([], summaries)
    store.write_json("study.json", {"name": name})


def test_the_section_puts_each_configuration_of_both_stages_side_by_side(tmp_path):
    root = FileStore(tmp_path / "two")
    _stage(
        root,
        "two-screen",
        [
            ("t0000", "", "cmco", "D2-D1", 0, 50.0),
            ("t0000", "", "cmco", "D2-D1", 1, 52.0),
            ("t0001", "", "cmco", "D2-D1", 0, 58.0),
            ("t0001", "", "cmco", "D2-D1", 1, 58.0),
            ("t0002", "", "cmco", "D2-D1", 0, 55.0),
            ("t0002", "", "cmco", "D2-D1", 1, 55.0),
        ],
    )
    _stage(
        root,
        "two-confirm",
        [
            ("t0000", "screen-t0000", "cmco", "D2-D1", 0, 30.0),
            ("t0001", "screen-t0001", "cmco", "D2-D1", 0, 35.0),
            ("t0002", "screen-t0002", "cmco", "D2-D1", 0, 40.0),
            ("t0003", "", "source_only", "D2-D1", 0, 25.0),
        ],
    )
    meta = {
        "name": "two",
        "objective": "per_pair",
        "selection_metric": "target_acc",
        "fidelity": {"stages": ["two-screen", "two-confirm"]},
    }
    groups, metric, mode = fidelity_groups(str(tmp_path / "two"), meta)
    (group,) = groups
    assert (metric, mode, group.label) == ("target_acc", "max", "D2→D1")
    assert {r["trial"]: (r["screen"], r["confirm"]) for r in group.rows} == {
        "t0000": (51.0, 30.0),
        "t0001": (58.0, 35.0),
        "t0002": (55.0, 40.0),
    }
    assert group.baselines == {"source_only": 25.0}
    blocks = fidelity_blocks(str(tmp_path / "two"), meta)
    table = next(b for b in blocks if isinstance(b, Table))
    assert [row[0] for row in table.rows] == ["t0001", "t0002", "t0000", "source_only"]
    facts = [b.text for b in blocks if isinstance(b, Text)][-1]
    assert "3 configuration(s) in both stages" in facts
    assert f"Spearman {spearman([51.0, 58.0, 55.0], [30.0, 35.0, 40.0]):.2f}" in facts
    assert "regret at 1 5.00" in facts and "regret at 2 0.00" in facts
