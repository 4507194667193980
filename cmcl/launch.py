"""One training run from a command line's request: ``cmcl train``'s library half.

:func:`train_run` takes a :class:`TrainRequest` (what the user asked for, parsed
but not yet checked against the run directory) and does everything else once:
where the run lives (a local directory, or ``STORAGE/NAME`` for Ray Train),
refusing to train over a run or to resume none, the settings (a new run's, or a
resumed run's recorded ones), the video-mode inputs, the tracker, one banner
line, then :func:`cmcl.engine.fit` in this process or
:func:`cmcl.ray.train.fit_distributed` on Ray. Every refusal is a
:class:`LaunchError` (a ``ValueError``) whose message names the option or file
and what to do; ``cmcl``'s top level prints it as one ``Error:`` line.

No Ray, no torch at import (the CLI imports this before any Ray session).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cmcl.config import RunConfig
    from cmcl.ray.storage import RunLocation

Say = Callable[[str], None]
"""Where notes, warnings and the banner go (the CLI: stderr)."""


class LaunchError(ValueError):
    """A run that cannot start as asked; the message says why and what would work."""


@dataclass(frozen=True)
class TrainRequest:
    """One ``cmcl train`` invocation.

    ``named`` holds benchmark, pair, method and seed as given or defaulted (they
    name the default run directory); ``given`` holds only the settings the
    command line states (options not left at their defaults, paths, ``--set``):
    a resumed run takes every other setting from its ``config.json``.
    """

    named: Mapping[str, Any]
    given: Mapping[str, Any] = field(default_factory=dict)
    out: str | None = None
    resume: bool = False
    workers: int = 0
    gpus_per_worker: float = 0.0
    address: str | None = None
    storage: str | None = None
    max_failures: int | None = None
    tracking: str | None = None
    tracking_dir: str | None = None
    progress: bool = True
    quiet_ray: bool = True

    @property
    def on_ray(self) -> bool:
        """Through Ray Train: two or more workers, or a cluster to join."""
        return self.workers >= 2 or self.address is not None

    def default_name(self) -> str:
        from cmcl.common import normalise_pair

        n = self.named
        return f"{n['benchmark']}-{normalise_pair(n['pair'])}-{n['method']}-s{n['seed']}"


@dataclass(frozen=True)
class Trained:
    """A finished run: its summary (as summary.json) and where its files are."""

    summary: dict[str, Any]
    where: str


def train_run(request: TrainRequest, *, say: Say) -> Trained:
    """Check ``request`` against its run directory, then train it (here or on Ray).

    Raises:
        LaunchError: the request cannot run (the message says why).
        cmcl.engine.NonFiniteLossError: a loss became NaN/inf.
    """
    _check_options(request)
    default_name = _wrapped(request.default_name)
    if request.on_ray:
        location = _ray_location(request, default_name)
        where = location.uri
        held = bool(_wrapped(location.checkpoint_names, f"cannot read --storage {request.storage}"))
    else:
        location = None
        where = request.out if request.out is not None else f"runs/{default_name}"
        held = _holds_checkpoints(where)
    if request.resume and not held:
        raise LaunchError(f"--resume: no checkpoint under {where}/checkpoints")
    if held and not request.resume:
        raise LaunchError(
            f"{where} already holds a run; add --resume to continue it or choose another --out"
        )
    recorded = _recorded_settings(location, where, say) if request.resume else None
    config = _wrapped(
        lambda: _run_config(request, recorded, source=f"{where}/config.json"),
    )
    _check_video_inputs(config, say)
    workers = max(request.workers, 1)
    on = f" on {workers} Ray Train workers" if request.on_ray else ""
    say(
        f"{config.method.name} on {config.data.benchmark} {config.data.pair}, seed "
        f"{config.train.seed}: {config.train.warmup_steps} warm-up + {config.train.steps} "
        f"adaptation steps{on} -> {where}"
    )
    if request.on_ray:
        return Trained(_train_on_ray(request, config, location, workers), where)
    return Trained(_train_here(request, config, where, say), where)


def _wrapped(call: Callable[[], Any], prefix: str | None = None) -> Any:
    """``call()``, its KeyError/ValueError (OSError with ``prefix``) as a LaunchError."""
    try:
        return call()
    except LaunchError:
        raise
    except (KeyError, ValueError) as error:
        raise LaunchError(str(error).strip('"')) from error
    except OSError as error:
        if prefix is None:
            raise
        raise LaunchError(f"{prefix}: {error}") from error


def _check_options(request: TrainRequest) -> None:
    """Options that contradict each other, before anything is read or started."""
    # click's FloatRange lets nan and inf through (every comparison with nan is False).
    if not math.isfinite(request.gpus_per_worker):
        raise LaunchError(
            f"--gpus-per-worker must be a finite number >= 0, got {request.gpus_per_worker}"
        )
    if not request.on_ray and (request.gpus_per_worker > 0 or request.storage is not None):
        raise LaunchError(
            "--gpus-per-worker and --storage apply to Ray runs: add --workers N (N >= 2)"
        )
    if request.tracking is None:
        if request.tracking_dir is not None:
            raise LaunchError("--tracking-dir needs --tracking mlflow|wandb|tensorboard")
        return
    if request.on_ray:
        raise LaunchError(
            "--tracking applies to runs trained in this process for now; leave out "
            "--workers/--address, or track the run afterwards with cmcl track sync"
        )
    from cmcl.tracking import TrackingNotInstalledError, check_tracking

    try:
        check_tracking(request.tracking)
    except TrackingNotInstalledError as error:  # its message names the extra to install
        raise LaunchError(str(error)) from error


def _ray_location(request: TrainRequest, default_name: str) -> RunLocation:
    """``STORAGE/NAME``: --storage (default: the parent of --out, else runs/) and --out's
    last part (default: the run's default name)."""
    from cmcl.ray.storage import RunLocation

    out = request.out
    storage = request.storage
    if storage is None:
        storage = str(Path(out).parent) if out else "runs"
    return _wrapped(lambda: RunLocation(storage, Path(out).name if out else default_name))


def _holds_checkpoints(out: str) -> bool:
    from cmcl.engine.checkpoint import checkpoint_dirs

    return bool(checkpoint_dirs(out))


def _recorded_settings(location: RunLocation | None, where: str, say: Say) -> bytes | None:
    """A resumed run's config.json (None, with a note, if a local run lost it)."""
    if location is not None:
        return location.read_bytes("config.json")
    recorded = Path(where) / "config.json"
    if recorded.is_file():
        return recorded.read_bytes()
    say(
        f"note: {recorded} is missing; the resumed run takes its settings from this "
        "command line, and nothing checks that they are the ones it was trained with"
    )
    return None


def _run_config(request: TrainRequest, recorded: bytes | None, *, source: str) -> RunConfig:
    """A new run: defaults, then the command line. A resumed run: its recorded settings,
    which the command line may change only in operational keys (cmcl/engine/resume.py)."""
    from cmcl.config import RunConfig
    from cmcl.engine.resume import recorded_config, resumed_config
    from cmcl.methods import method_class

    if recorded is None:
        config = RunConfig.from_overrides({**request.named, **request.given})
    else:
        try:
            data = json.loads(recorded)
        except ValueError as error:
            raise LaunchError(
                f"{source}: not valid JSON ({error}); a resumed run continues with the settings "
                "recorded there, so restore that file or start a new run with another --out"
            ) from None
        config = resumed_config(
            recorded_config(data, source=source), dict(request.given), source=source
        )
    method_class(config.method.name)
    return config


def _check_video_inputs(config: RunConfig, say: Say) -> None:
    """Clear errors before any model is built: I3D files exist, video mode has frames."""
    model = config.model
    streams = (("--i3d-rgb", model.i3d_rgb), ("--i3d-flow", model.i3d_flow))
    for option, path in streams:
        if path is not None and not Path(path).is_file():
            raise LaunchError(
                f"{option} {path}: no such file (a pytorch-i3d checkpoint, e.g. rgb_imagenet.pt)"
            )
    if model.backbone != "i3d":
        given = [option for option, path in streams if path]
        if given:
            raise LaunchError(
                f"{', '.join(given)} need video mode, but model.backbone={model.backbone}"
            )
        return
    if config.data.benchmark not in ("epic", "ucf-hmdb"):
        raise LaunchError(
            f"video mode (model.backbone=i3d) reads frames of --benchmark epic or ucf-hmdb, "
            f"not {config.data.benchmark}"
        )
    if config.data.root is None:
        raise LaunchError(
            f"video mode (model.backbone=i3d) needs --root: the frames of {config.data.benchmark}"
        )
    for option, path in streams:
        if path is None:
            say(
                f"note: no {option}; that I3D stream starts from random weights "
                "(the paper starts from Kinetics-pretrained ones)"
            )


def _train_here(request: TrainRequest, config: RunConfig, out: str, say: Say) -> dict[str, Any]:
    """:func:`cmcl.engine.fit` in this process, from the newest intact checkpoint if resuming."""
    from cmcl.engine import ConsoleReporter, fit

    resume = _resume_from(out, say) if request.resume else None
    config = config.replace({"out": out, "resume": resume})
    reporter = ConsoleReporter() if request.progress else None
    tracked = contextlib.nullcontext()
    if request.tracking is not None:
        from cmcl.tracking import tracking_reporter

        reporter = _wrapped(
            lambda: tracking_reporter(
                request.tracking,
                config=config,
                run_dir=out,
                directory=request.tracking_dir,
                inner=reporter,
            )
        )
        tracked = reporter.marking_failure()
    with tracked:
        return fit(config, reporter).summary


def _resume_from(out: str, say: Say) -> str:
    """The newest intact checkpoint of ``out``, saying which damaged ones were passed over."""
    from cmcl.engine.checkpoint import CorruptCheckpointError, latest_intact_checkpoint

    try:
        found, skipped = latest_intact_checkpoint(out)
    except CorruptCheckpointError as error:  # none is intact: the message says which and why
        raise LaunchError(str(error)) from error
    for problem in skipped:
        say(f"warning: {problem}; resuming from the previous one, {found}")
    return str(found)


def _train_on_ray(
    request: TrainRequest, config: RunConfig, location: RunLocation, workers: int
) -> dict[str, Any]:
    """:func:`cmcl.ray.train.fit_distributed` into ``location``, on a private local Ray or
    on the cluster at ``request.address``; Ray's own failures become a LaunchError."""
    from cmcl.ray.session import private_ray_env

    # cmcl.ray.train imports ray: a private Ray binds to loopback only if the
    # environment asks for it before that import (cmcl/ray/session.py).
    with private_ray_env() if request.address is None else contextlib.nullcontext():
        from cmcl.ray.train import fit_distributed

        try:
            return fit_distributed(
                config,
                workers=workers,
                gpus_per_worker=request.gpus_per_worker,
                storage=location.storage,
                name=location.name,
                max_failures=request.max_failures,
                progress=request.progress,
                address=request.address,
                quiet=request.quiet_ray,
            )
        except ValueError as error:  # a worker layout or settings the run cannot take
            raise LaunchError(str(error)) from error
        except Exception as error:  # ray.train.TrainingFailedError and its kin
            if type(error).__module__.startswith("ray."):
                raise LaunchError(f"Ray Train run {location.uri} failed: {error}") from error
            raise
