import numpy as np
import pytest
from report_fixtures import Run, write_study

from cmcl.report.aggregate import (
    SeedStat,
    bootstrap_mean_over_pairs,
    check_rule,
    matches,
    rule_text,
    run_accuracy,
    varied_settings,
    with_configuration,
)
from cmcl.report.store import load_results


@pytest.fixture
def evals(tmp_path):
    runs = [
        Run("synthetic-epic", "D2-D1", "cmco", 0, 50.0),
        Run("synthetic-epic", "D2-D1", "cmco", 1, 60.0, settings={"train.eval_last_k": 3}),
    ]
    return load_results([write_study(tmp_path, "s", runs)]).evals


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # last 9 of level + (-4, 4, -3, 3, -2, 2, -1, 1, 0); the second run's k=3: (-1, 1, 0)
        ("last9", {"s/t-cmco-D2-D1-s0": 50.0, "s/t-cmco-eval_last_k3-D2-D1-s1": 60.0}),
        ("best", {"s/t-cmco-D2-D1-s0": 54.0, "s/t-cmco-eval_last_k3-D2-D1-s1": 64.0}),
        ("final", {"s/t-cmco-D2-D1-s0": 50.0, "s/t-cmco-eval_last_k3-D2-D1-s1": 60.0}),
    ],
)
def test_rules(evals, rule, expected):
    table = run_accuracy(evals, rule).set_index("run_key")
    assert table["target_acc"].to_dict() == pytest.approx(expected)
    assert (table["target_acc_rgb"] == table["target_acc"] - 3.0).all()
    assert (table["target_acc_flow"] == table["target_acc"] - 5.0).all()


def test_last_k_follows_the_runs_config(evals):
    table = run_accuracy(evals, "last9").set_index("run_key")
    assert table["k"].to_dict() == {"s/t-cmco-D2-D1-s0": 9, "s/t-cmco-eval_last_k3-D2-D1-s1": 3}
    assert table["n_used"].tolist() == [9, 3]
    # best: the 5th adaptation evaluation (step 500) is the highest, whatever k
    assert run_accuracy(evals, "best")["step"].tolist() == [500, 500]


def test_last9_against_a_naive_reference(evals):
    for run_key, rows in evals.groupby("run_key"):
        adapt = rows[rows["stage"] == "adapt"].sort_values("step")
        k = int(adapt["cfg.train.eval_last_k"].iloc[0])
        naive = sum(adapt["target_acc"].tolist()[-k:]) / k
        got = run_accuracy(evals, "last9").set_index("run_key").loc[run_key, "target_acc"]
        assert got == pytest.approx(naive)


def test_metrics_use_the_last_k_window_even_under_best(evals):
    last = run_accuracy(evals, "last9").set_index("run_key")
    best = run_accuracy(evals, "best").set_index("run_key")
    assert (last["snd"] == best["snd"]).all()


def test_a_run_with_only_warmup_uses_that_stage(evals):
    warm = evals[evals["stage"] == "warmup"]
    table = run_accuracy(warm, "final").set_index("run_key")
    assert table.loc["s/t-cmco-D2-D1-s0", "target_acc"] == 30.0


def test_seed_stat_is_sample_std():
    stat = SeedStat.of([1.0, 2.0, 4.0])
    assert stat.mean == pytest.approx(7 / 3)
    assert stat.std == pytest.approx(
        np.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    )
    assert stat.n == 3
    one = SeedStat.of([5.0, float("nan")])
    assert (one.mean, one.n) == (5.0, 1) and np.isnan(one.std)
    assert SeedStat.of([]).n == 0


def test_bootstrap_constant_data_has_a_point_interval():
    low, high = bootstrap_mean_over_pairs([np.array([40.0, 40.0]), np.array([50.0])])
    assert (low, high) == pytest.approx((45.0, 45.0))
    low, high = bootstrap_mean_over_pairs([np.array([40.0])], minus=[np.array([30.0, 30.0])])
    assert (low, high) == pytest.approx((10.0, 10.0))


def test_bootstrap_matches_the_normal_approximation_for_one_large_pair():
    rng = np.random.default_rng(1)
    values = rng.normal(50.0, 2.0, size=400)
    low, high = bootstrap_mean_over_pairs([values], resamples=4000)
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert low == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.1 * half)


def test_bootstrap_is_seeded_and_averages_pairs():
    samples = [np.array([40.0, 42.0, 44.0]), np.array([50.0, 51.0])]
    first = bootstrap_mean_over_pairs(samples)
    assert first == bootstrap_mean_over_pairs(samples)
    assert first != bootstrap_mean_over_pairs(samples, seed=1)
    mean = (42.0 + 50.5) / 2
    assert first[0] < mean < first[1]
    # The extremes of the interval cannot pass the extremes of the resampled means.
    assert first[0] >= (40.0 + 50.0) / 2 and first[1] <= (44.0 + 51.0) / 2


def test_configurations(tmp_path):
    runs = [
        Run("synthetic-epic", "D2-D1", "cmco", 0, 50.0),
        Run("synthetic-epic", "D2-D1", "cmco", 1, 50.0),
        Run("synthetic-epic", "D3-D1", "cmco", 0, 50.0),
        Run("synthetic-epic", "D2-D1", "cmco", 0, 50.0, settings={"method.lam": 1.0}),
    ]
    table = with_configuration(load_results([write_study(tmp_path, "s", runs)]).runs)
    # seed and pair do not make a configuration; lambda does.
    assert table["config"].nunique() == 2
    assert varied_settings(table) == ["cfg.method.lam"]


def test_matches_and_rules():
    assert matches(1.2500000001, 1.25)
    assert not matches(1.0, 1.25)
    assert matches(True, "true") and matches("independent", "independent")
    assert matches(None, float("nan"))
    with pytest.raises(ValueError, match="rule must be one of last9, best, final; got 'mean'"):
        check_rule("mean")
    assert "k=3, 9" in rule_text("last9", [9, 3, 9])
    assert "ORACLE" in rule_text("best")
