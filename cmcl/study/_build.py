"""Turning a study mapping into a :class:`~cmcl.study.spec.StudySpec`, key by key."""

from __future__ import annotations

import math
import typing
from typing import Any

from cmcl.config import RunConfig, normalise_pair
from cmcl.data.benchmarks import BENCHMARKS
from cmcl.study._parse import Reader, StudySpecError, canonical_key, check_settings
from cmcl.study.naming import storage_location
from cmcl.study.spec import (
    KEEP,
    METRICS,
    OBJECTIVES,
    PAPER_TABLES,
    SCHEDULERS,
    SEARCHERS,
    Fidelity,
    Resources,
    Scheduler,
    SearchParam,
    StudySpec,
    Variant,
    check_name,
)

_SEARCH_KEYS = ("grid", "values", "low", "high", "log", "step")


def build_spec(reader: Reader, *, keys: tuple[str, ...]) -> StudySpec:
    reader.mapping(valid=keys)
    name = check_name(reader.child("name").data)
    description = reader.child("description", "").data or ""
    if not isinstance(description, str):
        raise reader.error("expected text", "description")
    benchmarks = _benchmarks(reader.child("benchmark"))
    pairs = _pairs(reader.child("pairs", "all"), benchmarks)
    methods = _methods(reader.child("methods"))
    settings = check_settings(reader.child("settings", {}))
    pairs_seen = tuple(p for _, p in pairs)
    variants = _variants(reader.child("variants", []), methods, pairs_seen)
    search = _search(reader.child("search", {}))
    searcher = reader.child("searcher", "grid").choice(SEARCHERS)
    seeds = _seeds(reader.child("seeds", 1))
    objective = reader.child("objective", "per_pair").choice(OBJECTIVES)
    metric = reader.child("metric", "target_acc").choice(METRICS)
    spec = StudySpec(
        name=name,
        description=description.strip(),
        benchmarks=benchmarks,
        pairs=pairs,
        methods=methods,
        settings=settings,
        variants=variants,
        search=search,
        searcher=searcher,
        seeds=seeds,
        objective=objective,
        metric=metric,
        scheduler=_scheduler(reader.child("scheduler", "none")),
        resources=_resources(reader.child("resources", {})),
        max_concurrent=reader.child("max_concurrent", None).integer(minimum=1, allow_none=True),
        max_failures=reader.child("max_failures", 0).integer(minimum=0) or 0,
        node_failures=_node_failures(reader.child("node_failures", 3)),
        storage=_storage(reader.child("storage", None)),
        optuna_storage=_optuna_storage(reader.child("optuna_storage", None)),
        keep=reader.child("keep", "final").choice(KEEP),
        tracking=_tracking(reader.child("tracking", None)),
        fidelity=_fidelity(reader.child("fidelity", None), methods),
        tables=_tables(reader.child("tables", [])),
        **_searcher_options(reader, searcher),
    )
    _check_overlaps(reader, spec)
    if spec.tracking is not None and spec.resources.workers > 1:
        raise reader.error(
            "runs of several Ray Train workers are not tracked live; leave tracking out and "
            "upload the study's results afterwards with `cmcl track sync DIR --tracking NAME`",
            "tracking",
        )
    _check_variant_pairs(reader, spec)
    _check_searcher(reader, spec)
    _check_values(reader, spec)
    return spec


def _search(reader: Reader) -> tuple[SearchParam, ...]:
    params: list[SearchParam] = []
    for name in reader.mapping():
        param = _search_param(reader.child(name), canonical_key(reader, name), name)
        if any(p.key == param.key for p in params):
            raise reader.error(f"searches {param.key} twice (two names for one setting)", name)
        params.append(param)
    return tuple(params)


def _optional_string(reader: Reader) -> str | None:
    return None if reader.data is None else reader.string()


def _storage(reader: Reader) -> str | None:
    value = _optional_string(reader)
    if value is not None:
        try:
            storage_location(value)
        except ValueError as error:
            raise reader.error(str(error)) from None
    return value


def _fidelity(reader: Reader, methods: tuple[str, ...]) -> Fidelity | None:
    if reader.data is None:
        return None
    reader.mapping(valid=("screen", "confirm", "top_k", "also_confirm"))
    screen = reader.child("screen", "features").choice(("features",))
    confirm = reader.child("confirm", "video").choice(("video",))
    top = reader.child("top_k", 3)
    top_k = None if top.data == "all" else top.integer(minimum=1)
    also = (
        tuple(reader.child("also_confirm", []).string_list()) if reader.has("also_confirm") else ()
    )
    from cmcl.methods.registry import METHODS

    for method in also:
        if method not in METHODS:
            raise reader.error(
                f"unknown method {method!r}; valid: {', '.join(METHODS)}", "also_confirm"
            )
    return Fidelity(screen=screen, confirm=confirm, top_k=top_k, also_confirm=also)


