"""Two-fidelity studies without Ray: the file's key, the stages' settings, what is confirmed."""

from __future__ import annotations

import pytest

from cmcl.study.directory import StudyDir, create_study_dir, expected_trials
from cmcl.study.fidelity import check_locations, chosen, confirm_spec, split_overrides
from cmcl.study.plan import grid_points
from cmcl.study.records import RunRecord, StudyState, TrialRecord
from cmcl.study.spec import StudySpecError, parse_spec


def _spec(**changes):
    data = {
        "name": "two",
        "benchmark": "epic",
        "pairs": ["D2-D1", "D3-D1"],
        "methods": ["cmco"],
        "settings": {"train.steps": 100},
        "search": {"lambda": [0.5, 1.0, 2.0], "T": [0.6, 0.9]},
        "fidelity": {"top_k": 2, "also_confirm": ["source_only"]},
    }
    data.update(changes)
    return parse_spec(data)


def _trial(number: int, pair: str, value: float | None, lam: float, state="done"):
    return TrialRecord(
        trial_id=f"t{number:04d}",
        number=number,
        method="cmco",
        variant=None,
        pairs=[["epic", pair]],
        params={"method.lam": lam, "method.threshold": 0.6},
        names={},
        description="",
        runs=[RunRecord(run_id=f"t{number:04d}-{pair}-s0", benchmark="epic", pair=pair, seed=0)],
        state=state,
        value=value,
    )


def test_the_fidelity_key_and_its_errors():
    spec = _spec()
    assert spec.fidelity.top_k == 2 and spec.fidelity.also_confirm == ("source_only",)
    assert parse_spec(spec.to_dict()) == spec
    assert _spec(fidelity={"top_k": "all"}).fidelity.top_k is None
    for fidelity, message in (
        ({"screen": "video"}, "'fidelity.screen': must be one of features"),
        ({"top_k": 0}, "'fidelity.top_k': must be >= 1"),
        ({"also_confirm": ["nope"]}, "unknown method 'nope'"),
        ({"topk": 3}, "topk"),
    ):
        with pytest.raises(StudySpecError, match=message):
            _spec(fidelity=fidelity)


def test_the_best_per_pair_are_confirmed_with_their_exact_settings(tmp_path):
    spec = _spec()
    trials = [
        _trial(0, "D2-D1", 50.0, 0.5),
        _trial(1, "D2-D1", 55.0, 1.0),
        _trial(2, "D2-D1", 53.0, 2.0),
        _trial(3, "D3-D1", 40.0, 0.5),
        _trial(4, "D3-D1", None, 1.0, state="errored"),
        _trial(5, "D3-D1", 60.0, 2.0),
    ]
    assert [t.trial_id for t in chosen(spec, trials)] == ["t0001", "t0002", "t0003", "t0005"]
    screen = StudyDir(tmp_path / "screen")
    screen.store.write_json("study.json", {"name": "two-screen"})
    screen.write_state(StudyState(trials={t.trial_id: t for t in trials}))
    confirm = confirm_spec(spec, screen)
    assert confirm.name == "two-confirm" and confirm.searcher == "grid"
    assert confirm.methods == ("cmco", "source_only")
    variants = {v.name: v for v in confirm.variants}
    assert sorted(variants) == ["screen-t0001", "screen-t0002", "screen-t0003", "screen-t0005"]
    assert dict(variants["screen-t0005"].settings) == {"method.lam": 2.0, "method.threshold": 0.6}
    assert variants["screen-t0005"].pairs == ("D3-D1",)
    # Each chosen configuration on its own pair, and the baseline on every pair.
    points = grid_points(confirm)
    assert expected_trials(confirm) == len(points) == 4 + 2
    assert {(p["variant"], p["pair"]) for p in points if p["method"] == "cmco"} == {
        ("screen-t0001", "epic/D2-D1"),
        ("screen-t0002", "epic/D2-D1"),
        ("screen-t0003", "epic/D3-D1"),
        ("screen-t0005", "epic/D3-D1"),
    }


def test_nothing_to_confirm_is_an_error_that_says_why(tmp_path):
    screen = StudyDir(tmp_path / "screen")
    screen.write_state(StudyState(trials={"t0000": _trial(0, "D2-D1", None, 1.0, "errored")}))
    with pytest.raises(ValueError, match="finished no configuration"):
        confirm_spec(_spec(), screen)


def test_each_stage_gets_its_own_data_and_both_need_theirs(tmp_path):
    overrides = {
        "epic": {
            "data.features": "/f",
            "data.root": "/r",
            "data.splits": "/s",
            "model.backbone": "i3d",
            "model.i3d_rgb": "/rgb.pt",
        }
    }
    stages = split_overrides(overrides)
    assert stages["screen"] == {"epic": {"data.features": "/f", "model.i3d_rgb": "/rgb.pt"}}
    assert stages["confirm"] == {
        "epic": {
            "data.root": "/r",
            "data.splits": "/s",
            "model.backbone": "i3d",
            "model.i3d_rgb": "/rgb.pt",
        }
    }
    with pytest.raises(ValueError, match="confirms in video mode: give the frames of epic"):
        check_locations(_spec(), {"epic": {"data.features": "/f"}})
    with pytest.raises(ValueError, match="screens in feature mode: give the feature store"):
        check_locations(_spec(), {"epic": {"data.root": "/r"}})
    study = create_study_dir(_spec(), storage=tmp_path, overrides=overrides)
    assert study.read_meta()["fidelity"]["stages"] == ["two-screen", "two-confirm"]


def test_a_variants_pairs_are_for_per_pair_studies():
    with pytest.raises(StudySpecError, match="apply to objective per_pair"):
        parse_spec(
            {
                "name": "x",
                "benchmark": "epic",
                "pairs": ["D2-D1", "D3-D1"],
                "methods": ["cmco"],
                "objective": "mean",
                "variants": [{"name": "a", "pairs": ["D2-D1"]}],
            }
        )
    with pytest.raises(StudySpecError, match="'D1-D2' is not one of the study's pairs"):
        parse_spec(
            {
                "name": "x",
                "benchmark": "epic",
                "pairs": ["D2-D1"],
                "methods": ["cmco"],
                "variants": [{"name": "a", "pairs": ["D1-D2"]}],
            }
        )
