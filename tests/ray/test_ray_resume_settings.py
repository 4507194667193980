"""fit_distributed re-run under the same name: the resume settings check, before Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_overrides

from cmcl.config import RunConfig
from cmcl.engine.resume import ResumeSettingsError
from cmcl.ray.storage import RunLocation, record_config
from cmcl.ray.train import fit_distributed


def _unreachable(payload):
    raise AssertionError("the workers must not start")


def test_a_rerun_with_other_settings_is_refused_and_config_json_kept(tiny_store, tmp_path):
    config = RunConfig.from_overrides(tiny_overrides(tiny_store, method="cmco"))
    config = config.replace({"train.device": "cpu"})
    location = RunLocation(tmp_path, "run")
    record_config(location, config)
    written = (Path(location.uri) / "config.json").read_bytes()
    with pytest.raises(ResumeSettingsError) as raised:
        fit_distributed(
            config.replace({"train.lr": 0.5, "data.loader_workers": 0}),
            workers=2,
            storage=str(tmp_path),
            name="run",
            train_loop=_unreachable,
        )
    message = str(raised.value)
    assert message.startswith(f"{location.uri}/config.json records the settings")
    assert "train.lr: recorded 0.01, requested 0.5" in message
    assert "loader_workers: recorded" not in message
    assert (Path(location.uri) / "config.json").read_bytes() == written
