"""Bad input ends in one ``Error:`` line naming the file and what to do, not a traceback.

These go through ``cmcl.cli.main`` (the console script), where the top-level
handler lives; ``CliRunner`` would bypass it.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import pickle
import shutil

import pytest
import torch
from conftest import tiny_overrides

from cmcl.cli import VERBOSE_ENV, main
from cmcl.commands.errors import error_message, original_error
from cmcl.data.jpeg import CorruptFrameError


def _sets(pairs: dict) -> list[str]:
    return [arg for key, value in pairs.items() for arg in ("--set", f"{key}={value}")]


def _cmcl(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return done.value.code, out, err


def _error_line(err: str) -> str:
    """The one ``Error:`` line, checked to come without a traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def finished_run(tiny_store, tmp_path, capsys):
    """A tiny feature-mode run trained to the end with non-default settings."""
    out = tmp_path / "run"
    settings = tiny_overrides(tiny_store, **{"lambda": 1.0})
    for key in ("benchmark", "pair"):
        settings.pop(key)
    code, _, err = _cmcl(
        capsys, "train", "--method", "mmd", "--out", out, "--quiet", *_sets(settings)
    )
    assert code == 0, err
    return out


def test_resume_refuses_other_settings_and_keeps_config_json(finished_run, capsys):
    recorded = (finished_run / "config.json").read_bytes()
    args = ["train", "--out", finished_run, "--resume", "--quiet"]
    code, _, err = _cmcl(capsys, *args, "--set", "train.lr=0.5", "--set", "lambda=3")
    assert code == 1
    line = _error_line(err)
    assert f"{finished_run}/config.json records the settings" in line
    assert "train.lr: recorded 0.01, requested 0.5" in line
    assert "method.lam: recorded 1.0, requested 3.0" in line
    assert (finished_run / "config.json").read_bytes() == recorded
    # So is a method other than the recorded one, given as an option.
    code, _, err = _cmcl(capsys, *args, "--method", "cmco")
    assert code == 1 and "method.name: recorded 'mmd', requested 'cmco'" in _error_line(err)


def test_resume_takes_the_recorded_settings_and_allows_operational_ones(finished_run, capsys):
    summary = json.loads((finished_run / "summary.json").read_text())
    newest = max((finished_run / "checkpoints").iterdir())
    shutil.rmtree(newest)  # resume from the one before: training has to run again
    (finished_run / "summary.json").unlink()
    code, out, err = _cmcl(
        capsys, "train", "--out", finished_run, "--resume", "--quiet",
        "--set", "train.keep_checkpoints=3", "--set", "data.loader_workers=0",
    )  # fmt: skip
    assert code == 0, err
    assert "mmd on synthetic-epic D2-D1" in err  # the recorded method, not the default cmco
    config = json.loads((finished_run / "config.json").read_text())
    assert config["method"]["name"] == "mmd" and config["method"]["lam"] == 1.0
    assert config["train"]["keep_checkpoints"] == 3
    assert (
        json.loads((finished_run / "summary.json").read_text())["target_acc"]
        == summary["target_acc"]
    )
    assert f"target accuracy {summary['target_acc']:.2f}%" in out


def test_a_damaged_newest_checkpoint_is_passed_over_saying_so(finished_run, capsys):
    summary = json.loads((finished_run / "summary.json").read_text())
    older, newest = sorted((finished_run / "checkpoints").iterdir())
    state = newest / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])
    (finished_run / "summary.json").unlink()
    code, _, err = _cmcl(capsys, "train", "--out", finished_run, "--resume", "--quiet")
    assert code == 0, err
    assert f"warning: {state}: damaged checkpoint" in err
    assert f"resuming from the previous one, {older}" in err
    # The steps after the fallback are those of the uninterrupted run.
    assert (
        json.loads((finished_run / "summary.json").read_text())["target_acc"]
        == summary["target_acc"]
    )


def test_no_intact_checkpoint_is_an_error(finished_run, capsys):
    for directory in (finished_run / "checkpoints").iterdir():
        (directory / "state.pt").write_bytes(b"not a zip")
    code, _, err = _cmcl(capsys, "train", "--out", finished_run, "--resume", "--quiet")
    assert code == 1
    assert f"no intact checkpoint under {finished_run}/checkpoints" in _error_line(err)


def _video_copy(tiny_videos, tmp_path):
    root = tmp_path / "frames"
    shutil.copytree(tiny_videos.root, root)
    return root


VIDEO_RUN = {
    "data.crop_size": 16,
    "data.test_windows": 1,
    "data.loader_workers": 0,
    "train.warmup_steps": 1,
    "train.steps": 1,
    "train.batch_source": 2,
    "train.batch_target": 2,
}


def _train_video(capsys, root, tmp_path):
    args = ["train", "--benchmark", "epic", "--root", root, "--pair", "D2-D1", "--quiet"]
    return _cmcl(capsys, *args, "--out", tmp_path / "run", *_sets(VIDEO_RUN))


