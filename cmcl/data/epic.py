"""EPIC-Kitchens annotations: the MM-SADA domain-adaptation split pickles.

Each split is a pickled pandas DataFrame ``D{1,2,3}_{train,test}.pkl``, one row
per action segment, with the columns (shared/data/README.md, SPEC section 9)::

    uid              int   unique segment id
    participant_id   str   P08 | P01 | P22 (one participant per domain)
    video_id         str   P08_01
    narration        str   free text
    start_timestamp  str   HH:MM:SS.ss
    stop_timestamp   str   HH:MM:SS.ss
    start_frame      int   first RGB frame (frames are numbered from 1)
    stop_frame       int   last RGB frame
    verb             str   the annotated verb
    verb_class       int   0..7: take, put, open, close, wash, cut, mix, pour

A pickle can run arbitrary code when it is loaded, so :func:`load_split`
unpickles through :class:`RestrictedUnpickler`, which resolves only the pandas,
numpy (and pyarrow, for pandas' string dtype) names a DataFrame pickle needs and
refuses every other global before anything is called.
"""

from __future__ import annotations

import importlib
import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DOMAIN_PARTICIPANTS: Mapping[str, str] = {"D1": "P08", "D2": "P01", "D3": "P22"}
SPLITS = ("train", "test")
INT_COLUMNS = ("uid", "start_frame", "stop_frame", "verb_class")
STR_COLUMNS = (
    "participant_id",
    "video_id",
    "narration",
    "start_timestamp",
    "stop_timestamp",
    "verb",
)
COLUMNS = (
    "uid",
    "participant_id",
    "video_id",
    "narration",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
    "verb",
    "verb_class",
)

