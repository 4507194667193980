"""Table captions name the mode and the schedule, read from the runs' recorded config."""

from __future__ import annotations

import pandas as pd
import pytest
from report_fixtures import Run, write_study

from cmcl.data.benchmarks import UCF_HMDB_SCHEDULE
from cmcl.report.build import build_report, runs_with_accuracy
from cmcl.report.document import Text
from cmcl.report.layout import protocol_lines, table_blocks
from cmcl.report.paper import paper_tables
from cmcl.report.protocol import (
    FEATURE_MODE_REAL,
    FEATURE_MODE_SYNTHETIC,
    TABLE5_FEATURE,
    VIDEO_MODE,
    describe_schedule,
    mode_counts,
    run_mode,
    schedule_of,
)
from cmcl.report.store import load_results
from cmcl.report.tables import fill_table

UCF = "ucf-hmdb"
# What `cmcl train --benchmark ucf-hmdb` records: the benchmark's own schedule.
UCF_DEFAULT = dict(UCF_HMDB_SCHEDULE)


def _table(tmp_path, runs, key, benchmark, *, synthetic=False, name="s"):
    study = write_study(tmp_path, name, runs)
    table = runs_with_accuracy(load_results([study]), "last9")
    finished = table[table["finished"]]
    return fill_table(paper_tables()[key], benchmark, synthetic, finished, metric="target_acc")


def _ucf_runs(settings=None, *, video_cmco=False):
    settings = {**UCF_DEFAULT, **(settings or {})}
    runs = []
    for seed in (0, 1):
        for pair, base in (("U-H", 80.0), ("H-U", 88.0)):
            runs.append(Run(UCF, pair, "source_only", seed, base, settings=settings))
            cmco = {**settings, "model.backbone": "i3d"} if video_cmco else settings
            runs.append(Run(UCF, pair, "cmco", seed, base + 3, settings=cmco))
    return runs


def _texts(result) -> list[str]:
    return [b.text for b in table_blocks(result, "last9") if isinstance(b, Text)]


def test_mode_comes_from_the_backbone_and_defaults_to_features():
    assert run_mode("i3d") == "video" and run_mode("features") == "feature"
    assert run_mode(None) == "feature"
    assert mode_counts(pd.DataFrame({"run_key": ["a", "b"]})) == {"feature": 2}
    runs = pd.DataFrame({"run_key": ["a", "b", "b"], "cfg.model.backbone": ["i3d", "x", "x"]})
    assert mode_counts(runs) == {"feature": 1, "video": 1}


def test_table2_names_the_ucf_hmdb_default_protocol_from_the_runs(tmp_path):
    result = _table(tmp_path, _ucf_runs(), "table2_ucf_hmdb", UCF)
    lines = protocol_lines(result)
    assert lines[0] == FEATURE_MODE_REAL
    schedule = lines[1]
    assert schedule.startswith("Schedule (from the runs' recorded config): 3000 warm-up + 6000 ")
    assert "batch 16 source + 16 target" in schedule
    assert "SGD lr 0.01 (×0.1 at adaptation step 3000)" in schedule
    assert "ucf-hmdb's default protocol" in schedule and "SAVA" in schedule
    assert "not ucf-hmdb" not in schedule
    # The caption is part of the table's blocks, above the legend.
    assert schedule in _texts(result)


def test_table2_says_when_the_runs_used_another_schedule(tmp_path):
    runs = _ucf_runs({"train.steps": 2000, "train.batch_source": 8})
    lines = protocol_lines(_table(tmp_path, runs, "table2_ucf_hmdb", UCF))
    assert "3000 warm-up + 2000 adaptation steps, batch 8 source + 16 target" in lines[1]
    assert "not ucf-hmdb's default protocol" in lines[1]
    assert "train.steps 2000 (default 6000)" in lines[1]
    assert "train.batch_source 8 (default 16)" in lines[1]


def test_a_table_mixing_schedules_lists_each(tmp_path):
    runs = _ucf_runs()
    runs += [Run(UCF, "U-H", "mmd", 0, 81.0, settings={**UCF_DEFAULT, "train.lr": 0.001})]
    runs += [Run(UCF, "U-H", "mm_sada", 0, 81.0, settings={**UCF_DEFAULT, "train.lr": 0.001})]
    lines = protocol_lines(_table(tmp_path, runs, "table2_ucf_hmdb", UCF))
    schedule = lines[-1]
    assert schedule.startswith("**Schedules differ between the runs**")
    assert "8 run(s): 3000 warm-up" in schedule and "1 run(s): 3000 warm-up" in schedule
    assert "train.lr 0.001 (default 0.01)" in schedule


