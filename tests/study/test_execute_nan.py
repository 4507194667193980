"""A study run whose metric would be NaN fails with the reason, in its run directory too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_execute import one_job, tiny_spec

from cmcl.engine import trainer
from cmcl.engine.guards import NonFiniteMetricError
from cmcl.study.execute import execute_run


def test_nan_predictions_error_the_run_with_the_reason(tiny_store, tmp_path, monkeypatch):
    real_predict = trainer.predict

    def nan_rgb(*args, **kwargs):
        pred = real_predict(*args, **kwargs)
        return pred._replace(rgb=torch.full_like(pred.rgb, float("nan")))

    monkeypatch.setattr(trainer, "predict", nan_rgb)
    job = one_job(tiny_spec(tiny_store), tmp_path)
    events = []
    with pytest.raises(NonFiniteMetricError, match="target_test predictions are NaN or inf"):
        execute_run(job, events.append, threads=1)
    assert not any(e["kind"] == "finished" for e in events)  # no value reaches the trial
    failure = json.loads((Path(job.location) / "failure.json").read_text())
    assert failure["error"] == "NonFiniteMetricError" and "warmup step 2" in failure["message"]