# (module, name) pairs a DataFrame pickle may name, across the pandas (1.x-3.x)
# and numpy (1.x, 2.x) versions that wrote the splits in the wild. Everything
# here only rebuilds data; nothing can reach the file system, a shell or eval.
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    [
        ("pandas", "DataFrame"),
        ("pandas.core.frame", "DataFrame"),
        ("pandas", "Index"),
        ("pandas", "RangeIndex"),
        ("pandas.core.indexes.base", "Index"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.range", "RangeIndex"),
        ("pandas.core.indexes.numeric", "Int64Index"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas.core.internals.blocks", "new_block"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas._libs.internals", "BlockPlacement"),
        ("pandas", "StringDtype"),
        ("pandas", "NA"),
        ("pandas._libs.missing", "NA"),
        ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
        ("pandas.core.arrays.string_", "StringDtype"),
        ("pandas.core.arrays.string_", "StringArray"),
        ("pandas.arrays", "StringArray"),
        ("pandas.arrays", "ArrowStringArray"),
        ("pandas.core.arrays.string_arrow", "ArrowStringArray"),
        ("pyarrow.lib", "_restore_array"),
        ("pyarrow.lib", "py_buffer"),
        ("pyarrow.lib", "type_for_alias"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        *[
            (f"numpy.{core}.{module}", name)
            for core in ("core", "_core")
            for module, name in (
                ("multiarray", "_reconstruct"),
                ("multiarray", "scalar"),
                ("numeric", "_frombuffer"),
            )
        ],
        ("builtins", "slice"),
        ("builtins", "bytearray"),
        ("_codecs", "encode"),
    ]
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle named a global outside the allow-list (it was not loaded)."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the allow-listed pandas/numpy globals."""

    def __init__(self, file: io.BufferedIOBase, *, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"{self.source}: refused to load global {module}.{name}; a split pickle may "
                "only name pandas/numpy data types (is this file from a trusted source?)"
            )
        # numpy 2 moved numpy.core to numpy._core and warns on the old path.
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core." + module[len("numpy.core.") :]
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as error:
            raise pickle.UnpicklingError(
                f"{self.source}: {module}.{name} does not exist in this pandas "
                f"{pd.__version__} / numpy {np.__version__}: {error}"
            ) from None


def restricted_load(path: str | Path) -> Any:
    """Unpickle ``path`` allowing only pandas/numpy data types (see :class:`RestrictedUnpickler`)."""
    path = Path(path)
    with path.open("rb") as handle:
        try:
            return RestrictedUnpickler(handle, source=str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError) as error:
            if str(path) in str(error):  # our own messages already name the file
                raise
            raise ValueError(
                f"{path}: truncated or damaged pickle ({error}); download this MM-SADA split "
                "file again"
            ) from None


def _check_columns(frame: pd.DataFrame, source: str) -> None:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{source}: missing columns {missing}; an MM-SADA split has {', '.join(COLUMNS)}"
        )
    for column in INT_COLUMNS:
        if not pd.api.types.is_integer_dtype(frame[column].dtype):
            raise ValueError(
                f"{source}: column {column!r} must hold integers, got dtype {frame[column].dtype}"
            )
    for column in STR_COLUMNS:
        values = frame[column]
        is_text = pd.api.types.is_string_dtype(values.dtype) or values.dtype == object
        bad = [v for v in values if not isinstance(v, str)] if is_text else list(values[:1])
        if bad:
            raise ValueError(
                f"{source}: column {column!r} must hold strings, found {bad[0]!r} "
                f"(dtype {values.dtype})"
            )


def _check_values(frame: pd.DataFrame, source: str) -> None:
    def first(mask: pd.Series) -> str:
        row = frame[mask].iloc[0]
        return (
            f"uid {row['uid']} (start_frame {row['start_frame']}, stop_frame {row['stop_frame']})"
        )

    if (frame["start_frame"] < 0).any():
        raise ValueError(
            f"{source}: column 'start_frame' is negative at {first(frame['start_frame'] < 0)}"
        )
    if (frame["stop_frame"] < frame["start_frame"]).any():
        mask = frame["stop_frame"] < frame["start_frame"]
        raise ValueError(f"{source}: column 'stop_frame' is before 'start_frame' at {first(mask)}")
    if (frame["verb_class"] < 0).any():
        raise ValueError(f"{source}: column 'verb_class' has negative class indices")
    if not frame["uid"].is_unique:
        duplicated = frame["uid"][frame["uid"].duplicated()].iloc[0]
        raise ValueError(f"{source}: column 'uid' is not unique (uid {duplicated} repeats)")


def load_split(path: str | Path) -> pd.DataFrame:
    """Read one MM-SADA split pickle safely and validate its columns and values.

    Returns the frame with a fresh ``RangeIndex`` (row i = memory-bank row i) and
    the integer columns as int64, string columns as Python ``str`` objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such split file")
    frame = restricted_load(path)
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{path}: expected a pickled pandas DataFrame, got {type(frame).__name__}")
    source = str(path)
    _check_columns(frame, source)
    frame = frame.loc[:, list(COLUMNS)].reset_index(drop=True)
    frame = frame.astype({c: np.int64 for c in INT_COLUMNS} | {c: object for c in STR_COLUMNS})
    _check_values(frame, source)
    return frame


def split_path(directory: str | Path, domain: str, split: str) -> Path:
    """``directory/D1_train.pkl`` for domain D1 and split train."""
    if domain not in DOMAIN_PARTICIPANTS:
        raise ValueError(f"unknown EPIC domain {domain!r}; valid: {', '.join(DOMAIN_PARTICIPANTS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return Path(directory) / f"{domain}_{split}.pkl"


def load_domain_split(directory: str | Path, domain: str, split: str) -> pd.DataFrame:
    """One domain's split, checked to hold only that domain's participant (D1=P08, D2=P01, D3=P22)."""
    path = split_path(directory, domain, split)
    frame = load_split(path)
    expected = DOMAIN_PARTICIPANTS[domain]
    others = sorted(set(frame["participant_id"]) - {expected})
    if others:
        raise ValueError(
            f"{path}: domain {domain} is participant {expected}, but column 'participant_id' "
            f"also holds {others}"
        )
    return frame


def load_splits(directory: str | Path) -> dict[tuple[str, str], pd.DataFrame]:
    """Every ``D{1,2,3}_{train,test}.pkl`` of ``directory``, keyed by (domain, split)."""
    return {
        (domain, split): load_domain_split(directory, domain, split)
        for domain in DOMAIN_PARTICIPANTS
        for split in SPLITS
    }
