from __future__ import annotations

import shutil

from click.testing import CliRunner

from cmcl.cli import cli
from cmcl.data import epic
from cmcl.data.check import check_frames


def test_intact_tree_passes(tiny_videos):
    report = check_frames("epic", tiny_videos.root)
    assert report.passed
    assert report.total.segments == report.total.ok == 48
    assert report.frames_checked > 0 and not report.missing and not report.corrupt
    assert report.summary().endswith("OK")


def test_finds_a_deleted_and_a_truncated_frame(tiny_videos, tmp_path):
    root = tmp_path / "videos"
    shutil.copytree(tiny_videos.root, root)
    d2 = epic.load_domain_split(root / "splits", "D2", "train").iloc[3]
    deleted = root / "rgb" / "P01" / d2["video_id"] / f"frame_{d2['start_frame'] + 1:010d}.jpg"
    deleted.unlink()
    d3 = epic.load_domain_split(root / "splits", "D3", "test").iloc[5]
    truncated = (
        root
        / "flow"
        / "P22"
        / d3["video_id"]
        / "v"
        / f"frame_{d3['start_frame'] // 2 + 1:010d}.jpg"
    )
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])

    report = check_frames("epic", root)
    assert not report.passed
    assert report.missing == [str(deleted)]
    assert [path for path, _ in report.corrupt] == [str(truncated)]
    assert (report.counts["D2 train"].missing, report.counts["D2 train"].ok) == (1, 7)
    assert (report.counts["D3 test"].corrupt, report.counts["D3 test"].ok) == (1, 7)
    total = report.total
    assert (total.ok, total.missing, total.corrupt) == (46, 1, 1)
    summary = report.summary()
    assert "segments ok / missing / corrupt: 46 / 1 / 1 of 48" in summary
    assert str(deleted) in summary and str(truncated) in summary

    runner = CliRunner()
    result = runner.invoke(cli, ["data", "check", "--root", str(root), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and str(deleted) in result.output
    # Only D1 is intact.
    result = runner.invoke(
        cli, ["data", "check", "--root", str(root), "--domains", "D1", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    # Existence only: the truncated frame passes, the deleted one does not.
    no_decode = check_frames("epic", root, decode=False)
    assert (no_decode.total.missing, no_decode.total.corrupt) == (1, 0)


def test_cli_errors_and_synth_video(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "check", "--root", str(tmp_path), "--quiet"])
    assert result.exit_code != 0 and "D1_train.pkl: no such split file" in result.output
    out = tmp_path / "synth"
    result = runner.invoke(
        cli,
        [
            "data",
            "synth-video",
            "--out",
            str(out),
            "--size",
            "16",
            "--train-per-class",
            "1",
            "--segment-frames",
            "3",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "D1_train 8" in result.output
    assert len(epic.load_split(out / "splits" / "D3_test.pkl")) == 8
    result = runner.invoke(cli, ["data", "check", "--root", str(out), "--quiet"])
    assert result.exit_code == 0, result.output


def test_an_empty_split_fails_the_check(tiny_videos, tmp_path):
    root = tmp_path / "videos"
    shutil.copytree(tiny_videos.root, root)
    pickle = root / "splits" / "D1_test.pkl"
    epic.load_split(pickle).iloc[:0].to_pickle(pickle)

    report = check_frames("epic", root, decode=False)
    assert report.empty == ["D1 test"] and not report.passed
    assert report.total.missing == 0 and report.total.corrupt == 0
    assert "empty splits (no segments; training on them cannot produce a number): D1 test" in (
        report.summary()
    )
    result = CliRunner().invoke(cli, ["data", "check", "--root", str(root), "--quiet"])
    assert result.exit_code == 1 and result.output.rstrip().endswith("FAILED")
    # The other domains are still fine on their own.
    only = CliRunner().invoke(cli, ["data", "check", "--root", str(root), "--domains", "D2,D3"])
    assert only.exit_code == 0, only.output
