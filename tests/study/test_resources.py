"""Study resources: fractional GPUs pack feature-mode runs, counted as Ray counts (no Ray started)."""

from __future__ import annotations

import dataclasses

import pytest

from cmcl.study.directory import MEMORY_BUNDLE, plan_resources
from cmcl.study.resources import check_resources, describe_plan, runs_held
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
    ("gpus", "cluster", "seeds", "at_once", "parallel", "concurrent"),
    [
        # One run per trial (per_pair objective, one seed); 6 trials in the study.
        (0.25, {"CPU": 16, "GPU": 1}, 1, 4, 1, 6),
        (0.25, {"CPU": 2, "GPU": 1}, 1, 2, 1, 4),  # bound by CPUs
        (0.5, {"CPU": 16, "GPU": 1}, 1, 2, 1, 4),
        # Several seeds per trial: a trial submits all its runs; twice the trials
        # the slots need are in flight, so a slots' worth of runs waits queued.
        (0.3, {"CPU": 8, "GPU": 2}, 3, 6, 3, 4),
        (0.3, {"CPU": 16, "GPU": 1}, 3, 3, 3, 2),  # 3 x 0.3 = 0.9 fits one GPU
        (0.25, {"CPU": 16, "GPU": 1}, 4, 4, 4, 2),  # 4 x 0.25 fills it exactly
        (0.1, {"CPU": 16, "GPU": 1}, 10, 10, 10, 2),  # 10 x 0.1, float sums aside
        (0.2, {"CPU": 32, "GPU": 2}, 5, 10, 5, 4),
        # A 0.4 share never straddles two GPUs: two per GPU, 4 on two (not 5).
        (0.4, {"CPU": 16, "GPU": 2}, 5, 4, 5, 2),
        (1, {"CPU": 16, "GPU": 2}, 3, 2, 3, 2),
    ],
)
def test_fractional_gpus_pack_runs(gpus, cluster, seeds, at_once, parallel, concurrent):
    plan = plan_resources(spec_of({"gpus_per_worker": gpus}, seeds=seeds), cluster)
    assert (plan["runs_at_once"], plan["parallel_runs"], plan["max_concurrent"]) == (
        at_once,
        parallel,
        concurrent,
    )
    worker = {"CPU": 1.0, "GPU": float(gpus)}
    assert plan["per_run"] == worker
    assert plan["bundles"] == [MEMORY_BUNDLE]  # the trial's token; runs take the slots
    # What the runs at once reserve together never exceeds the cluster.
    assert at_once * gpus <= cluster["GPU"] + 1e-9
    assert at_once <= cluster["CPU"]


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
    from cmcl.ray.trial import run_task_options
    from cmcl.ray.tuner import trial_resources

    spec = spec_of(seeds=3)
    trial = trial_resources(plan_resources(spec, {"CPU": 16, "GPU": 1}))
    assert trial.bundles == [MEMORY_BUNDLE]  # a trial holds no CPU or GPU itself
    options = run_task_options(spec.resources, pool=True)
    assert (options["num_cpus"], options["num_gpus"]) == (1.0, 0.25)
    # Not captured by the trial's placement group: any free slot of the cluster.
    assert options["scheduling_strategy"].placement_group is None


def test_the_plan_line_says_what_runs_at_once():
    plan = plan_resources(spec_of(seeds=3), {"CPU": 8, "GPU": 2})
    assert describe_plan(plan) == (
        "8 run(s) at once on the cluster's free slots, from up to 6 trial(s) in flight "
        "(3 run(s) each), each run 1 CPU + 0.25 GPU"
    )


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
    with pytest.raises(ValueError, match=message):
        plan_resources(spec, {"CPU": 16, "GPU": 4}, overrides=overrides)


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


def test_parallel_runs_above_what_the_cluster_holds_only_queue():
    # Pooled runs wait in Ray's queue for a slot: no trial can be unplaceable.
    spec = spec_of({"parallel_runs": 5}, seeds=5)
    plan = plan_resources(spec, {"CPU": 16, "GPU": 1})
    assert (plan["parallel_runs"], plan["runs_at_once"]) == (5, 4)


def test_a_refused_layout_fails_before_the_study_directory_or_ray(tmp_path):
    from cmcl.ray.study import run_new_study

    spec = spec_of({"workers": 2})
    with pytest.raises(ValueError, match="NCCL refuses"):
        run_new_study(spec, storage=tmp_path, echo=False)
    assert list(tmp_path.iterdir()) == []
