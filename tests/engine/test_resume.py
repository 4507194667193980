"""What a resumed run may change: operational keys only, everything else refused by name."""

from __future__ import annotations

import json

import pytest

from cmcl.config import RunConfig
from cmcl.engine.resume import (
    OPERATIONAL_KEYS,
    ResumeSettingsError,
    changed_settings,
    check_resume_settings,
    recorded_config,
    resumed_config,
)

RECORDED = RunConfig.from_overrides({"method": "cmco", "train.steps": 40, "lambda": 1.0})


def test_operational_keys_are_real_settings_and_may_change():
    flat = RECORDED.flat()
    assert set(OPERATIONAL_KEYS) <= set(flat)
    changed = RECORDED.replace(
        {"data.loader_workers": 0, "train.keep_checkpoints": 5, "train.log_every": 7}
    )
    assert changed_settings(RECORDED, changed) == {}
    check_resume_settings(RECORDED, changed, source="run/config.json")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"train.lr": 0.5, "lambda": 3}, {"train.lr": (0.01, 0.5), "method.lam": (1.0, 3.0)}),
        ({"train.device": "cpu"}, {"train.device": ("auto", "cpu")}),
        ({"train.checkpoint_every": 7}, {"train.checkpoint_every": (200, 7)}),
        ({"data.features": "/elsewhere"}, {"data.features": (None, "/elsewhere")}),
    ],
)
def test_result_changing_settings_are_listed_with_both_values(overrides, expected):
    requested = RECORDED.replace({**overrides, "data.loader_workers": 3})
    assert changed_settings(RECORDED, requested) == expected
    with pytest.raises(ResumeSettingsError) as raised:
        check_resume_settings(RECORDED, requested, source="runs/x/config.json")
    message = str(raised.value)
    assert message.startswith("runs/x/config.json records the settings")
    for key, (old, new) in expected.items():
        assert f"{key}: recorded {old!r}, requested {new!r}" in message
    assert "data.loader_workers" not in message.split("(")[1].split(")")[0]  # not a conflict
    assert "another --out" in message


def test_settings_left_out_keep_their_recorded_values():
    resumed = resumed_config(RECORDED, {"data.loader_workers": 0}, source="c.json")
    assert resumed.train.steps == 40 and resumed.method.lam == 1.0
    assert resumed.data.loader_workers == 0
    # Restating a recorded value (through an alias, as a string) is no change.
    same = resumed_config(RECORDED, {"lambda": "1.0", "seed": 0}, source="c.json")
    assert same == RECORDED


def test_recorded_config_reads_config_json_and_names_a_bad_one(tmp_path):
    path = tmp_path / "config.json"
    RECORDED.replace({"out": str(tmp_path), "resume": "auto"}).save(path)
    assert recorded_config(json.loads(path.read_text()), source=str(path)) == RECORDED
    with pytest.raises(ValueError, match=r"c\.json: not a run's settings .*train\.stepz"):
        recorded_config({"train": {"stepz": 3}}, source="c.json")
