"""Reading a parsed YAML mapping with errors that name the key path and the valid values."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from cmcl.config import resolve_key

STUDY_CONTROLLED = {
    "data.benchmark": "benchmark",
    "data.pair": "pairs",
    "method.name": "methods",
    "train.seed": "seeds",
}
"""Settings a study sets per run: they have their own top-level keys."""
_MISSING = object()


class StudySpecError(ValueError):
    """A study file that cannot run; the message names the file, the key and what is valid."""


class Reader:
    """A mapping (or value) at ``path`` inside the study file ``source``."""

    def __init__(self, data: Any, *, source: str, path: str) -> None:
        self.data = data
        self.source = source
        self.path = path

    def error(self, message: str, key: str | None = None) -> StudySpecError:
        where = self._join(key) if key is not None else self.path
        prefix = f"{self.source}: " + (f"key {where!r}: " if where else "")
        return StudySpecError(prefix + message)

    def _join(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def mapping(self, valid: Iterable[str] | None = None) -> dict[str, Any]:
        """The value as a dict with string keys; ``valid``: the only keys allowed."""
        if self.data is None:
            data: dict[str, Any] = {}
        elif isinstance(self.data, Mapping):
            data = dict(self.data)
        else:
            raise self.error(f"expected a mapping (key: value lines); got {self.data!r}")
        for key in data:
            if not isinstance(key, str):
                raise self.error(f"keys must be strings; got {key!r}")
        if valid is not None:
            valid = tuple(valid)
            unknown = [k for k in data if k not in valid]
            if unknown:
                raise self.error(f"unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")
        return data

    def child(self, key: str, default: Any = _MISSING) -> Reader:
        data = self.mapping()
        if key not in data:
            if default is _MISSING:
                raise self.error("is required", key)
            return Reader(default, source=self.source, path=self._join(key))
        return Reader(data[key], source=self.source, path=self._join(key))

    def has(self, key: str) -> bool:
        return key in self.mapping()

    # -- scalars -----------------------------------------------------------------------
    def string(self) -> str:
        if not isinstance(self.data, str) or not self.data.strip():
            raise self.error(f"expected a non-empty string; got {self.data!r}")
        return self.data.strip()

    def integer(self, *, minimum: int | None = None, allow_none: bool = False) -> int | None:
        if self.data is None and allow_none:
            return None
        value = self.data
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(f"expected an integer; got {self.data!r}")
        if minimum is not None and value < minimum:
            raise self.error(f"must be >= {minimum}; got {value}")
        return value

    def number(self, *, minimum: float | None = None, strict: bool = False) -> float:
        value = self.data
        if isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string.
            with contextlib.suppress(ValueError):
                value = float(value)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.error(f"expected a number; got {self.data!r}")
        value = float(value)
        if not math.isfinite(value):
            raise self.error(f"expected a finite number; got {self.data!r}")
        if minimum is not None and (value < minimum or (strict and value == minimum)):
            raise self.error(f"must be {'>' if strict else '>='} {minimum:g}; got {value:g}")
        return value

    def boolean(self) -> bool:
        if not isinstance(self.data, bool):
            raise self.error(f"expected true or false; got {self.data!r}")
        return self.data

    def choice(self, valid: Iterable[str]) -> str:
        valid = tuple(valid)
        if self.data not in valid:
            raise self.error(f"must be one of {', '.join(valid)}; got {self.data!r}")
        return str(self.data)

    def string_list(self, *, allow_scalar: bool = True) -> list[str]:
        items = self.data
        if allow_scalar and isinstance(items, str):
            items = [items]
        if not isinstance(items, list) or not items:
            raise self.error(f"expected a non-empty list; got {self.data!r}")
        for item in items:
            if not isinstance(item, str) or not item.strip():
                raise self.error(f"expected a list of names; got item {item!r}")
        duplicates = sorted({i for i in items if items.count(i) > 1})
        if duplicates:
            raise self.error(f"{duplicates[0]!r} is listed twice")
        return [i.strip() for i in items]


def canonical_key(reader: Reader, key: str) -> str:
    """``lambda`` -> ``method.lam``; unknown or study-controlled keys are errors."""
    try:
        section, name = resolve_key(key)
    except KeyError as error:
        raise reader.error(str(error).strip("\"'"), key) from None
    if section is None:
        raise reader.error(
            f"{name!r} is set by the study for each run (runs/<run_id>); remove it", key
        )
    dotted = f"{section}.{name}"
    if dotted in STUDY_CONTROLLED:
        raise reader.error(
            f"{dotted} is set by the study for each run; use the top-level key "
            f"{STUDY_CONTROLLED[dotted]!r} instead",
            key,
        )
    return dotted


def check_settings(reader: Reader) -> tuple[tuple[str, Any], ...]:
    """A settings mapping with canonical keys (values are checked later, on a RunConfig)."""
    result: dict[str, Any] = {}
    for key, value in reader.mapping().items():
        dotted = canonical_key(reader, key)
        if dotted in result:
            raise reader.error(f"sets {dotted} twice (two names for one setting)", key)
        if isinstance(value, Mapping | list):
            raise reader.error(f"a setting takes one value; got {value!r}", key)
        result[dotted] = value
    return tuple(result.items())
