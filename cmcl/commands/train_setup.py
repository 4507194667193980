"""`cmcl train`'s run: which directory, which settings (a new run's, or a resumed
run's recorded ones), which checkpoint to continue from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from cmcl.config import RunConfig
    from cmcl.ray.storage import RunLocation


def _fail(message: str) -> None:
    raise click.ClickException(message)


def given_settings(
    named: dict[str, Any], paths: dict[str, str | None], assignments: tuple[str, ...]
) -> dict[str, Any]:
    """The settings this command line states: options not left at their defaults and --set.

    A resumed run takes every other setting from its config.json.
    """
    from click.core import ParameterSource

    from cmcl.config import parse_assignments

    context = click.get_current_context()
    given = {
        key: value
        for key, value in named.items()
        if context.get_parameter_source(key) is not ParameterSource.DEFAULT
    }
    # Absolute: Ray Train workers do not share this process's working directory.
    given.update({k: str(Path(v).resolve()) for k, v in paths.items() if v is not None})
    assigned = parse_assignments(assignments)
    given.update(assigned)
    video_keys = {
        "--root": "data.root",
        "--i3d-rgb": "model.i3d_rgb",
        "--i3d-flow": "model.i3d_flow",
    }
    video_options = [option for option, key in video_keys.items() if paths[key] is not None]
    if video_options and paths["data.features"] is not None:
        _fail(
            f"--features (feature mode) and {', '.join(video_options)} (video mode) "
            "exclude each other; give one"
        )
    if video_options and "model.backbone" not in assigned:
        given["model.backbone"] = "i3d"
    return given


def run_config(
    named: dict[str, Any], given: dict[str, Any], recorded: bytes | None, *, source: str
) -> RunConfig:
    """A new run: defaults, then the command line. A resumed run: its recorded settings,
    which the command line may change only in operational keys (cmcl/engine/resume.py)."""
    import json

    from cmcl.config import RunConfig
    from cmcl.engine.resume import recorded_config, resumed_config

    if recorded is None:
        return RunConfig.from_overrides({**named, **given})
    try:
        data = json.loads(recorded)
    except ValueError as error:
        raise ValueError(
            f"{source}: not valid JSON ({error}); a resumed run continues with the settings "
            "recorded there, so restore that file or start a new run with another --out"
        ) from None
    return resumed_config(recorded_config(data, source=source), given, source=source)


def local_run_state(out: str, *, resume: bool) -> bytes | None:
    """Refuse to train over a run, or to resume none; the run's config.json when resuming."""
    from cmcl.engine.checkpoint import checkpoint_dirs

    held = bool(checkpoint_dirs(out))
    if resume and not held:
        _fail(f"--resume: no checkpoint under {out}/checkpoints")
    if held and not resume:
        _fail(f"{out} already holds a run; add --resume to continue it or choose another --out")
    recorded = Path(out) / "config.json"
    if not resume:
        return None
    if not recorded.is_file():
        click.echo(
            f"note: {recorded} is missing; the resumed run takes its settings from this "
            "command line, and nothing checks that they are the ones it was trained with",
            err=True,
        )
        return None
    return recorded.read_bytes()


def resume_from(out: str) -> str:
    """The newest intact checkpoint of ``out``, saying which damaged ones were passed over."""
    from cmcl.engine.checkpoint import CorruptCheckpointError, latest_intact_checkpoint

    try:
        found, skipped = latest_intact_checkpoint(out)
    except CorruptCheckpointError as error:
        _fail(str(error))
    assert found is not None  # local_run_state saw a checkpoint
    for problem in skipped:
        click.echo(f"warning: {problem}; resuming from the previous one, {found}", err=True)
    return str(found)


def ray_location(
    storage: str | None, out: str | None, default_name: str, *, resume: bool
) -> RunLocation:
    """``STORAGE/NAME`` of a Ray run, refusing to train over a run or to resume none."""
    from cmcl.ray.storage import RunLocation

    try:
        location = RunLocation(
            storage if storage is not None else str(Path(out).parent if out else "runs"),
            Path(out).name if out else default_name,
        )
        done = location.checkpoint_names()
    except ValueError as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"cannot read --storage {storage}: {error}")
    if resume and not done:
        _fail(f"--resume: no checkpoint under {location.uri}/checkpoints")
    if done and not resume:
        _fail(
            f"{location.uri} already holds a run; add --resume to continue it or choose another --out"
        )
    return location


def check_video_inputs(config: RunConfig) -> None:
    """Clear errors before any model is built: I3D files exist, video mode has frames."""
    model = config.model
    for option, path in (("--i3d-rgb", model.i3d_rgb), ("--i3d-flow", model.i3d_flow)):
        if path is not None and not Path(path).is_file():
            _fail(f"{option} {path}: no such file (a pytorch-i3d checkpoint, e.g. rgb_imagenet.pt)")
    if model.backbone != "i3d":
        given = [o for o, p in (("--i3d-rgb", model.i3d_rgb), ("--i3d-flow", model.i3d_flow)) if p]
        if given:
            _fail(f"{', '.join(given)} need video mode, but model.backbone={model.backbone}")
        return
    if config.data.benchmark not in ("epic", "ucf-hmdb"):
        _fail(
            f"video mode (model.backbone=i3d) reads frames of --benchmark epic or ucf-hmdb, "
            f"not {config.data.benchmark}"
        )
    if config.data.root is None:
        _fail(
            f"video mode (model.backbone=i3d) needs --root: the frames of {config.data.benchmark}"
        )
    for option, path in (("--i3d-rgb", model.i3d_rgb), ("--i3d-flow", model.i3d_flow)):
        if path is None:
            click.echo(
                f"note: no {option}; that I3D stream starts from random weights "
                "(the paper starts from Kinetics-pretrained ones)",
                err=True,
            )
