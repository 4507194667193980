"""Study resources: fractional GPUs pack feature-mode runs, counted as Ray counts (no Ray started)."""

from __future__ import annotations

import dataclasses

import pytest

from cmcl.study.resources import (
    check_resources,
    describe_cluster,
    describe_run,
    runs_at_once,
    runs_held,
)
from cmcl.study.spec import parse_spec


def spec_of(resources=None, **extra):
    return parse_spec(
        {
            "name": "packed",
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1", "D3-D1"],
            "methods": ["source_only", "cmco", "mmd"],
            "resources": {"gpus_per_worker": 0.25, **(resources or {})},
            **extra,
        }
    )


def with_resources(spec, **values):
    # As `cmcl study run --gpus-per-worker ...` does: past the file's validation.
    return dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, **values))


@pytest.mark.parametrize(
    ("gpus", "cluster", "at_once"),
    [
        (0.25, {"CPU": 16, "GPU": 1}, 4),
        (0.25, {"CPU": 2, "GPU": 1}, 2),  # bound by CPUs
        (0.5, {"CPU": 16, "GPU": 1}, 2),
        (0.3, {"CPU": 8, "GPU": 2}, 6),
        (0.3, {"CPU": 16, "GPU": 1}, 3),  # 3 x 0.3 = 0.9 fits one GPU
        (0.25, {"CPU": 16, "GPU": 1}, 4),  # 4 x 0.25 fills it exactly
        (0.1, {"CPU": 16, "GPU": 1}, 10),  # 10 x 0.1, float sums aside
        (0.2, {"CPU": 32, "GPU": 2}, 10),
        # A 0.4 share never straddles two GPUs: two per GPU, 4 on two (not 5).
        (0.4, {"CPU": 16, "GPU": 2}, 4),
        (1, {"CPU": 16, "GPU": 2}, 2),
    ],
)
def test_fractional_gpus_pack_runs(gpus, cluster, at_once):
    resources = spec_of({"gpus_per_worker": gpus}).resources
    assert runs_at_once([cluster], resources) == at_once
    # What the runs at once reserve together never exceeds the cluster.
    assert at_once * gpus <= cluster["GPU"] + 1e-9
    assert at_once <= cluster["CPU"]


def test_a_worker_never_spans_two_nodes_but_a_runs_workers_may():
    one_cpu_each = [{"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 0.0}]
    two_cpus = spec_of({"gpus_per_worker": 0, "cpus_per_worker": 2}).resources
    assert runs_at_once(one_cpu_each, two_cpus) == 0
    two_workers = spec_of({"gpus_per_worker": 0, "workers": 2}).resources
    assert runs_at_once(one_cpu_each, two_workers) == 1
    assert describe_cluster(one_cpu_each) == "2 CPU, 0 GPU on 3 node(s)"
    assert describe_run(two_workers) == "2 CPU (2 workers)"


def test_runs_held_counts_in_rays_units():
    assert runs_held({"CPU": 64, "GPU": 1}, workers=1, cpus_per_worker=1, gpus_per_worker=0.1) == 10
    # 0.7 / 0.1 is 6.999... in floating point; in Ray's units it is 7.
    assert (
        runs_held({"CPU": 64, "GPU": 0.7}, workers=1, cpus_per_worker=1, gpus_per_worker=0.1) == 7
    )
    assert (
        runs_held({"CPU": 3, "GPU": 8}, workers=1, cpus_per_worker=0.3, gpus_per_worker=0.5) == 10
    )
    assert runs_held({"CPU": 8, "GPU": 4}, workers=2, cpus_per_worker=1, gpus_per_worker=1) == 2
    assert runs_held({"CPU": 8}, workers=1, cpus_per_worker=1, gpus_per_worker=0.25) == 0


def test_a_fraction_reaches_each_runs_resource_request():
    from cmcl.ray.executor import task_options

    options = task_options(spec_of(seeds=3).resources)
    assert (options["num_cpus"], options["num_gpus"]) == (1.0, 0.25)
    assert describe_run(spec_of().resources) == "1 CPU + 0.25 GPU (1 worker)"
    # A run of several workers holds nothing itself: its Ray Train workers do.
    assert task_options(spec_of({"gpus_per_worker": 1, "workers": 2}).resources) == {
        "num_cpus": 0,
        "num_gpus": 0,
    }


@pytest.mark.parametrize(
    ("resources", "extra", "overrides", "message"),
    [
        ({"workers": 2}, {}, None, r"gpus_per_worker=0\.25 with workers=2: .*NCCL refuses"),
        (
            {},
            {"settings": {"model.backbone": "i3d"}},
            None,
            r"gpus_per_worker=0\.25 in video mode .*from settings\): .*whole GPU",
        ),
        (
            {},
            {},
            {"synthetic-epic": {"model.backbone": "i3d"}},
            r"video mode .*from --root/--set for synthetic-epic",
        ),
        (
            {},
            {"variants": [{"name": "video", "settings": {"model.backbone": "i3d"}}]},
            None,
            r"video mode .*from variant video",
        ),
        ({"gpus_per_worker": 1.5}, {}, None, r"gpus_per_worker=1\.5: a worker trains on one GPU"),
        ({"gpus_per_worker": 2}, {}, None, r"gpus_per_worker=2: a worker trains on one GPU"),
        (
            {"gpus_per_worker": 1 / 3},
            {},
            None,
            r"gpus_per_worker=0\.333.*steps of 0\.0001.*e\.g\. 0\.3333",
        ),
        ({"gpus_per_worker": 0.00001}, {}, None, r"steps of 0\.0001.*e\.g\. 0\.0001$"),
    ],
)
def test_layouts_no_run_can_use_are_refused(resources, extra, overrides, message):
    spec = spec_of(resources, **extra)
    with pytest.raises(ValueError, match=message):
        check_resources(spec, overrides)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"gpus_per_worker": float("nan")},
            r"gpus_per_worker must be a finite number >= 0; got nan",
        ),
        (
            {"gpus_per_worker": float("inf")},
            r"gpus_per_worker must be a finite number >= 0; got inf",
        ),
        ({"gpus_per_worker": -0.5}, r"gpus_per_worker must be a finite number >= 0; got -0\.5"),
        ({"cpus_per_worker": 0.0}, r"cpus_per_worker must be a finite number > 0; got 0\.0"),
    ],
)
def test_command_line_values_are_checked_like_the_files(values, message):
    with pytest.raises(ValueError, match=message):
        check_resources(with_resources(spec_of(), **values))


def test_whole_gpus_and_cpu_runs_are_unchanged():
    check_resources(spec_of({"gpus_per_worker": 1, "workers": 4}))
    check_resources(spec_of({"gpus_per_worker": 0}, settings={"model.backbone": "i3d"}))
    check_resources(spec_of({"gpus_per_worker": 1}, settings={"model.backbone": "i3d"}))


def test_a_refused_layout_fails_before_the_study_directory_or_ray(tmp_path):
    from cmcl.ray.study import run_new_study

    spec = spec_of({"workers": 2})
    with pytest.raises(ValueError, match="NCCL refuses"):
        run_new_study(spec, storage=tmp_path, echo=False)
    assert list(tmp_path.iterdir()) == []
