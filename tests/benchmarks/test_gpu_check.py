"""benchmarks/gpu_check.py in its CPU smoke mode (the GPU run itself is done by hand on a lent card)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def fake_loader():
    """Four batches of three clips, shaped like the video DataLoader's dicts."""
    for index in range(4):
        yield {
            "rgb": torch.zeros(3, 3, 8, 32, 32),
            "flow": torch.zeros(3, 2, 8, 32, 32),
            "label": torch.zeros(3, dtype=torch.long),
            "index": torch.arange(3) + 3 * index,
        }


def test_smoke_run_writes_json_to_out(gpu_check, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    threads = torch.get_num_threads()
    report = gpu_check.main(["--smoke", "--variants", "fp32"], make_loader=fake_loader)
    assert torch.get_num_threads() == threads  # smoke mode's 1 thread is undone
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["environment"]["device"] == "cpu"
    [train] = saved["training"]
    assert train["variant"]["name"] == "fp32" and "error" not in train
    assert train["steps_per_s"] > 0 and math.isfinite(train["last_loss"])
    assert train["clips_per_s"] == pytest.approx(4 * train["steps_per_s"])  # 2 source + 2 target
    [extract] = saved["extraction"]
    assert extract["clips_per_s"] > 0 and not extract["bf16"]
    # The first batch is untimed; the other three give nine clips.
    assert saved["pipeline"]["clips"] == 9 and saved["pipeline"]["clips_per_s"] > 0
    assert saved["ratios"] == {"fp32": {"speed_vs_fp32": 1.0}}
    printed = capsys.readouterr().out
    assert "train                             fp32: warmup_s=" in printed
    assert f"wrote {tmp_path / 'gpu_check.json'}" in printed


@pytest.mark.slow
def test_smoke_run_of_every_variant(gpu_check, tmp_path):
    # bf16 convolutions are slow on CPU (no fast kernels): tens of seconds.
    report = gpu_check.main(["--smoke", "--budget-s", "1e9", "--out", str(tmp_path)])
    names = [r["variant"]["name"] for r in report["training"]]
    assert names == [v.name for v in gpu_check.VARIANTS]
    for result in report["training"] + report["extraction"]:
        assert "error" not in result and "skipped" not in result, result
    assert report["pipeline"] == {"skipped": "no loader given (--loader module:function)"}
    assert set(report["ratios"]) == set(names)


def test_time_budget_skips_the_rest(gpu_check):
    sizes = gpu_check.Sizes(**(gpu_check.asdict(gpu_check.SMOKE) | {"budget_s": 0.0}))
    report = gpu_check.run_checks(sizes, torch.device("cpu"))
    assert all("skipped" in r for r in report["training"] + report["extraction"])
    assert report["ratios"] == {}


def test_errors_are_recorded_not_raised(gpu_check):
    def broken() -> dict:
        raise RuntimeError("no kernel for this")

    assert gpu_check.run_guarded(broken, torch.device("cpu")) == {
        "error": "RuntimeError: no kernel for this"
    }


def test_bad_arguments(gpu_check):
    with pytest.raises(SystemExit, match="unknown variants \\['fp16'\\]"):
        gpu_check.main(["--smoke", "--variants", "fp16"])
    with pytest.raises(SystemExit, match="module:function"):
        gpu_check.load_callable("no_colon")
