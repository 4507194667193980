from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmcl.data import epic
from cmcl.data.benchmarks import EPIC_CLASSES

SPLITS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "epic_mmsada"
SIZES = {"D1": (1543, 435), "D2": (2495, 750), "D3": (3897, 974)}


def test_real_splits_load_with_documented_counts():
    splits = epic.load_splits(SPLITS)
    assert set(splits) == {(d, s) for d in SIZES for s in ("train", "test")}
    for (domain, split), frame in splits.items():
        assert len(frame) == SIZES[domain][split == "test"], (domain, split)
        assert list(frame.columns) == list(epic.COLUMNS)
        assert sorted(frame["verb_class"].unique()) == list(range(len(EPIC_CLASSES)))
        assert set(frame["participant_id"]) == {epic.DOMAIN_PARTICIPANTS[domain]}
        assert frame.index.equals(pd.RangeIndex(len(frame)))
        assert (frame["stop_frame"] >= frame["start_frame"]).all()
        for column in epic.INT_COLUMNS:
            assert frame[column].dtype == np.int64
    # The README's note: D3_test has only 1 "mix" (6) and 5 "pour" (7).
    counts = splits[("D3", "test")]["verb_class"].value_counts()
    assert (counts[6], counts[7]) == (1, 5)


def test_domain_participants():
    assert epic.DOMAIN_PARTICIPANTS == {"D1": "P08", "D2": "P01", "D3": "P22"}


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_malicious_pickle_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "D1_train.pkl"
    path.write_bytes(pickle.dumps(_RunsShell(marker), protocol=protocol))
    with pytest.raises(epic.UnsafePickleError, match=r"D1_train\.pkl.*(posix|os)\.system"):
        epic.load_split(path)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 10, 0.5])
def test_a_truncated_split_names_its_file(tmp_path, keep):
    data = (SPLITS / "D1_test.pkl").read_bytes()
    path = tmp_path / "D1_test.pkl"
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(ValueError, match=r"D1_test\.pkl: truncated or damaged pickle .*again"):
        epic.load_split(path)


def test_refusal_inside_a_dataframe_payload(tmp_path):
    # A valid frame whose cell holds a payload: refused when the cell's global is met.
    frame = pd.DataFrame({"a": pd.Series([_CallsEval()], dtype=object)})
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(frame, protocol=4))
    with pytest.raises(epic.UnsafePickleError, match=r"evil\.pkl.*builtins\.eval"):
        epic.load_split(path)


def _frame(**changes) -> pd.DataFrame:
    frame = pd.read_pickle(SPLITS / "D1_test.pkl").head(5)
    for column, value in changes.items():
        frame[column] = value
    return frame


def _write(tmp_path: Path, frame, name: str = "D1_test.pkl", protocol: int = 4) -> Path:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(frame, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_frames_pickled_by_this_pandas_load(tmp_path, protocol):
    original = pd.read_pickle(SPLITS / "D1_test.pkl")
    loaded = epic.load_split(_write(tmp_path, original, protocol=protocol))
    pd.testing.assert_frame_equal(loaded, original, check_dtype=False)


def test_string_dtype_columns_load(tmp_path):
    frame = _frame()
    for column in epic.STR_COLUMNS:
        frame[column] = frame[column].astype("string")
    loaded = epic.load_split(_write(tmp_path, frame))
    assert loaded["video_id"].tolist() == frame["video_id"].astype(object).tolist()
    assert loaded["video_id"].dtype == object


def test_not_a_dataframe(tmp_path):
    with pytest.raises(ValueError, match=r"x\.pkl: expected a pickled pandas DataFrame, got dict"):
        epic.load_split(_write(tmp_path, {"a": 1}, "x.pkl"))


def test_missing_column_names_file_and_column(tmp_path):
    path = _write(tmp_path, _frame().drop(columns=["stop_frame"]))
    with pytest.raises(ValueError, match=r"D1_test\.pkl: missing columns \['stop_frame'\]"):
        epic.load_split(path)


def test_wrong_dtype_names_file_and_column(tmp_path):
    path = _write(tmp_path, _frame(start_frame=["1", "2", "3", "4", "5"]))
    with pytest.raises(ValueError, match=r"D1_test\.pkl: column 'start_frame' must hold integers"):
        epic.load_split(path)
    path = _write(tmp_path, _frame(video_id=pd.Series([1, 2, 3, 4, 5], dtype=object)))
    with pytest.raises(
        ValueError, match=r"D1_test\.pkl: column 'video_id' must hold strings, found 1"
    ):
        epic.load_split(path)


def test_bad_values_name_the_segment(tmp_path):
    frame = _frame()
    frame.loc[2, "stop_frame"] = frame.loc[2, "start_frame"] - 1
    uid = frame.loc[2, "uid"]
    with pytest.raises(ValueError, match=rf"'stop_frame' is before 'start_frame' at uid {uid}"):
        epic.load_split(_write(tmp_path, frame))
    frame = _frame(uid=[7, 7, 8, 9, 10])
    with pytest.raises(ValueError, match="column 'uid' is not unique"):
        epic.load_split(_write(tmp_path, frame))


def test_domain_participant_mismatch(tmp_path):
    _write(tmp_path, _frame(participant_id="P01"))
    with pytest.raises(ValueError, match=r"domain D1 is participant P08.*\['P01'\]"):
        epic.load_domain_split(tmp_path, "D1", "test")
    with pytest.raises(ValueError, match="unknown EPIC domain 'D4'"):
        epic.split_path(tmp_path, "D4", "train")
