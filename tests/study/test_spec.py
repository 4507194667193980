"""Study files: defaults, normal forms, and errors that name the key and the valid values."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED

from cmcl.study.spec import PAPER_TABLES, StudySpecError, load_spec, parse_spec

NAN, INF = float("nan"), float("inf")


def base(**extra):
    return {
        "name": "s",
        "benchmark": "synthetic-epic",
        "pairs": ["D2-D1"],
        "methods": ["source_only"],
        **extra,
    }


def error_of(data) -> str:
    with pytest.raises(StudySpecError) as info:
        parse_spec(data)
    return str(info.value)


def test_defaults_and_normal_forms():
    spec = parse_spec(
        base(pairs=["d3->d1", "D2-D1"], settings={"lambda": 1.0, "train.steps": 50}, seeds=3)
    )
    assert spec.pairs == (("synthetic-epic", "D3-D1"), ("synthetic-epic", "D2-D1"))
    assert spec.settings == (("method.lam", 1.0), ("train.steps", 50))
    assert spec.seeds == (0, 1, 2)
    assert (spec.searcher, spec.objective, spec.metric, spec.mode) == (
        "grid",
        "per_pair",
        "target_acc",
        "max",
    )
    assert spec.oracle and "oracle" in spec.metric_label
    assert spec.scheduler.name == "none" and spec.resources.workers == 1
    assert parse_spec(spec.to_dict()) == spec


def test_all_pairs_of_two_benchmarks():
    spec = parse_spec(base(benchmark=["epic", "ucf-hmdb"], pairs="all"))
    assert [p for _, p in spec.pairs] == [
        "D2-D1",
        "D3-D1",
        "D1-D2",
        "D3-D2",
        "D1-D3",
        "D2-D3",
        "U-H",
        "H-U",
    ]
    assert dict(spec.pairs)["epic"] == "D2-D3"  # the last epic pair
    assert spec.pairs[-1] == ("ucf-hmdb", "H-U")


def test_metric_directions():
    assert parse_spec(base(metric="target_entropy")).mode == "min"
    for metric in ("source_val_acc", "snd"):
        spec = parse_spec(base(metric=metric))
        assert spec.mode == "max" and not spec.oracle and spec.metric_label == metric


def test_search_forms_and_grids():
    spec = parse_spec(
        base(
            search={
                "lambda": [1.0, 1.25],
                "tau": {"values": [0.05, 0.1]},
                "T": {"low": 0.6, "high": 0.9, "step": 0.1},
                "train.batch_source": {"low": 8, "high": 12, "step": 2},
            }
        )
    )
    grids = {p.key: p.grid() for p in spec.search}
    assert grids == {
        "method.lam": (1.0, 1.25),
        "method.tau": (0.05, 0.1),
        "method.threshold": (0.6, 0.7, 0.8, 0.9),
        "train.batch_source": (8, 10, 12),
    }
    assert [type(v) for v in grids["train.batch_source"]] == [int, int, int]


def test_optuna_defaults():
    spec = parse_spec(
        base(
            searcher="optuna",
            trials=10,
            objective="mean",
            pairs="all",
            search={"lambda": {"low": 0.1, "high": 3.0, "log": True}},
        )
    )
    assert spec.startup_trials == 3  # not Optuna's 10, which would make this random search
    assert parse_spec(spec.to_dict()) == spec
    assert parse_spec({**spec.to_dict(), "optuna": {"n_startup_trials": 5}}).startup_trials == 5


def test_on_synthetic_maps_real_benchmarks_and_names():
    spec = parse_spec(base(benchmark=["epic", "ucf-hmdb"], pairs=["D2-D1", "U-H"], name="t3"))
    twin = spec.on_synthetic()
    assert twin.benchmarks == ("synthetic-epic", "synthetic-ucf-hmdb")
    assert twin.pairs == (("synthetic-epic", "D2-D1"), ("synthetic-ucf-hmdb", "U-H"))
    assert twin.name == "t3-synthetic"
    assert twin.on_synthetic() == twin


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        (base(serach={}), ["'serach'", "valid keys:", "search"]),
        (base(methods=["cmcoo"]), ["'methods'", "'cmcoo'", "valid:", "cmco", "source_only"]),
        (base(benchmark="epik"), ["'benchmark'", "'epik'", "synthetic-epic"]),
        (base(pairs=["U-H"]), ["'pairs'", "U-H", "D2-D1"]),
        (base(benchmark=["epic", "synthetic-epic"], pairs=["D2-D1"]), ["'pairs'", "both"]),
        (base(searcher="tpe"), ["'searcher'", "grid, optuna", "'tpe'"]),
        (base(metric="acc"), ["'metric'", "target_acc", "snd", "target_entropy"]),
        (base(objective="best"), ["'objective'", "per_pair, mean"]),
        (base(settings={"train.stepz": 5}), ["'settings.train.stepz'", "train has:", "steps"]),
        (base(settings={"method.name": "cmco"}), ["'settings.method.name'", "'methods'"]),
        (base(settings={"tau": 100}), ["'settings'", "method.tau must be in [0.01, 10]"]),
        (base(search={"tau": [0.1, 50.0]}), ["'search.method.tau'", "[0.01, 10]"]),
        (base(search={"T": {"low": 0.5, "high": 0.9}}), ["'search.method.threshold'", "step"]),
        (base(search={"T": {"grid": [0.5], "low": 0.1}}), ["'search.T'", "either a list"]),
        (base(search={"lambda": {"low": 0.0, "high": 1.0, "log": True}}), ["log range", "low > 0"]),
        (base(search={"lambda": [1.0]}, settings={"lambda": 2.0}), ["'settings'", "both fixed"]),
        (base(search={"lambda": [1.0], "method.lam": [2.0]}), ["'search.method.lam'", "twice"]),
        (base(searcher="optuna", search={"lambda": [1.0]}), ["'trials'", "number of trials"]),
        (base(optuna={"seed": 1}), ["'optuna'", "searcher: optuna only"]),
        (
            base(
                searcher="optuna", trials=4, methods=["source_only", "cmco"], search={"tau": [0.1]}
            ),
            ["'searcher'", "one method"],
        ),
        (
            base(searcher="optuna", trials=4, pairs="all", search={"tau": [0.1]}),
            ["'objective'", "objective: mean"],
        ),
        (base(seeds=[0, 0]), ["'seeds'", "twice"]),
        (base(seeds=0), ["'seeds'", ">= 1"]),
        (base(tables=["table9"]), ["'tables'", "table3_epic"]),
        (base(trials=3), ["'trials'", "1 trials", "set it to 1"]),
        (base(scheduler="hyperband"), ["'scheduler'", "none, asha"]),
        (base(resources={"gpus": 1}), ["'resources'", "gpus_per_worker"]),
        (base(variants=[{"name": "a", "methods": ["cmco"]}]), ["'variants[0].methods'", "'cmco'"]),
        (base(variants=[{"name": "a"}, {"name": "a"}]), ["'variants[1].name'", "twice"]),
        (base(name="a/b"), ["'name'", "directory"]),
        (base(storage=""), ["'storage'", "a non-empty string"]),
        (base(optuna_storage="journal.log"), ["'optuna_storage'", "postgresql://", "sqlite:///"]),
        (base(keep="some"), ["'keep'", "final, all"]),
        (base(node_failures=-1), ["'node_failures'", ">= 0"]),
        ({"benchmark": "epic"}, ["'name'", "required"]),
        (base(settings={"lambda": NAN}), ["'settings'", "method.lam must be a finite", "nan"]),
        (base(settings={"train.lr": INF}), ["'settings'", "train.lr must be a finite", "inf"]),
        (base(settings={"train.momentum": -0.5}), ["'settings'", "train.momentum", "[0, 1)"]),
        (base(settings={"train.weight_decay": -1}), ["'settings'", "train.weight_decay", ">= 0"]),
        (base(search={"lambda": [1.0, NAN]}), ["'search.method.lam'", "finite", "nan"]),
        (base(search={"lambda": [INF]}), ["'search.method.lam'", "finite", "inf"]),
        (base(search={"lambda": {"low": NAN, "high": 1.0}}), ["'search.lambda.low'", "finite"]),
        (base(search={"lambda": {"low": 0.1, "high": INF}}), ["'search.lambda.high'", "finite"]),
        (
            base(search={"lambda": {"low": 0.1, "high": 1.0, "step": NAN}}),
            ["'search.lambda.step'", "finite"],
        ),
        (base(resources={"gpus_per_worker": INF}), ["'resources.gpus_per_worker'", "finite"]),
        (
            base(metric="source_val_acc", settings={"train.source_val": "none"}),
            ["'settings'", "source_val_acc needs train.source_val all or last"],
        ),
        (
            base(metric="source_val_acc", search={"train.source_val": ["last", "none"]}),
            ["'search.train.source_val'", "source_val_acc"],
        ),
    ],
)
def test_errors_name_the_key_and_the_valid_values(data, needles):
    message = error_of(data)
    for needle in needles:
        assert needle in message, (needle, message)


def test_variants_apply_to_their_methods():
    spec = parse_spec(
        base(
            methods=["source_only", "cmco"],
            variants=[
                {"name": "lam1", "methods": ["cmco"], "settings": {"lambda": 1.0}},
                {"name": "lam2", "methods": ["cmco"], "settings": {"lambda": 2.0}},
            ],
        )
    )
    assert spec.variants_of("source_only") == (None,)
    assert [v.name for v in spec.variants_of("cmco")] == ["lam1", "lam2"]


def test_load_spec_reports_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nbenchmark: [epic\n")
    with pytest.raises(StudySpecError, match=r"bad\.yaml is not valid YAML"):
        load_spec(path)
    with pytest.raises(StudySpecError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    path.write_text(
        "name: x\nbenchmark: epic\nmethods: [cmco]\nsearch: {lambda: {low: 1e-3, high: 1}}\n"
    )
    with pytest.raises(StudySpecError, match=r"bad\.yaml: key 'search.method.lam'"):
        load_spec(path)


def test_paper_tables_are_the_shared_tables():
    tables = json.loads((SHARED / "paper" / "tables.json").read_text())
    assert set(PAPER_TABLES) == {k for k in tables if k.startswith("table")}


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", ".NaN"])
def test_yaml_non_finite_settings_are_refused(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(
        f"name: x\nbenchmark: synthetic-epic\nmethods: [cmco]\nsettings: {{lambda: {text}}}\n"
    )
    with pytest.raises(StudySpecError, match=r"study\.yaml: key 'settings'.*method\.lam"):
        load_spec(path)


# -- command-line changes (cmcl study run --trials/--seeds/--pairs/--methods/--study-set) ----


def _changed(tmp_path, data, **options):
    import yaml

    from cmcl.study.overrides import load_spec_with, study_overrides

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec_with(path, study_overrides(**options))


def _change_error(tmp_path, data, **options) -> str:
    with pytest.raises(StudySpecError) as info:
        _changed(tmp_path, data, **options)
    return str(info.value)


HPO = base(
    methods=["cmco"],
    searcher="optuna",
    trials=20,
    objective="mean",
    search={"lambda": {"low": 0.5, "high": 2.0}},
)


def test_command_line_changes_give_the_spec_of_the_changed_file(tmp_path):
    three = base(methods=["source_only", "cmco", "mmd"], pairs="all", seeds=3)
    spec = _changed(tmp_path, three, seeds="0,5", pairs="D2-D1,D3-D1", methods="cmco")
    assert spec == parse_spec(base(methods=["cmco"], pairs=["D2-D1", "D3-D1"], seeds=[0, 5]))
    assert _changed(tmp_path, three, seeds="2").seeds == (0, 1)
    assert _changed(tmp_path, three, seeds="7,").seeds == (7,)
    assert _changed(tmp_path, three, pairs="D1-D3").pairs == (("synthetic-epic", "D1-D3"),)
    spec = _changed(
        tmp_path,
        {**HPO, "settings": {"lambda": 1.0, "train.steps": 600}, "search": {"tau": [0.1, 0.2]}},
        trials="5",
        assignments=[
            "scheduler.name=asha",
            "scheduler.grace_period=2",
            "settings.method.lam=1.5",  # replaces the file's alias `lambda`
            "search.tau.values=[0.05, 0.1]",
            "optuna.seed=3",
            "name=s-small",
        ],
    )
    assert (spec.trials, spec.name, spec.optuna_seed) == (5, "s-small", 3)
    assert (spec.scheduler.name, spec.scheduler.grace_period) == ("asha", 2)
    assert dict(spec.settings) == {"method.lam": 1.5, "train.steps": 600}
    assert spec.search[0].values == (0.05, 0.1)
    # A list replaces a range (and a range field a list) instead of mixing the two.
    spec = _changed(tmp_path, HPO, assignments=["search.lambda.values=[1.0, 1.5]"])
    assert (spec.search[0].values, spec.search[0].low) == ((1.0, 1.5), None)
    spec = _changed(tmp_path, HPO, assignments=["search.lambda.high=3"])
    assert (spec.search[0].low, spec.search[0].high) == (0.5, 3.0)


def test_command_line_changes_are_checked_like_the_file(tmp_path):
    message = _change_error(tmp_path, HPO, trials="0")
    assert message == "s.yaml with --trials 0: key 'trials': must be >= 1; got 0".replace(
        "s.yaml", str(tmp_path / "s.yaml")
    )
    message = _change_error(tmp_path, base(), pairs="D2-D1,X-Y")
    assert "with --pairs D2-D1,X-Y: key 'pairs':" in message
    message = _change_error(tmp_path, base(), seeds="0,0")
    assert "with --seeds 0,0: key 'seeds': a seed is listed twice" in message
    message = _change_error(tmp_path, base(), methods="cmko")
    assert "key 'methods': unknown method 'cmko'; valid: " in message and "cmco" in message
    message = _change_error(tmp_path, base(), assignments=["metric=acc"])
    assert "with --study-set metric=acc: key 'metric': must be one of target_acc" in message
    message = _change_error(tmp_path, base(), assignments=["settings.train.stepz=3"])
    assert "--study-set settings.train.stepz=3" in message and "train.stepz" in message
    # A grid study's trials are derived; the parser says what they are.
    message = _change_error(tmp_path, base(), trials="3")
    assert "key 'trials': a grid study has 1 trials" in message


def test_command_line_keys_that_do_not_exist_are_refused(tmp_path):
    message = _change_error(tmp_path, base(), assignments=["trails=3"])
    assert message.startswith("--study-set trails=3: unknown study key 'trails'; valid keys: name,")
    message = _change_error(tmp_path, base(), assignments=["metric.name=snd"])
    assert "--study-set metric.name=snd: 'metric' takes one value, it has no key 'name'" in message
    message = _change_error(tmp_path, base(), assignments=["seeds"])
    assert message.startswith("--study-set seeds: expected KEY=VALUE")
    message = _change_error(tmp_path, base(), assignments=["resources.gpus=1"])
    assert "key 'resources': unknown key 'gpus'; valid keys: workers" in message
    message = _change_error(tmp_path, base(), assignments=["seeds=[0, 1"])
    assert message.startswith("--study-set seeds=[0, 1: the value is not valid YAML")
