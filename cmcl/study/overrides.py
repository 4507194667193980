"""Study keys changed on the command line: ``cmcl study run FILE --trials 5 --seeds 0,1``.

Each change is written into the file's parsed YAML before it is validated, so
the result is checked by the same parser with the same errors as the file
itself; an error names the file and the command-line options it was read
with (``studies/hpo_epic.yaml with --trials 0: key 'trials': must be >= 1;
got 0``). The study directory then holds the changed study (its spec.yaml),
which ``cmcl study resume``, ``status`` and ``cmcl report`` read.

Keys are the study file's, dotted below the top level: ``trials``,
``scheduler.name``, ``resources.parallel_runs``, ``optuna.seed``,
``settings.<setting>`` (one setting, e.g. ``settings.train.steps``),
``search.<setting>`` (a whole entry) or ``search.<setting>.<field>``
(``values``, ``grid``, ``low``, ``high``, ``log``, ``step``). Values are YAML,
as in the file (``[0.5, 1.0]``, ``true``, ``asha``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cmcl.study._build import _SEARCH_KEYS
from cmcl.study._parse import StudySpecError
from cmcl.study.spec import STUDY_KEYS, StudySpec, parse_spec, read_study_file

_SUBKEYED = ("scheduler", "resources", "optuna")


@dataclass(frozen=True)
class StudyOverride:
    """One change: ``key`` (dotted, of the study file) takes ``value``; ``shown`` is the
    option as the user gave it (``--seeds 0,1``), for errors and the study's records."""

    key: str
    value: Any
    shown: str


