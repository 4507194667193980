"""Fractional GPUs on a real Ray (slow): Ray packs as the plan counts, and a packed study runs.

Ray is started with GPUs it only declares (``num_gpus``), so these run on a
CPU machine: Ray hands out GPU shares and sets CUDA_VISIBLE_DEVICES, and the
runs, finding no CUDA, train on the CPU. Whether packed runs share a real
GPU's memory well is a device check (docs/studies.md).
"""

from __future__ import annotations

import os

import pytest
from conftest import tiny_overrides

from cmcl.study.resources import runs_held

pytestmark = pytest.mark.slow
CLUSTER = {"CPU": 4.0, "GPU": 2.0}


@pytest.fixture(scope="module")
def fake_gpu_ray():
    import ray

    os.environ.setdefault("RAY_TMPDIR", "/tmp/ray-cmcl-study-tests")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        address="local",
        num_cpus=int(CLUSTER["CPU"]),
        num_gpus=int(CLUSTER["GPU"]),
        include_dashboard=False,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.mark.parametrize("gpus", [0.4, 0.3, 0.25])
def test_ray_places_exactly_the_runs_the_plan_counts(fake_gpu_ray, gpus):
    from ray.util.placement_group import placement_group, remove_placement_group

    held = runs_held(CLUSTER, workers=1, cpus_per_worker=0.1, gpus_per_worker=gpus)
    bundle = {"CPU": 0.1, "GPU": gpus}
    fits = placement_group([bundle] * held)
    try:
        assert fits.wait(30)
    finally:
        remove_placement_group(fits)
    one_more = placement_group([bundle] * (held + 1))
    try:
        assert not one_more.wait(3)
    finally:
        remove_placement_group(one_more)


def test_a_packed_study_runs_its_runs_side_by_side(fake_gpu_ray, tiny_store, tmp_path, capfd):
    from cmcl.ray.study import run_new_study
    from cmcl.study.directory import StudyDir
    from cmcl.study.spec import parse_spec

    settings = tiny_overrides(tiny_store)
    spec = parse_spec(
        {
            "name": "packed",
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1", "D3-D1"],
            "methods": ["cmco"],
            "objective": "mean",
            "settings": {k: v for k, v in settings.items() if k not in ("benchmark", "pair")},
            "resources": {"gpus_per_worker": 0.5},
        }
    )
    path = run_new_study(spec, storage=tmp_path, echo=True)
    # 4 CPUs and 2 GPUs hold four runs of 1 CPU + half a GPU each.
    err = capfd.readouterr().err
    assert "4 run(s) at once, each 1 CPU + 0.5 GPU (1 worker)" in err
    study = StudyDir(path)
    assert study.read_meta()["resolved"]["runs_at_once"] == 4
    (trial,) = study.read_state().trials.values()
    assert trial.state == "done"
    first, second = sorted(trial.runs, key=lambda r: r.began_at)
    assert first.state == second.state == "done"
    # Side by side: the second run started before the first one ended.
    assert second.began_at < first.ended_at