def test_a_truncated_split_pickle_is_named(tiny_videos, tmp_path, capsys):
    root = _video_copy(tiny_videos, tmp_path)
    split = root / "splits" / "D1_train.pkl"
    split.write_bytes(split.read_bytes()[:200])
    code, _, err = _train_video(capsys, root, tmp_path)
    assert code == 1
    assert f"Error: {split}: truncated or damaged pickle" in _error_line(err)


class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_an_unsafe_split_pickle_is_refused_inside_train(tiny_videos, tmp_path, capsys):
    root = _video_copy(tiny_videos, tmp_path)
    split = root / "splits" / "D1_train.pkl"
    marker = tmp_path / "ran"
    split.write_bytes(pickle.dumps(_Shell(marker)))
    code, _, err = _train_video(capsys, root, tmp_path)
    assert code == 1 and not marker.exists()
    assert f"Error: {split}: refused to load global" in _error_line(err)


def test_a_corrupt_frame_names_the_file_and_segment(tiny_videos, tmp_path, capsys, one_thread):
    root = _video_copy(tiny_videos, tmp_path)
    for frame in (root / "rgb" / "P01").rglob("*.jpg"):  # every source RGB frame
        frame.write_bytes(frame.read_bytes()[:100])
    code, _, err = _train_video(capsys, root, tmp_path)
    assert code == 1
    line = _error_line(err)
    assert f"Error: {root}/rgb/P01/" in line and ".jpg: not a complete JPEG" in line
    assert "frame of segment" in line and "cmcl data check" in line


def test_a_read_only_directory_is_named(tiny_store, tmp_path, capsys, monkeypatch):
    # As root, chmod does not stop writes: the file system's refusal is simulated.
    blocked = tmp_path / "read-only"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == blocked or blocked in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    settings = tiny_overrides(tiny_store)
    settings.pop("benchmark"), settings.pop("pair")
    code, _, err = _cmcl(capsys, "train", "--out", blocked / "run", "--quiet", *_sets(settings))
    assert code == 1
    line = _error_line(err)
    assert f"{blocked}/run" in line and "Read-only file system" in line
    assert "choose a writable directory" in line


def test_verbose_shows_the_traceback_and_bugs_keep_theirs(tmp_path, capsys, monkeypatch):
    bad = ["train", "--out", tmp_path / "r", "--set", "T=3"]
    code, _, err = _cmcl(capsys, *bad)
    assert code == 1 and "Traceback" not in err
    assert "threshold T must be in (0, 1], got 3" in _error_line(err)
    # An error the command turned into its own message: --verbose adds the traceback.
    code, _, err = _cmcl(capsys, "--verbose", *bad)
    assert code == 1 and "Traceback" in err and "\nValueError: " in err

    # An error that reaches the top level: an Error: line, or re-raised with --verbose.
    where = "cmcl.launch._holds_checkpoints"
    monkeypatch.setattr(where, _raise(CorruptFrameError("x.jpg: damaged")))
    code, _, err = _cmcl(capsys, *bad[:3])
    assert code == 1 and _error_line(err) == "Error: x.jpg: damaged"
    with pytest.raises(CorruptFrameError):
        main(["--verbose", *map(str, bad[:3])])
    monkeypatch.setenv(VERBOSE_ENV, "1")
    with pytest.raises(CorruptFrameError):
        main([str(a) for a in bad[:3]])
    monkeypatch.delenv(VERBOSE_ENV)
    # Anything else is a bug: its traceback is never hidden.
    monkeypatch.setattr(where, _raise(ZeroDivisionError("bug")))
    with pytest.raises(ZeroDivisionError):
        main([str(a) for a in bad[:3]])


def _raise(error):
    def raiser(*args, **kwargs):
        raise error

    return raiser


def test_an_error_raised_in_a_ray_worker_is_shown_as_its_cause():
    import ray.exceptions

    remote = CorruptFrameError("f/frame_0000000007.jpg: not a complete JPEG")
    wrapped = ray.exceptions.RayTaskError("run", "Traceback ...", remote).as_instanceof_cause()
    assert original_error(wrapped) is remote
    assert error_message(wrapped) == "f/frame_0000000007.jpg: not a complete JPEG"


class _DamagedFrames(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        raise CorruptFrameError(f"f/frame_{index:010d}.jpg: not a complete JPEG")


def test_an_error_raised_in_a_dataloader_worker_loses_the_worker_traceback():
    loader = torch.utils.data.DataLoader(_DamagedFrames(), num_workers=1)
    with pytest.raises(CorruptFrameError) as raised:
        next(iter(loader))
    assert "Original Traceback" in str(raised.value)  # what torch makes of it
    assert error_message(raised.value) == "f/frame_0000000000.jpg: not a complete JPEG"