def _yaml(text: str, shown: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        raise StudySpecError(f"{shown}: the value is not valid YAML ({error})") from None


def _listed(text: str, shown: str) -> Any:
    """``a,b`` -> ``[a, b]``; a lone value stays one (``3`` seeds, ``all`` pairs)."""
    if text.strip().startswith("[") or "," not in text:
        return _yaml(text, shown)
    return [_yaml(item, shown) for item in text.split(",") if item.strip()]


def study_overrides(
    *,
    trials: str | None = None,
    seeds: str | None = None,
    pairs: str | None = None,
    methods: str | None = None,
    optuna_storage: str | None = None,
    tracking: str | None = None,
    assignments: Sequence[str] = (),
) -> list[StudyOverride]:
    """The changes ``--trials``, ``--seeds``, ``--pairs``, ``--methods`` and ``--study-set``
    ask for, in that order (a later change of one key wins).

    ``seeds`` is a count (``3``: seeds 0, 1, 2) or a list (``0,5``; one seed: ``7,``);
    ``pairs`` and ``methods`` are comma-separated lists (``pairs`` also ``all``).

    Raises:
        StudySpecError: an assignment without ``=``, or a value that is not YAML.
    """
    changes = []
    if trials is not None:
        changes.append(
            StudyOverride("trials", _yaml(trials, f"--trials {trials}"), f"--trials {trials}")
        )
    if tracking is not None:
        changes.append(StudyOverride("tracking", tracking, f"--tracking {tracking}"))
    if optuna_storage is not None:
        shown = "--optuna-storage URL"  # not echoed: a URL may hold a password
        changes.append(StudyOverride("optuna_storage", optuna_storage, shown))
    for option, key, text in (
        ("--seeds", "seeds", seeds),
        ("--pairs", "pairs", pairs),
        ("--methods", "methods", methods),
    ):
        if text is not None:
            shown = f"{option} {text}"
            value = _listed(text, shown)
            if key != "seeds" and isinstance(value, str) and value != "all":
                value = [value]
            changes.append(StudyOverride(key, value, shown))
    for text in assignments:
        shown = f"--study-set {text}"
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise StudySpecError(
                f"{shown}: expected KEY=VALUE with a key of the study file "
                f"({', '.join(STUDY_KEYS)}), e.g. --study-set scheduler.name=asha"
            )
        changes.append(StudyOverride(key.strip(), _yaml(value, shown), shown))
    return changes


def describe(changes: Sequence[StudyOverride]) -> str:
    """The options as given: ``--trials 3 --study-set scheduler.name=asha``."""
    return " ".join(change.shown for change in changes)


def load_spec_with(path: str | Path, changes: Sequence[StudyOverride]) -> StudySpec:
    """The study file at ``path`` with ``changes`` applied, validated (see the module docstring)."""
    if not changes:
        return parse_spec(read_study_file(path), source=str(path))
    data = apply_overrides(read_study_file(path), changes, source=str(path))
    return parse_spec(data, source=f"{path} with {describe(changes)}")


def apply_overrides(data: Any, changes: Sequence[StudyOverride], *, source: str) -> dict[str, Any]:
    """A copy of the study mapping ``data`` with ``changes`` made (values not yet checked)."""
    if not isinstance(data, dict):
        raise StudySpecError(f"{source}: expected a mapping of study keys; got {data!r}")
    data = yaml.safe_load(yaml.safe_dump(data))  # a deep copy, in the file's own types
    for change in changes:
        top, _, rest = change.key.partition(".")
        if top not in STUDY_KEYS:
            raise StudySpecError(
                f"{change.shown}: unknown study key {top!r}; valid keys: {', '.join(STUDY_KEYS)}"
            )
        if not rest:
            data[top] = change.value
        elif top == "settings":
            _set_setting(data, "settings", rest, change)
        elif top == "search":
            _set_search(data, rest, change)
        elif top in _SUBKEYED:
            current = data.get(top)
            if isinstance(current, str):  # scheduler: asha
                current = {"name": current}
            data[top] = {**(current if isinstance(current, dict) else {}), rest: change.value}
        else:
            raise StudySpecError(
                f"{change.shown}: {top!r} takes one value, it has no key {rest!r}; "
                f"keys with sub-keys: settings, search, {', '.join(_SUBKEYED)}"
            )
    return data


def _same_setting(a: str, b: str) -> bool:
    from cmcl.config import resolve_key

    try:
        return resolve_key(a) == resolve_key(b)
    except KeyError:
        return a == b


def _set_setting(data: dict[str, Any], top: str, key: str, change: StudyOverride) -> None:
    """Set ``data[top][key]``, replacing the entry an alias names (``lambda`` for ``method.lam``)."""
    current = data.get(top)
    current = dict(current) if isinstance(current, dict) else {}
    current = {k: v for k, v in current.items() if not _same_setting(str(k), key)}
    data[top] = {**current, key: change.value}


def _set_search(data: dict[str, Any], rest: str, change: StudyOverride) -> None:
    key, _, field = rest.rpartition(".")
    if field not in _SEARCH_KEYS or not key:
        _set_setting(data, "search", rest, change)
        return
    search = data.get("search") if isinstance(data.get("search"), dict) else {}
    entry = next((v for k, v in search.items() if _same_setting(str(k), key)), {})
    if isinstance(entry, list):
        entry = {"values": entry}
    entry = dict(entry) if isinstance(entry, dict) else {}
    # A list replaces a range and a range field a list: one entry cannot hold both.
    kind = () if field in ("grid", "values") else ("low", "high", "log", "step")
    entry = {k: v for k, v in entry.items() if k in kind and k != field}
    entry[field] = change.value
    _set_setting(data, "search", key, StudyOverride(key, entry, change.shown))


@dataclass(frozen=True)
class CommandLineStudy:
    """``cmcl study run``'s study: the file's, changed as the command line asks."""

    spec: StudySpec
    overrides: dict[str, dict[str, Any]]
    """Per-benchmark run settings from --root/--features/--splits/--set."""
    source: str
    """The file, and the options that changed it (spec.yaml's header, study.json)."""


def study_from_command_line(
    path: str | Path,
    *,
    changes: Sequence[StudyOverride] = (),
    synthetic: bool = False,
    resources: dict[str, Any] | None = None,
    root: tuple[str, ...] = (),
    features: tuple[str, ...] = (),
    splits: tuple[str, ...] = (),
    assignments: Sequence[str] = (),
) -> CommandLineStudy:
    """The study file at ``path`` with ``changes`` (:func:`study_overrides`), its synthetic
    twin if asked, ``resources`` (``workers``, ``gpus_per_worker``, ``cpus_per_worker``; a
    None value keeps the file's), and the per-benchmark data locations and ``--set``
    settings, each checked.

    Raises:
        StudySpecError, ValueError: the message names the file or option and the key.
    """
    import dataclasses

    from cmcl.config import parse_assignments
    from cmcl.study.directory import command_line_overrides

    spec = load_spec_with(path, changes)
    if synthetic:
        spec = spec.on_synthetic()
    given = {k: v for k, v in (resources or {}).items() if v is not None}
    if given:
        spec = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, **given))
    overrides = command_line_overrides(
        spec,
        root=root,
        features=features,
        splits=splits,
        assignments=parse_assignments(assignments),
    )
    source = f"{path} with {describe(changes)}" if changes else str(path)
    return CommandLineStudy(spec, overrides, source)
