"""Run configuration: defaults, aliases, benchmark defaults, validation messages, round trips."""

from __future__ import annotations

import dataclasses
import re

import pytest

from cmcl.config import (
    DataConfig,
    MethodConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    normalise_pair,
    parse_assignments,
)


def test_spec_defaults():
    config = RunConfig.from_overrides({"benchmark": "epic"})
    m, t = config.method, config.train
    assert (m.lam, m.tau, m.threshold, m.delta) == (1.25, 0.1, 0.8, 0.5)
    assert (t.warmup_steps, t.steps, t.lr, t.lr_step, t.momentum, t.weight_decay) == (
        3000,
        6000,
        0.01,
        3000,
        0.9,
        1e-7,
    )
    assert (t.batch_source, t.batch_target, t.eval_every, t.eval_last_k) == (16, 16, 50, 9)
    assert config.model.fusion == "sum" and config.data.sampling == "independent"
    assert config.data.pair == "D2-D1"


def test_synthetic_benchmarks_bring_their_schedule_but_overrides_win():
    config = RunConfig.from_overrides({"benchmark": "synthetic-epic", "train.steps": 50})
    assert config.train.warmup_steps == 600 and config.train.steps == 50
    ucf = RunConfig.from_overrides({"benchmark": "synthetic-ucf-hmdb"})
    assert ucf.data.pair == "U-H"


def test_video_mode_brings_its_defaults_but_overrides_win():
    assert RunConfig.from_overrides({}).train.source_val == "all"
    video = RunConfig.from_overrides({"benchmark": "epic", "model.backbone": "i3d"})
    assert video.train.source_val == "last" and video.data.loader_workers == -1
    chosen = RunConfig.from_overrides(
        {"benchmark": "epic", "model.backbone": "i3d", "train.source_val": "all"}
    )
    assert chosen.train.source_val == "all"
    # replace() never re-applies defaults: a feature-mode config switched to i3d keeps "all".
    assert RunConfig.from_overrides({}).replace({"model.backbone": "i3d"}).train.source_val == "all"


def test_aliases_and_string_values_are_coerced():
    config = RunConfig.from_overrides(
        {"lambda": "1.5", "T": 0.9, "delta": 0.7, "tau": 0.05, "train.steps": "10", "seed": 3}
    )
    assert (config.method.lam, config.method.threshold, config.method.delta) == (1.5, 0.9, 0.7)
    assert config.method.tau == 0.05 and config.train.steps == 10 and config.train.seed == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"T": 1.3}, r"threshold T must be in \(0, 1\], got 1.3"),
        (
            {"sampling": "sync"},
            "data.sampling must be one of independent, synchronised; got 'sync'",
        ),
        ({"fusion": "max"}, "model.fusion must be one of sum, mean"),
        (
            {"pair": "D1-D1x"},
            "pair 'D1-D1X' is not part of benchmark 'synthetic-epic'; valid: D2-D1",
        ),
        ({"benchmark": "kinetics"}, "unknown benchmark 'kinetics'; valid: synthetic-epic"),
        ({"train.steps": "ten"}, "train.steps expects int, got 'ten'"),
        ({"method.cross_domain_form": "x"}, "must be one of per_anchor, batch"),
        ({"delta": 1.0}, r"method.delta \(bank momentum\) must be in \[0, 1\)"),
        ({"data.loader_workers": -2}, "data.loader_workers must be >= 0, or -1 for auto; got -2"),
        ({"train.source_val": "some"}, "train.source_val must be one of all, last, none"),
        ({"train.momentum": -0.9}, r"train.momentum must be in \[0, 1\), got -0.9"),
        ({"train.momentum": 1.0}, r"train.momentum must be in \[0, 1\), got 1.0"),
        ({"train.weight_decay": -1e-7}, "train.weight_decay must be a finite number >= 0"),
        ({"train.lr_gamma": 1.5}, r"train.lr_gamma must be in \(0, 1\], got 1.5"),
        ({"train.seed": -1}, r"train.seed must be an integer in \[0, 2\*\*63\), got -1"),
        ({"train.steps": 0}, "train.steps must be > 0, got 0"),
        ({"model.dropout": 1.0}, r"model.dropout must be in \[0, 1\), got 1.0"),
        ({"data.test_windows": 0}, "data.test_windows must be > 0, got 0"),
    ],
)
def test_bad_values_name_the_key_and_what_is_valid(overrides, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_overrides(overrides)


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(KeyError, match=r"method has: .*adabn_reestimate"):
        RunConfig.from_overrides({"method.lamda": 1})
    with pytest.raises(KeyError, match="unknown setting 'lr'"):
        RunConfig.from_overrides({"lr": 0.1})


def test_round_trip_through_dict_and_file(tmp_path):
    config = RunConfig.from_overrides({"lambda": 1.0, "pair": "D3->D2", "out": "x"})
    assert RunConfig.from_dict(config.to_dict()) == config
    config.save(tmp_path / "c.json")
    assert RunConfig.load(tmp_path / "c.json") == config
    flat = config.flat()
    assert flat["method.lam"] == 1.0 and flat["data.pair"] == "D3-D2"


def test_replace_does_not_reapply_benchmark_defaults():
    config = RunConfig.from_overrides({"train.steps": 7})
    assert config.replace({"seed": 2}).train.steps == 7


@pytest.mark.parametrize("text", ["D2-D1", "D2->D1", "d2→d1", " D2 -> D1 "])
def test_pairs_are_normalised(text):
    assert normalise_pair(text.replace(" ", "")) == "D2-D1"


def test_assignments_parse_json_values():
    assert parse_assignments(["a=1", "b=0.5", "c=true", "d=none", "e=text", "f=[1, 2]"]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": None,
        "e": "text",
        "f": [1, 2],
    }
    with pytest.raises(ValueError, match="expected key=value"):
        parse_assignments(["novalue"])


SECTION_TYPES = {
    "data": DataConfig,
    "model": ModelConfig,
    "method": MethodConfig,
    "train": TrainConfig,
}
FLOAT_KEYS = [
    f"{section}.{f.name}"
    for section, kind in SECTION_TYPES.items()
    for f in dataclasses.fields(kind)
    if f.type == "float"
]


def test_the_float_settings_are_found():
    # The parametrised test below covers a new float field without being edited;
    # this makes sure the field scan finds the ones the issue named.
    assert {"train.lr", "train.momentum", "train.weight_decay", "method.lam"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("text", ["NaN", "nan", "inf", "-Infinity", "1e999"])
def test_non_finite_values_are_refused_for_every_float_setting(key, text):
    # Through the --set parser, as `cmcl train --set key=NaN` passes them.
    value = parse_assignments([f"{key}={text}"])[key]
    with pytest.raises(ValueError, match=rf"{re.escape(key)}\W.*must be .*got -?(nan|inf)"):
        RunConfig.from_overrides({key: value})


@pytest.mark.parametrize("section", SECTION_TYPES)
def test_every_numeric_setting_has_a_range(section):
    """Each int or float field refuses some value of its type, naming the key and the value."""
    for item in dataclasses.fields(SECTION_TYPES[section]):
        if item.type not in ("int", "float"):
            continue
        bad = -(10**20) if item.type == "int" else -1e20
        key = f"{section}.{item.name}"
        with pytest.raises(ValueError, match=re.escape(key)) as info:
            RunConfig.from_overrides({key: bad})
        assert str(bad) in str(info.value) or f"{bad:g}" in str(info.value), info.value
