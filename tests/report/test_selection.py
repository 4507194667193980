import pytest
from report_fixtures import Run, write_study

from cmcl.report.build import runs_with_accuracy
from cmcl.report.selection import checkpoint_picks, configuration_picks, display_rows
from cmcl.report.store import load_results

BENCH = "synthetic-epic"


@pytest.fixture
def study(tmp_path):
    runs = [
        # lambda=1.0 has the best target accuracy; the criteria prefer other configurations.
        Run(
            BENCH,
            "D2-D1",
            "cmco",
            0,
            50,
            settings={"method.lam": 1.0},
            source_val=60,
            entropy=0.9,
            snd=4,
        ),
        Run(
            BENCH,
            "D2-D1",
            "cmco",
            1,
            52,
            settings={"method.lam": 1.0},
            source_val=60,
            entropy=0.9,
            snd=4,
        ),
        Run(
            BENCH,
            "D2-D1",
            "cmco",
            0,
            47,
            settings={"method.lam": 1.5},
            source_val=70,
            entropy=0.5,
            snd=3,
        ),
        Run(BENCH, "D2-D1", "cmco", 0, 45, source_val=65, entropy=0.2, snd=9),
        Run(BENCH, "D2-D1", "source_only", 0, 40),
    ]
    results = load_results([write_study(tmp_path, "s", runs)])
    runs = runs_with_accuracy(results, "last9")
    return results.evals, runs[runs["finished"]]


def test_configuration_picks(study):
    _, runs = study
    table = configuration_picks(runs)
    assert len(table) == 1  # source_only has one configuration: nothing to choose
    row = table.iloc[0]
    assert row["configurations"] == 3
    assert row["oracle_acc"] == 51.0 and row["oracle_pick"] == "lambda=1.0"
    assert (row["source_val_acc_acc"], row["source_val_acc_lost"]) == (47.0, 4.0)
    assert row["source_val_acc_pick"] == "lambda=1.5"
    assert (row["target_entropy_acc"], row["target_entropy_lost"]) == (45.0, 6.0)
    assert (row["snd_acc"], row["snd_lost"]) == (45.0, 6.0)
    _, rows = display_rows(table, with_settings=True)
    assert rows[0][5] == "51.0 (lambda=1.0)"
    assert rows[0][6] == "47.0 (lost 4.0; lambda=1.5)"


def test_checkpoint_picks(study):
    evals, runs = study
    table = checkpoint_picks(evals, runs).set_index("method")
    # Per run (report_fixtures): the oracle checkpoint is level+4; source_val_acc peaks at the
    # second-last evaluation (level+1), target_entropy is lowest at the first adaptation
    # evaluation (level-10), snd is highest at the last (level+0).
    cmco = table.loc["cmco"]
    levels = [50, 52, 47, 45]
    assert cmco["runs"] == 4
    assert cmco["oracle_acc"] == pytest.approx(sum(levels) / 4 + 4)
    assert cmco["source_val_acc_lost"] == pytest.approx(3.0)
    assert cmco["target_entropy_lost"] == pytest.approx(14.0)
    assert cmco["snd_lost"] == pytest.approx(4.0)
    assert table.loc["source_only", "oracle_acc"] == 44.0


def test_missing_criteria_are_shown_as_not_logged(study):
    evals, runs = study
    table = checkpoint_picks(evals.drop(columns=["snd"]), runs)
    assert table["snd_acc"].isna().all()
    _, rows = display_rows(table, with_settings=False)
    assert rows[0][-1] == "— (not logged)"


def test_display_rows_end_with_the_mean_loss(study):
    evals, runs = study
    _, rows = display_rows(checkpoint_picks(evals, runs), with_settings=False)
    assert rows[-1][0] == "mean over the rows above"
    assert rows[-1][-3] == f"{(sum([50, 52, 47, 45]) / 4 + 1 + 41) / 2:.1f} (lost 3.0)"
