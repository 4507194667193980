"""The study files under studies/: valid, with their synthetic twins and the paper's grids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SHARED

from cmcl.methods.registry import METHODS
from cmcl.study._build import grid_trial_count
from cmcl.study.directory import command_line_overrides, runs_per_trial
from cmcl.study.spec import load_spec

STUDIES = sorted((ROOT / "studies").glob("*.yaml"))


def loaded(path: Path):
    named = set(yaml.safe_load(path.read_text())["methods"])
    assert named <= set(METHODS), f"{path.name} names unregistered methods {named - set(METHODS)}"
    return load_spec(path)


def test_every_expected_file_is_there():
    expected = {
        "quickstart",
        "table2_ucf_hmdb",
        "table3_epic",
        "table4_ablation",
        "table5_sampling",
        "table6_sensitivity",
        "table7_projection_head",
        "table8_alignment",
        "hpo_epic",
        "hpo_ucf_hmdb",
        "hpo_epic_two_fidelity",
        "hpo_ucf_hmdb_two_fidelity",
        "two_fidelity_synthetic",
    }
    assert {p.stem for p in STUDIES} == expected


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_valid_runnable_on_real_features_and_with_a_synthetic_twin(path, tmp_path):
    spec = loaded(path)
    assert spec.name == path.stem
    twin = spec.on_synthetic()
    assert all(b.startswith("synthetic-") for b in twin.benchmarks)
    assert twin.pairs and [p for _, p in twin.pairs] == [p for _, p in spec.pairs]
    if spec.benchmarks != twin.benchmarks:
        overrides = command_line_overrides(spec, features=(str(tmp_path),))
        assert set(overrides) == set(spec.benchmarks)


PAPER = json.loads((SHARED / "paper" / "tables.json").read_text())


@pytest.mark.parametrize(
    "path", [p for p in STUDIES if p.stem.startswith("table")], ids=lambda p: p.stem
)
def test_table_files_are_the_paper_grids_with_three_seeds(path):
    spec = loaded(path)
    (table,) = spec.tables
    rows = PAPER[table]["rows"]
    paper_methods = {r["method"] for r in rows if "method" in r}
    assert set(spec.methods) == paper_methods
    assert spec.seeds == (0, 1, 2) and spec.searcher == "grid" and spec.objective == "per_pair"
    pairs = PAPER["ucf_hmdb_pairs"] if table == "table2_ucf_hmdb" else PAPER["epic_pairs"]
    assert [p for _, p in spec.pairs] == [p.replace("->", "-") for p in pairs]
    # One configuration per two-stream row of the paper's table.
    configurations = grid_trial_count(spec) // len(spec.pairs)
    assert configurations == len([r for r in rows if "method" in r])


def test_hpo_files_search_lambda_tau_t_delta_on_the_mean():
    for name in ("hpo_epic", "hpo_ucf_hmdb"):
        spec = loaded(ROOT / "studies" / f"{name}.yaml")
        assert {p.key for p in spec.search} == {
            "method.lam",
            "method.tau",
            "method.threshold",
            "method.delta",
        }
        assert (spec.searcher, spec.objective, spec.scheduler.name) == ("optuna", "mean", "asha")
        assert runs_per_trial(spec) == len(spec.pairs)


def test_quickstart_is_small():
    spec = loaded(ROOT / "studies" / "quickstart.yaml")
    assert spec.benchmarks == ("synthetic-epic",) and grid_trial_count(spec) == 4
    steps = dict(spec.settings)
    assert steps["train.warmup_steps"] + steps["train.steps"] <= 1000


@pytest.mark.parametrize(
    "path", [p for p in STUDIES if p.stem.endswith("_two_fidelity")], ids=lambda p: p.stem
)
def test_two_fidelity_files_screen_the_hpo_space_and_need_both_locations(path, tmp_path):
    from cmcl.study.fidelity import check_locations

    spec = loaded(path)
    plain = load_spec(path.with_name(path.name.replace("_two_fidelity", "")))
    assert spec.search == plain.search and spec.pairs == plain.pairs
    assert spec.fidelity.top_k == 3 and spec.fidelity.also_confirm == ("source_only",)
    both = command_line_overrides(spec, features=(str(tmp_path),), root=(str(tmp_path),))
    check_locations(spec, both)
    with pytest.raises(ValueError, match="give the frames"):
        check_locations(spec, command_line_overrides(spec, features=(str(tmp_path),)))
