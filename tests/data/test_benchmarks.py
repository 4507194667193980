"""The benchmark registry's per-benchmark defaults: ucf-hmdb's own, explicit schedule."""

from __future__ import annotations

import pytest

from cmcl.config import RunConfig, resolve_key
from cmcl.data.benchmarks import (
    BENCHMARKS,
    SCHEDULE_KEYS,
    SYNTHETIC_SCHEDULE,
    UCF_HMDB_SCHEDULE,
    benchmark_defaults,
)

# SPEC section 7, the schedule ucf-hmdb takes as its documented choice (SAVA's could not be
# found; docs/real-data.md, "UCF <-> HMDB protocol").
SPEC_7 = {
    "train.warmup_steps": 3000,
    "train.steps": 6000,
    "train.lr": 0.01,
    "train.lr_step": 3000,
    "train.lr_gamma": 0.1,
    "train.momentum": 0.9,
    "train.weight_decay": 1e-7,
    "train.batch_source": 16,
    "train.batch_target": 16,
    "train.eval_every": 50,
    "train.eval_last_k": 9,
}


def _schedule(config: RunConfig) -> dict:
    flat = config.flat()
    return {key: flat[key] for key in SCHEDULE_KEYS}


def test_schedule_keys_are_settings():
    assert set(SCHEDULE_KEYS) == set(SPEC_7)
    for key in SCHEDULE_KEYS:
        assert resolve_key(key)[0] == "train"


def test_ucf_hmdb_states_its_schedule_instead_of_inheriting_it():
    defaults = benchmark_defaults("ucf-hmdb")
    assert {k: defaults[k] for k in SCHEDULE_KEYS} == SPEC_7 == UCF_HMDB_SCHEDULE
    assert defaults["data.pair"] == "U-H"
    assert _schedule(RunConfig.from_overrides({"benchmark": "ucf-hmdb"})) == SPEC_7


def test_ucf_hmdb_video_mode_keeps_the_schedule():
    config = RunConfig.from_overrides({"benchmark": "ucf-hmdb", "model.backbone": "i3d"})
    assert _schedule(config) == SPEC_7
    assert config.train.source_val == "last"


@pytest.mark.parametrize("key", SCHEDULE_KEYS)
def test_explicit_overrides_win_over_the_ucf_hmdb_schedule(key):
    value = 7 if isinstance(SPEC_7[key], int) else 0.5
    config = RunConfig.from_overrides({"benchmark": "ucf-hmdb", key: value})
    assert _schedule(config)[key] == value


def test_the_protocols_say_where_their_schedule_comes_from():
    ucf = BENCHMARKS["ucf-hmdb"]
    assert "SAVA" in ucf.protocol and "could not be found" in ucf.protocol
    assert "SPEC section 7" in BENCHMARKS["epic"].protocol
    for name in ("synthetic-epic", "synthetic-ucf-hmdb"):
        assert "synthetic" in BENCHMARKS[name].protocol


def test_other_benchmarks_are_unchanged():
    assert benchmark_defaults("epic") == {"data.pair": "D2-D1"}
    synthetic = RunConfig.from_overrides({"benchmark": "synthetic-ucf-hmdb"})
    assert {k: v for k, v in synthetic.flat().items() if k in SYNTHETIC_SCHEDULE} == (
        SYNTHETIC_SCHEDULE
    )
