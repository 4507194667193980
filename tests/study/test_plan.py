"""Grid points, trial plans, run configs (and their precedence), the evaluation schedule, names."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_overrides

from cmcl.config import RunConfig
from cmcl.engine import fit
from cmcl.study._build import grid_trial_count
from cmcl.study.naming import parse_run_id, run_id
from cmcl.study.plan import RunKey, evaluation_schedule, grid_points, run_config, trial_plan
from cmcl.study.spec import parse_spec


def spec_of(**extra):
    return parse_spec(
        {
            "name": "p",
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1", "D3-D1"],
            "methods": ["source_only", "cmco"],
            **extra,
        }
    )


def test_grid_points_cross_methods_variants_values_and_pairs():
    spec = spec_of(
        variants=[
            {"name": "ind", "methods": ["cmco"], "settings": {"sampling": "independent"}},
            {"name": "syn", "methods": ["cmco"], "settings": {"sampling": "synchronised"}},
        ],
        search={"lambda": [1.0, 1.5], "T": [0.8]},
        seeds=2,
    )
    points = grid_points(spec)
    # source_only: 1 x 2 values x 2 pairs; cmco: 2 variants x 2 x 2
    assert len(points) == grid_trial_count(spec) == 4 + 8
    assert points[0] == {
        "method": "source_only",
        "variant": None,
        "pair": "synthetic-epic/D2-D1",
        "params": {"method.lam": 1.0, "method.threshold": 0.8},
    }
    assert [p["variant"] for p in points[4:]] == ["ind"] * 4 + ["syn"] * 4
    plan = trial_plan(spec, {"point": points[5]})
    assert (plan.method, plan.variant, plan.pairs) == (
        "cmco",
        "ind",
        (("synthetic-epic", "D3-D1"),),
    )
    assert plan.runs() == [
        RunKey("synthetic-epic", "D3-D1", 0),
        RunKey("synthetic-epic", "D3-D1", 1),
    ]


def test_mean_objective_puts_every_pair_in_each_trial():
    spec = spec_of(objective="mean", seeds=[3, 7])
    points = grid_points(spec)
    assert len(points) == grid_trial_count(spec) == 2
    plan = trial_plan(spec, {"point": points[1]})
    assert [(r.pair, r.seed) for r in plan.runs()] == [
        ("D2-D1", 3),
        ("D2-D1", 7),
        ("D3-D1", 3),
        ("D3-D1", 7),
    ]


def test_optuna_config_plan():
    spec = spec_of(
        methods=["cmco"],
        objective="mean",
        searcher="optuna",
        trials=5,
        search={"lambda": {"low": 0.5, "high": 2.0}},
    )
    plan = trial_plan(spec, {"method.lam": 0.75})
    assert plan.method == "cmco" and plan.params == (("method.lam", 0.75),)
    assert plan.pairs == spec.pairs
    assert plan.describe() == "cmco lam=0.75 on 2 pairs"


def test_run_config_precedence():
    spec = spec_of(
        settings={"train.steps": 40, "lambda": 0.5, "tau": 0.2, "data.features": "/other"},
        variants=[{"name": "v", "settings": {"lambda": 0.9}}],
        search={"T": [0.95]},
    )
    plan = trial_plan(spec, {"point": grid_points(spec)[-1]})
    config = run_config(
        spec,
        plan,
        RunKey("synthetic-epic", "D3-D1", 4),
        overrides={"synthetic-epic": {"data.features": "/data/store"}},
        out="/tmp/x",
    )
    assert config.train.steps == 40  # settings beat the benchmark's default (1200)
    assert config.train.warmup_steps == 600  # the synthetic benchmark's default
    assert config.method.tau == 0.2  # settings
    assert config.method.lam == 0.9  # the variant beats settings
    assert config.method.threshold == 0.95  # searched
    assert (config.data.pair, config.method.name, config.train.seed) == ("D3-D1", "cmco", 4)
    assert config.data.features == "/data/store"  # --features beats the file
    assert config.out == "/tmp/x"


@pytest.fixture
def one_thread():
    # Two torch threads on a loaded 2-core machine are tens of times slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_evaluation_schedule_matches_the_engine(tiny_store, one_thread):
    config = RunConfig.from_overrides(
        tiny_overrides(tiny_store, **{"train.eval_every": 3, "train.checkpoint_every": 4})
    )
    history = fit(config).history
    assert evaluation_schedule(config.train) == [(row["stage"], row["step"]) for row in history]


@pytest.mark.parametrize(
    ("trial", "pair", "seed"), [("a1b2c_00003", "D2-D1", 0), ("9f8e7d6c", "U-H", 12)]
)
def test_run_ids_round_trip(trial, pair, seed):
    name = run_id(trial, pair, seed)
    assert name == f"{trial}-{pair}-s{seed}"
    assert parse_run_id(name) == (trial, pair, seed)
