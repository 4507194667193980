"""What produced a table's numbers, read from the runs' recorded config.

Two things a reader needs before comparing a number with the paper's:

- **Mode** (``cfg.model.backbone``): ``i3d`` is video mode, the paper's
  end-to-end protocol; ``features`` is feature mode, small layers on frozen
  I3D features of a fixed set of windows per segment without crop or flip
  augmentation (or, on the synthetic benchmarks, on generated vectors). A run
  that did not record the setting ran with its default, ``features``.
- **Schedule** (:data:`cmcl.data.benchmarks.SCHEDULE_KEYS`: steps, batch,
  learning rate, evaluation), printed from the runs' values and named after
  the benchmark's default protocol (:attr:`Benchmark.protocol`) when every
  value equals that default.

The text is built from the runs; nothing here knows which table it describes
except Table 5, whose comparison feature mode changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from cmcl.report.aggregate import matches, normalise_value

FEATURE = "feature"
VIDEO = "video"
BACKBONE = "cfg.model.backbone"
MODE_NAMES = {FEATURE: "feature mode", VIDEO: "video mode"}

FEATURE_MODE_REAL = (
    "**Feature mode** (`model.backbone=features`): small layers trained on frozen I3D features "
    "of a fixed set of windows per segment, centre-cropped, without crop or flip augmentation. "
    "This is not the paper's end-to-end protocol; the paper's numbers are printed beside these "
    "for orientation, not as their equal (docs/real-data.md, 'What feature-mode numbers can be "
    "compared with')."
)
FEATURE_MODE_SYNTHETIC = (
    "Feature mode (`model.backbone=features`) on the benchmark's generated feature vectors "
    "(no frames, no I3D)."
)
VIDEO_MODE = (
    "Video mode (`model.backbone=i3d`): end-to-end I3D training on frames, as in the paper."
)
TABLE5_FEATURE = (
    "Feature mode changes what this table compares: 'independent' draws each stream's window "
    "from the same few stored positions and 'synchronised' uses one of them for both, with no "
    "crops, whereas the paper's independent windows lie anywhere in the segment, each with its "
    "own crop. 'Gain via sampling' here measures that narrower change, not the paper's."
)


def run_mode(backbone: Any) -> str:
    """``video`` for ``i3d``; ``feature`` otherwise (missing: the default, ``features``)."""
    return VIDEO if str(backbone) == "i3d" else FEATURE


def run_modes(runs: pd.DataFrame) -> pd.Series:
    """The mode of every run (index kept)."""
    if BACKBONE not in runs:
        return pd.Series(FEATURE, index=runs.index, dtype=object)
    return runs[BACKBONE].map(run_mode)


def mode_counts(runs: pd.DataFrame) -> dict[str, int]:
    """Mode -> number of distinct runs, feature mode first."""
    unique = runs.drop_duplicates("run_key") if "run_key" in runs else runs
    counts = run_modes(unique).value_counts()
    return {m: int(counts[m]) for m in (FEATURE, VIDEO) if m in counts}


def modes_text(runs: pd.DataFrame) -> str:
    """``feature``, ``video`` or ``feature, video`` (``—`` for no runs)."""
    return ", ".join(mode_counts(runs)) or "—"


def mode_lines(
    runs: pd.DataFrame,
    *,
    synthetic: bool,
    rows: Sequence[tuple[str, pd.DataFrame]] = (),
    sampling_table: bool = False,
) -> list[str]:
    """Caption lines naming the mode(s) of ``runs``.

    ``rows``: (row label, that row's runs), to say which rows are in which
    mode when the table mixes them. ``sampling_table``: Table 5, whose
    comparison feature mode changes.
    """
    counts = mode_counts(runs)
    if not counts:
        return []
    if len(counts) > 1:
        lines = [_mixed(counts, rows)]
        if sampling_table:
            lines.append(TABLE5_FEATURE)
        return lines
    if VIDEO in counts:
        return [VIDEO_MODE]
    lines = [FEATURE_MODE_SYNTHETIC if synthetic else FEATURE_MODE_REAL]
    if sampling_table:
        lines.append(TABLE5_FEATURE)
    return lines


def _mixed(counts: dict[str, int], rows: Sequence[tuple[str, pd.DataFrame]]) -> str:
    tally = " and ".join(f"{n} run(s) in {MODE_NAMES[m]}" for m, n in counts.items())
    text = (
        f"**Mixed modes**: {tally} (from each run's `model.backbone`). Feature-mode numbers "
        "(frozen I3D features, fixed windows, no crop or flip augmentation) are not comparable "
        "with video-mode numbers or with the paper's."
    )
    by_mode: dict[str, list[str]] = {}
    for label, mine in rows:
        found = mode_counts(mine)
        if found:
            key = " + ".join(MODE_NAMES[m] for m in found)
            by_mode.setdefault(key, []).append(label)
    if by_mode:
        text += " Rows: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in by_mode.items()) + "."
    return text


def default_schedule(benchmark: str) -> dict[str, Any] | None:
    """The schedule a run of ``benchmark`` gets by default, as ``cfg.train.*`` values."""
    from cmcl.config import RunConfig  # stdlib only: no torch
    from cmcl.data.benchmarks import BENCHMARKS, SCHEDULE_KEYS

    if benchmark not in BENCHMARKS:
        return None
    flat = RunConfig.from_overrides({"data.benchmark": benchmark}).flat()
    return {f"cfg.{k}": flat[k] for k in SCHEDULE_KEYS}


def schedule_of(run: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """(``cfg.train.*`` key, value) of one run; None where the run did not record it."""
    from cmcl.data.benchmarks import SCHEDULE_KEYS

    return tuple((f"cfg.{key}", normalise_value(run.get(f"cfg.{key}"))) for key in SCHEDULE_KEYS)


def _show(value: Any) -> str:
    if value is None:
        return "?"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe_schedule(schedule: Sequence[tuple[str, Any]]) -> str:
    """``3000 warm-up + 6000 adaptation steps, batch 16 + 16, SGD lr 0.01 ...``."""
    v = {k.removeprefix("cfg.train."): _show(x) for k, x in schedule}
    raw = {k.removeprefix("cfg.train."): x for k, x in schedule}
    step = raw.get("lr_step")
    if step is not None and float(step) <= 0:
        drop = "constant"
    else:
        drop = f"×{v['lr_gamma']} at adaptation step {v['lr_step']}"
    return (
        f"{v['warmup_steps']} warm-up + {v['steps']} adaptation steps, "
        f"batch {v['batch_source']} source + {v['batch_target']} target, "
        f"SGD lr {v['lr']} ({drop}), momentum {v['momentum']}, weight decay {v['weight_decay']}, "
        f"evaluation every {v['eval_every']} steps (last {v['eval_last_k']} averaged)"
    )


def _differences(schedule: Sequence[tuple[str, Any]], default: Mapping[str, Any]) -> list[str]:
    return [
        f"{k.removeprefix('cfg.')} {_show(x)} (default {_show(default[k])})"
        for k, x in schedule
        if not matches(x, default[k])
    ]


def schedule_lines(runs: pd.DataFrame, benchmark: str) -> list[str]:
    """Caption lines: the schedule(s) of ``runs`` and whether it is ``benchmark``'s default."""
    from cmcl.data.benchmarks import BENCHMARKS

    unique = runs.drop_duplicates("run_key") if "run_key" in runs else runs
    if unique.empty:
        return []
    groups: dict[tuple[tuple[str, Any], ...], int] = {}
    for run in unique.to_dict("records"):
        key = schedule_of(run)
        groups[key] = groups.get(key, 0) + 1
    default = default_schedule(benchmark)
    known = BENCHMARKS.get(benchmark)
    name = f"{benchmark}'s default protocol"
    if known is not None and known.protocol:
        name += f", {known.protocol}"
    lines: list[tuple[int, str]] = []
    for schedule, n in sorted(groups.items(), key=lambda item: -item[1]):
        text = describe_schedule(schedule)
        if default is None:
            verdict = "a benchmark cmcl does not know, so no default to compare with"
        else:
            differences = _differences(schedule, default)
            verdict = (
                f"not {benchmark}'s default protocol: " + "; ".join(differences)
                if differences
                else name
            )
        lines.append((n, f"{text} — {verdict}"))
    if len(lines) == 1:
        return [f"Schedule (from the runs' recorded config): {lines[0][1]}."]
    return [
        "**Schedules differ between the runs** (from their recorded config): "
        + " | ".join(f"{n} run(s): {line}" for n, line in lines)
        + "."
    ]