def test_video_mode_tables_say_so_and_carry_no_feature_warning(tmp_path):
    runs = [
        Run(UCF, "U-H", m, 0, 80.0, settings={**UCF_DEFAULT, "model.backbone": "i3d"})
        for m in ("source_only", "cmco")
    ]
    lines = protocol_lines(_table(tmp_path, runs, "table2_ucf_hmdb", UCF))
    assert lines[0] == VIDEO_MODE
    assert not any("Feature mode" in line or "feature mode" in line for line in lines)


def test_a_table_mixing_modes_says_which_rows_are_which(tmp_path):
    result = _table(tmp_path, _ucf_runs(video_cmco=True), "table2_ucf_hmdb", UCF)
    mixed = protocol_lines(result)[0]
    assert mixed.startswith("**Mixed modes**: 4 run(s) in feature mode and 4 run(s) in video mode")
    # Source-only is all feature mode; the cmco row's cells are video mode and its gains'
    # baselines feature mode.
    assert "feature mode: Source-only" in mixed
    assert "feature mode + video mode: Ours (final)" in mixed


def test_table5_in_feature_mode_says_what_the_sampling_gain_measures(tmp_path):
    runs = [
        Run("epic", "D2-D1", method, seed, 40.0 + seed, settings={"data.sampling": sampling})
        for method in ("source_only", "cmco")
        for sampling in ("independent", "synchronised")
        for seed in (0, 1)
    ]
    result = _table(tmp_path, runs, "table5_sampling_epic", "epic")
    lines = protocol_lines(result)
    assert lines[:2] == [FEATURE_MODE_REAL, TABLE5_FEATURE]
    table3 = protocol_lines(_table(tmp_path, runs, "table3_epic", "epic", name="t3"))
    assert TABLE5_FEATURE not in table3


def test_synthetic_tables_are_feature_mode_on_generated_vectors(tmp_path):
    runs = [Run("synthetic-ucf-hmdb", "U-H", m, 0, 70.0) for m in ("source_only", "cmco")]
    result = _table(tmp_path, runs, "table2_ucf_hmdb", "synthetic-ucf-hmdb", synthetic=True)
    lines = protocol_lines(result)
    assert lines[0] == FEATURE_MODE_SYNTHETIC
    # The fixture's runs use 100-step evaluations, the synthetic default 20.
    assert (
        "not synthetic-ucf-hmdb's default protocol: train.eval_every 100 (default 20)" in lines[1]
    )


def test_describe_schedule_constant_lr_and_unrecorded_values():
    schedule = schedule_of({"cfg.train.lr_step": 0, "cfg.train.steps": 10})
    text = describe_schedule(schedule)
    assert "? warm-up + 10 adaptation steps" in text and "(constant)" in text


@pytest.fixture
def mixed_report(tmp_path):
    feature = write_study(tmp_path, "feat", _ucf_runs())
    # Better than the feature-mode runs, so that the oracle choice takes them for H→U.
    video = [
        Run(UCF, "H-U", m, 0, level, settings={**UCF_DEFAULT, "model.backbone": "i3d"})
        for m, level in (("source_only", 95.0), ("cmco", 97.0))
    ]
    video_study = write_study(tmp_path, "vid", video)
    out = tmp_path / "report"
    build_report([feature, video_study], out, max_tsne=0)
    return (out / "index.md").read_text()


def test_the_report_shows_each_studys_mode_and_flags_feature_mode(mixed_report):
    md = mixed_report
    overview = md.split("## The paper's tables")[0]
    assert "| Mode " in overview
    assert "| feat " in overview and "| vid " in overview
    feat_line = next(line for line in overview.splitlines() if line.startswith("| feat "))
    vid_line = next(line for line in overview.splitlines() if line.startswith("| vid "))
    assert "| feature " in feat_line and "| video " in vid_line
    assert "**Mixed modes**" in md
    assert "ucf-hmdb's default protocol, SPEC section 7's schedule" in md
    assert "of 10 runs here are in feature mode (studies: feat" in md
