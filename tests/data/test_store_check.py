"""Feature stores that cannot give a number: `data check --features`, refusals on load, remedies."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_tiny_store

from cmcl.cli import cli
from cmcl.data.feature_store import (
    FeaturePairData,
    read_meta,
    read_split,
    split_path,
    write_split,
)
from cmcl.data.store_check import check_store
from cmcl.data.store_errors import DamagedFileError
from cmcl.data.synthetic import SyntheticParams, synthetic_store


def _rewrite(store, domain, split, change):
    data = read_split(store, domain, split)
    ids, labels = list(data.segment_ids), data.labels.numpy().copy()
    rgb, flow = data.rgb.numpy().copy(), data.flow.numpy().copy()
    ids, labels, rgb, flow = change(ids, labels, rgb, flow)
    write_split(
        store, domain=domain, split=split, segment_ids=ids, labels=labels, rgb=rgb, flow=flow
    )


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _load(store, source="D2", target="D1"):
    return FeaturePairData(
        store, benchmark="synthetic-epic", source=source, target=target, synchronised=False
    )


def test_an_intact_store_passes(tiny_store):
    report = check_store(tiny_store)
    assert report.passed and [s.name for s in report.splits][:2] == ["D1 train", "D1 test"]
    assert "D1 train: 48 segments, 3 windows x 16: ok" in report.summary()
    result = CliRunner().invoke(cli, ["data", "check", "--features", str(tiny_store)])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("OK")


def test_every_kind_of_bad_split_is_reported(tmp_path):
    store = write_tiny_store(tmp_path / "store")

    def nan_rows(ids, labels, rgb, flow):
        rgb[5, 0, 0] = np.nan
        rgb[9, 2, 1] = np.inf
        return ids, labels, rgb, flow

    def bad_label(ids, labels, rgb, flow):
        labels[4] = 99
        return ids, labels, rgb, flow

    _rewrite(store, "D1", "test", nan_rows)
    _rewrite(store, "D2", "test", lambda *columns: tuple(c[:0] for c in columns))
    _rewrite(store, "D2", "train", bad_label)
    _truncate(split_path(store, "D3", "train"))
    split_path(store, "D3", "test").unlink()

    report = check_store(store)
    assert not report.passed
    problems = {s.name: "; ".join(s.problems) for s in report.splits}
    assert problems["D1 train"] == ""
    assert problems["D1 test"] == (
        "2 of 24 rows have a non-finite rgb feature; the first is row 5 "
        "(segment_id 'D1-test-5'), value nan"
    )
    assert problems["D2 test"].startswith("no segments")
    assert (
        "label outside 0..7; the first is row 4 (segment_id 'D2-train-4'), label 99"
        in (problems["D2 train"])
    )
    assert problems["D3 train"].startswith("cannot be read (")
    assert problems["D3 test"] == "missing file D3_test.parquet"

    result = CliRunner().invoke(cli, ["data", "check", "--features", str(store)])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "row 5 (segment_id 'D1-test-5')" in result.output
    only_d1 = CliRunner().invoke(
        cli, ["data", "check", "--features", str(store), "--domains", "D1"]
    )
    assert only_d1.exit_code == 1 and "D2" not in only_d1.output


def test_cli_refuses_mixed_or_mismatched_options(tiny_store, tmp_path):
    runner = CliRunner()
    both = runner.invoke(cli, ["data", "check", "--features", str(tiny_store), "--root", "."])
    assert both.exit_code != 0 and "not both or neither" in both.output
    neither = runner.invoke(cli, ["data", "check"])
    assert neither.exit_code != 0 and "--root (frames) or --features" in neither.output
    splits = runner.invoke(cli, ["data", "check", "--features", str(tiny_store), "--splits", "."])
    assert splits.exit_code != 0 and "--splits apply to frames" in splits.output
    other = runner.invoke(
        cli, ["data", "check", "--features", str(tiny_store), "--benchmark", "epic"]
    )
    assert other.exit_code != 0 and "holds a synthetic-epic store" in other.output
    absent = runner.invoke(cli, ["data", "check", "--features", str(tmp_path)])
    assert absent.exit_code != 0 and "not a feature store (no meta.json)" in absent.output


def test_a_damaged_split_file_is_named_on_load(tmp_path):
    store = write_tiny_store(tmp_path / "store")
    _truncate(split_path(store, "D1", "test"))
    with pytest.raises(DamagedFileError) as info:
        _load(store)
    message = str(info.value)
    assert message.startswith(f"{split_path(store, 'D1', 'test')}: cannot be read (")
    assert "damaged or truncated" in message and "Write the split file again" in message
    (store / "meta.json").write_text('{"format": ')
    with pytest.raises(DamagedFileError, match=r"meta\.json: cannot be read \(not JSON"):
        _load(store)


def test_a_damaged_synthetic_cache_says_to_delete_it_and_is_regenerated(tmp_path):
    params = SyntheticParams().replace(feature_dim=8)
    root = synthetic_store("synthetic-ucf-hmdb", cache_dir=tmp_path, params=params)
    _truncate(split_path(root, "H", "test"))

    def load():
        return FeaturePairData(
            root, benchmark="synthetic-ucf-hmdb", source="U", target="H", synchronised=False
        )

    with pytest.raises(DamagedFileError) as info:
        load()
    assert str(info.value).startswith(f"{split_path(root, 'H', 'test')}: cannot be read")
    assert f"{root} is a cached synthetic store: delete that directory" in str(info.value)
    shutil.rmtree(root)  # the remedy the message gives
    assert synthetic_store("synthetic-ucf-hmdb", cache_dir=tmp_path, params=params) == root
    assert load().info.sizes["target_test"] == 360

    (root / "meta.json").write_text("{")
    with pytest.raises(ValueError, match=r"meta\.json: cannot be read .* delete that directory"):
        synthetic_store("synthetic-ucf-hmdb", cache_dir=tmp_path, params=params)


@pytest.mark.usefixtures("one_thread")
def test_a_damaged_extracted_split_is_recomputed_as_the_message_says(tiny_videos, tmp_path):
    from cmcl.data.extract import ExtractSettings, extract_store

    settings = ExtractSettings(
        benchmark="epic",
        root=str(tiny_videos.root),
        domains=("D1",),
        windows=1,
        crop_size=16,
        random_seed=0,
        loader_workers=0,
        batch_size=4,
        shard_size=8,
    )
    store = tmp_path / "store"
    extract_store(settings, store, progress=False)
    path = split_path(store, "D1", "test")
    intact = read_split(store, "D1", "test")
    _truncate(path)
    with pytest.raises(DamagedFileError, match="run `cmcl features extract` again") as info:
        read_split(store, "D1", "test")
    assert str(info.value).startswith(f"{path}: cannot be read")
    devices = read_meta(store)["extracted_on"]
    path.unlink()  # the remedy the message gives
    report = extract_store(settings, store, progress=False)
    assert (report.computed, report.skipped) == (1, 1)
    again = read_split(store, "D1", "test")
    assert again.segment_ids == intact.segment_ids and (again.rgb == intact.rgb).all()
    assert check_store(store).passed and read_meta(store)["extracted_on"] == devices

    meta = store / "meta.json"
    meta.write_text(meta.read_text()[:20])
    for attempt in (lambda: read_meta(store), lambda: extract_store(settings, store)):
        with pytest.raises(DamagedFileError, match=r"delete meta\.json and run it again") as info:
            attempt()
        assert str(info.value).startswith(f"{meta}: cannot be read (not JSON")
    meta.unlink()
    report = extract_store(settings, store, progress=False)
    assert report.computed == 0 and check_store(store).passed