def _tracking(reader: Reader) -> str | None:
    from cmcl.tracking.backends import BACKENDS

    if reader.data in (None, "none"):
        return None
    return reader.choice(BACKENDS)


def _node_failures(reader: Reader) -> int:
    value = reader.integer(minimum=0)
    return 3 if value is None else value


_OPTUNA_SCHEMES = ("postgresql", "mysql", "sqlite", "oracle", "mssql")


def _optuna_storage(reader: Reader) -> str | None:
    value = _optional_string(reader)
    if value is None:
        return None
    scheme = value.split("://", 1)[0].split("+", 1)[0] if "://" in value else ""
    if scheme not in _OPTUNA_SCHEMES:
        raise reader.error(
            f"expected an Optuna RDB URL (postgresql://user@host/db, mysql://..., "
            f"sqlite:///path.db); got {value!r}"
        )
    return value


def _benchmarks(reader: Reader) -> tuple[str, ...]:
    names = reader.string_list()
    for name in names:
        if name not in BENCHMARKS:
            raise reader.error(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    return tuple(names)


def _pairs(reader: Reader, benchmarks: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    listed = ", ".join(f"{b}: {' '.join(BENCHMARKS[b].pairs)}" for b in benchmarks)
    if reader.data == "all":
        pairs = [(b, p) for b in benchmarks for p in BENCHMARKS[b].pairs]
    else:
        pairs = []
        for text in reader.string_list():
            try:
                pair = normalise_pair(text)
            except ValueError as error:
                raise reader.error(str(error)) from None
            owners = [b for b in benchmarks if pair in BENCHMARKS[b].pairs]
            if not owners:
                raise reader.error(f"pair {pair} is in no listed benchmark; valid: {listed}")
            pairs.extend((b, pair) for b in owners)
    seen: dict[str, str] = {}
    for benchmark, pair in pairs:
        if pair in seen:
            raise reader.error(
                f"pair {pair} belongs to both {seen[pair]} and {benchmark}; list one of them"
            )
        seen[pair] = benchmark
    unused = [b for b in benchmarks if b not in seen.values()]
    if unused:
        raise reader.error(f"benchmark {unused[0]} has no pair here; valid: {listed}")
    return tuple(pairs)


def _methods(reader: Reader) -> tuple[str, ...]:
    from cmcl.methods.registry import METHODS

    names = reader.string_list()
    for name in names:
        if name not in METHODS:
            raise reader.error(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return tuple(names)


def _variants(
    reader: Reader, methods: tuple[str, ...], pairs: tuple[str, ...]
) -> tuple[Variant, ...]:
    if not isinstance(reader.data, list):
        raise reader.error(f"expected a list of {{name, settings, methods}}; got {reader.data!r}")
    variants: list[Variant] = []
    for index, item in enumerate(reader.data):
        entry = Reader(item, source=reader.source, path=f"{reader.path}[{index}]")
        entry.mapping(valid=("name", "settings", "methods", "pairs"))
        name = check_name(entry.child("name").data, f"{entry.path}.name")
        if any(v.name == name for v in variants):
            raise entry.error(f"variant name {name!r} is used twice", "name")
        only = None
        if entry.has("methods"):
            only = tuple(entry.child("methods").string_list())
            for method in only:
                if method not in methods:
                    raise entry.error(
                        f"{method!r} is not one of the study's methods ({', '.join(methods)})",
                        "methods",
                    )
        only_pairs = None
        if entry.has("pairs"):
            only_pairs = tuple(normalise_pair(p) for p in entry.child("pairs").string_list())
            for pair in only_pairs:
                if pair not in pairs:
                    raise entry.error(
                        f"{pair!r} is not one of the study's pairs ({', '.join(pairs)})", "pairs"
                    )
        settings = check_settings(entry.child("settings", {}))
        variants.append(Variant(name=name, settings=settings, methods=only, pairs=only_pairs))
    return tuple(variants)


def _field_type(key: str) -> Any:
    from cmcl.config import _SECTION_TYPES

    section, name = key.split(".", 1)
    return typing.get_type_hints(_SECTION_TYPES[section])[name]


def _search_param(reader: Reader, key: str, name: str) -> SearchParam:
    integer = _field_type(key) is int
    if isinstance(reader.data, list):
        reader = Reader({"values": reader.data}, source=reader.source, path=reader.path)
    entry = reader.mapping(valid=_SEARCH_KEYS)
    categorical = [k for k in ("grid", "values") if k in entry]
    ranged = [k for k in ("low", "high", "log", "step") if k in entry]
    if len(categorical) > 1 or (categorical and ranged):
        raise reader.error(
            "give either a list (grid: [...] or values: [...]) or a range (low, high, "
            f"optional log or step); got {', '.join(entry)}"
        )
    if categorical:
        values = entry[categorical[0]]
        if not isinstance(values, list) or not values:
            raise reader.error(f"expected a non-empty list; got {values!r}", categorical[0])
        if len({repr(v) for v in values}) != len(values):
            raise reader.error("a value is listed twice", categorical[0])
        return SearchParam(key=key, name=name, values=tuple(values), integer=integer)
    if "low" not in entry or "high" not in entry:
        raise reader.error("expected grid: [...], values: [...], or a range with low and high")
    low, high = reader.child("low").number(), reader.child("high").number()
    log = reader.child("log", False).boolean()
    step = reader.child("step").number(minimum=0, strict=True) if "step" in entry else None
    if not low < high:
        raise reader.error(f"low must be below high; got low={low:g}, high={high:g}")
    if log and low <= 0:
        raise reader.error(f"a log range needs low > 0; got {low:g}")
    if log and step is not None:
        raise reader.error("log and step cannot be combined (Optuna samples one or the other)")
    if integer:
        if not (low.is_integer() and high.is_integer() and (step or 1).is_integer()):
            raise reader.error(f"{key} is an integer setting: low, high and step must be integers")
        if step is None and not log:
            step = 1.0
    return SearchParam(key=key, name=name, low=low, high=high, log=log, step=step, integer=integer)


def _seeds(reader: Reader) -> tuple[int, ...]:
    if isinstance(reader.data, int) and not isinstance(reader.data, bool):
        count = reader.integer(minimum=1) or 1
        return tuple(range(count))
    if not isinstance(reader.data, list) or not reader.data:
        raise reader.error(f"expected a count (3 -> seeds 0, 1, 2) or a list; got {reader.data!r}")
    seeds = [
        Reader(s, source=reader.source, path=reader.path).integer(minimum=0) for s in reader.data
    ]
    if len(set(seeds)) != len(seeds):
        raise reader.error("a seed is listed twice")
    return tuple(int(s) for s in seeds if s is not None)


def _scheduler(reader: Reader) -> Scheduler:
    if isinstance(reader.data, str):
        return Scheduler(name=reader.choice(SCHEDULERS))
    reader.mapping(valid=("name", "grace_period", "reduction_factor"))
    name = reader.child("name").choice(SCHEDULERS)
    if name == "none" and len(reader.mapping()) > 1:
        raise reader.error("grace_period and reduction_factor apply to name: asha only")
    return Scheduler(
        name=name,
        grace_period=reader.child("grace_period", None).integer(minimum=1, allow_none=True),
        reduction_factor=reader.child("reduction_factor", 2).number(minimum=1, strict=True),
    )


def _resources(reader: Reader) -> Resources:
    reader.mapping(
        valid=("workers", "gpus_per_worker", "cpus_per_worker", "parallel_runs", "wait_timeout_s")
    )
    return Resources(
        workers=reader.child("workers", 1).integer(minimum=1) or 1,
        gpus_per_worker=reader.child("gpus_per_worker", 0).number(minimum=0),
        cpus_per_worker=reader.child("cpus_per_worker", 1).number(minimum=0, strict=True),
        parallel_runs=reader.child("parallel_runs", None).integer(minimum=1, allow_none=True),
        wait_timeout_s=_wait_timeout(reader.child("wait_timeout_s", None)),
    )


def _wait_timeout(reader: Reader) -> float | None:
    if reader.data is None:
        return None
    return reader.number(minimum=0, strict=True)


def _tables(reader: Reader) -> tuple[str, ...]:
    if reader.data in (None, []):
        return ()
    names = reader.string_list()
    for name in names:
        if name not in PAPER_TABLES:
            raise reader.error(f"unknown paper table {name!r}; valid: {', '.join(PAPER_TABLES)}")
    return tuple(names)


def _searcher_options(reader: Reader, searcher: str) -> dict[str, Any]:
    trials = reader.child("trials", None).integer(minimum=1, allow_none=True)
    options = reader.child("optuna", None)
    if searcher == "grid":
        if options.data is not None:
            raise reader.error("applies to searcher: optuna only", "optuna")
        return {"trials": trials}
    if trials is None:
        raise reader.error("searcher optuna needs the number of trials", "trials")
    options.mapping(valid=("seed", "n_startup_trials"))
    startup = options.child("n_startup_trials", None).integer(minimum=0, allow_none=True)
    return {
        "trials": trials,
        "optuna_seed": options.child("seed", 0).integer(minimum=0) or 0,
        "n_startup_trials": startup,
    }


def grid_trial_count(spec: StudySpec) -> int:
    """Trials of a grid study: configurations x (pairs when per_pair; a variant's own pairs)."""
    points = math.prod(len(p.grid()) for p in spec.search)
    count = 0
    for method in spec.methods:
        for variant in spec.variants_of(method):
            if spec.objective == "per_pair":
                pairs = len(variant.pairs) if variant and variant.pairs else len(spec.pairs)
            else:
                pairs = 1
            count += points * pairs
    return count


def _check_overlaps(reader: Reader, spec: StudySpec) -> None:
    searched = {p.key for p in spec.search}
    for key, _ in spec.settings:
        if key in searched:
            raise reader.error(f"{key} is both fixed here and searched; keep one", "settings")
    for variant in spec.variants:
        for key, _ in variant.settings:
            if key in searched:
                raise reader.error(
                    f"variant {variant.name!r} fixes {key}, which is searched; keep one",
                    "variants",
                )


def _check_variant_pairs(reader: Reader, spec: StudySpec) -> None:
    if spec.objective == "mean" and any(v.pairs for v in spec.variants):
        raise reader.error(
            "a variant's pairs apply to objective per_pair (with mean, a trial runs on every pair)",
            "variants",
        )


def _check_searcher(reader: Reader, spec: StudySpec) -> None:
    if spec.searcher == "grid":
        for param in spec.search:
            if param.values is None and param.step is None:
                raise reader.error(
                    "a range needs step with searcher grid (or give grid: [...])",
                    f"search.{param.key}",
                )
        derived = grid_trial_count(spec)
        if spec.trials is not None and spec.trials != derived:
            raise reader.error(
                f"a grid study has {derived} trials (configurations x pairs); remove "
                f"trials or set it to {derived}",
                "trials",
            )
        return
    if not spec.search:
        raise reader.error("searcher optuna needs a search space", "search")
    if len(spec.methods) > 1 or len(spec.variants_of(spec.methods[0])) > 1:
        raise reader.error(
            "an Optuna study searches one configuration space: give one method and at most "
            "one variant (write one study file per method or variant)",
            "searcher",
        )
    if spec.objective == "per_pair" and len(spec.pairs) > 1:
        raise reader.error(
            "Optuna with objective per_pair would treat the pair as a hyperparameter: use "
            "objective: mean, or one pair per study file",
            "objective",
        )
    startup, trials = spec.n_startup_trials, spec.trials
    if startup is not None and trials is not None and startup > trials:
        raise reader.error(f"n_startup_trials ({startup}) exceeds trials ({trials})", "optuna")


def _check_values(reader: Reader, spec: StudySpec) -> None:
    """Build the RunConfig of every (benchmark, method, variant) and every searched value."""
    for benchmark in spec.benchmarks:
        pair = next(p for b, p in spec.pairs if b == benchmark)
        for method in spec.methods:
            for variant in spec.variants_of(method):
                base = {
                    **dict(spec.settings),
                    **(dict(variant.settings) if variant else {}),
                    "data.benchmark": benchmark,
                    "data.pair": pair,
                    "method.name": method,
                }
                where = f"variants ({variant.name})" if variant else "settings"
                _build(reader, spec, base, where)
                for param in spec.search:
                    candidates = (
                        param.values if param.values is not None else (param.low, param.high)
                    )
                    for value in candidates:
                        if param.integer and isinstance(value, float):
                            value = int(value)
                        overrides = {**base, param.key: value}
                        _build(reader, spec, overrides, f"search.{param.key}")


def _build(reader: Reader, spec: StudySpec, overrides: dict[str, Any], where: str) -> None:
    try:
        config = RunConfig.from_overrides(overrides)
    except (KeyError, ValueError) as error:
        raise reader.error(str(error).strip("\"'"), where) from None
    if spec.metric == "source_val_acc" and config.train.source_val == "none":
        # Every trial's value would be NaN: train.source_val=none never scores the source split.
        raise reader.error(
            "metric source_val_acc needs train.source_val all or last; none never scores "
            "the source split",
            where,
        )


__all__ = ["StudySpecError", "build_spec", "grid_trial_count"]
