"""What a resumed run may change: only settings that cannot change its numbers.

A run directory's ``config.json`` records the settings that produced its
checkpoints and ``metrics.parquet``. A resumed run (``cmcl train --resume``,
a re-run of a Ray Train run with the same storage and name) continues with
those settings; asking for another value of any setting that enters the
computation is refused, naming each key with its recorded and requested
value. The exceptions, :data:`OPERATIONAL_KEYS`, change where and how the
work happens but no number the run records.

Deliberately not operational, although they look like it:

* ``train.device``, ``train.precision``: another device or precision gives
  other floating-point results, so the resumed steps would not be those of
  the recorded run;
* ``train.eval_batch``: batched matrix products may round differently for
  another batch size, so evaluation logits are not guaranteed bit-equal;
* ``train.checkpoint_every``: every checkpoint is also an evaluation, so it
  moves rows of ``metrics.parquet`` and the summary's last-k mean;
* ``train.dump_features``, ``train.source_val``: they change what
  ``features.parquet`` and ``metrics.parquet`` hold;
* ``data.root``, ``data.splits``, ``data.features``, ``model.i3d_rgb``,
  ``model.i3d_flow``: they name the data and weights; another path may hold
  other data, and nothing here can tell that it does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cmcl.config import RunConfig

OPERATIONAL_KEYS: dict[str, str] = {
    "data.loader_workers": "DataLoader worker processes; the clips a step reads do not "
    "depend on them (cmcl.data.loaders)",
    "train.keep_checkpoints": "how many checkpoints stay on disk",
    "train.restarts": "how often a multi-worker run's worker group may restart after a lost "
    "worker; each restart continues from the newest checkpoint, so the numbers are the same",
    "train.log_every": "how often the loss sums are read back from the device; the "
    "training steps and evaluations are the same (only the float64 loss means in "
    "metrics.parquet may differ in their last bits, from another grouping of the sums)",
}
"""Settings a resumed run may change, with why they cannot change its results.
``out`` and ``resume`` (where the run is, where it continues from) are not
recorded settings at all."""

_NOT_RECORDED = ("out", "resume")


class ResumeSettingsError(ValueError):
    """A resumed run was asked for settings other than those it was trained with."""


def recorded_config(data: Mapping[str, Any], *, source: str) -> RunConfig:
    """The settings of a parsed ``config.json`` (without ``out``/``resume``); ``source`` names it."""
    try:
        return RunConfig.from_dict({k: v for k, v in data.items() if k not in _NOT_RECORDED})
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{source}: not a run's settings ({str(error).strip(chr(34))}); a resumed run "
            "continues with the settings recorded there, so restore that file or start a "
            "new run with another --out"
        ) from None


def changed_settings(recorded: RunConfig, requested: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (recorded, requested) for each non-operational setting that differs."""
    old, new = recorded.flat(), requested.flat()
    return {
        key: (old[key], new[key])
        for key in old
        if key not in OPERATIONAL_KEYS and old[key] != new[key]
    }


def check_resume_settings(recorded: RunConfig, requested: RunConfig, *, source: str) -> None:
    """Raise :class:`ResumeSettingsError` naming every result-changing difference.

    ``source``: where ``recorded`` came from (the run's ``config.json``), for the message.
    """
    changed = changed_settings(recorded, requested)
    if not changed:
        return
    shown = "; ".join(
        f"{key}: recorded {old!r}, requested {new!r}" for key, (old, new) in changed.items()
    )
    raise ResumeSettingsError(
        f"{source} records the settings this run was trained with, and the resumed run asks "
        f"for others ({shown}). A resumed run keeps its settings; only "
        f"{', '.join(OPERATIONAL_KEYS)} may change. To continue the run, leave out the "
        "options that set those keys; to train with the new settings, give another --out"
    )


def resumed_config(recorded: RunConfig, overrides: Mapping[str, Any], *, source: str) -> RunConfig:
    """``recorded`` with ``overrides`` applied, refused if they change any result.

    ``overrides``: dotted keys (or aliases) the user gave explicitly; settings
    left out keep their recorded values, so ``cmcl train --out DIR --resume``
    continues the run as it was configured.
    """
    requested = recorded.replace(overrides)
    check_resume_settings(recorded, requested, source=source)
    return requested
