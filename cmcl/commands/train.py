"""`cmcl train` and `cmcl methods`."""

from __future__ import annotations

import contextlib
import math

import click


def _fail(message: str) -> None:
    raise click.ClickException(message)


@click.command()
@click.option(
    "--benchmark",
    default="synthetic-epic",
    show_default=True,
    help="synthetic-epic, synthetic-ucf-hmdb, epic or ucf-hmdb.",
)
@click.option(
    "--pair",
    default="D2-D1",
    show_default=True,
    help="SOURCE-TARGET, e.g. D2-D1 (EPIC) or U-H (UCF->HMDB).",
)
@click.option("--method", default="cmco", show_default=True, help="See `cmcl methods`.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any setting, e.g. --set train.steps=300 --set lambda=1.0 --set T=0.9 "
    "(repeatable; keys: section.field or lambda, tau, T, delta, sampling, fusion).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Run directory [default: runs/BENCHMARK-PAIR-METHOD-sSEED].",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from its newest intact checkpoint, with the settings in "
    "its config.json; options that would change them are refused, except the operational "
    "data.loader_workers, train.keep_checkpoints and train.log_every (docs/distributed.md).",
)
@click.option(
    "--features",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Feature store directory (feature mode on real data).",
)
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Frames root (video mode).",
)
@click.option(
    "--splits",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Annotation directory (EPIC split pickles or TA3N lists).",
)
@click.option(
    "--i3d-rgb",
    type=click.Path(dir_okay=False),
    default=None,
    help="Video mode: pytorch-i3d RGB checkpoint to start from (rgb_imagenet.pt).",
)
@click.option(
    "--i3d-flow",
    type=click.Path(dir_okay=False),
    default=None,
    help="Video mode: pytorch-i3d flow checkpoint to start from (flow_imagenet.pt).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Ray Train workers (DDP ranks), each taking an equal share of the global batch "
    "(train.batch_source/batch_target must divide by it). 0 or 1 without --address: "
    "train in this process.",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="GPUs per Ray worker (nccl); 0 trains on CPUs (gloo).",
)
@click.option(
    "--address",
    default=None,
    metavar="ADDR",
    help="Join this Ray cluster (auto, HOST:6379 or ray://HOST:10001) instead of "
    "starting a private local Ray.",
)
@click.option(
    "--storage",
    default=None,
    metavar="PATH|URI",
    help="Ray runs: where the run directory goes, as STORAGE/NAME (NAME: the last part "
    "of --out, or the default run name). Every node must reach it: an NFS path or "
    "s3://, gs:// URI. [default: the parent of --out, else runs/]",
)
@click.option(
    "--max-failures",
    type=click.IntRange(min=0),
    default=None,
    help="Ray runs: restarts of the worker group from the newest checkpoint after a worker "
    "or its node is lost [default: train.restarts, 3]; the same as --set train.restarts=N.",
)
@click.option(
    "--tracking",
    type=click.Choice(["mlflow", "wandb", "tensorboard"]),
    default=None,
    help="Also track the run in MLflow (MLFLOW_TRACKING_URI), Weights & Biases (WANDB_PROJECT, "
    "WANDB_MODE) or TensorBoard (RUN_DIR/tensorboard); a resumed run continues the same "
    "tracked run (docs/tracking.md).",
)
@click.option(
    "--tracking-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="TensorBoard: the log root (runs go to DIR/NAME); W&B: its files' folder. "
    "[default: the run directory]",
)
def train(
    benchmark,
    pair,
    method,
    seed,
    assignments,
    out,
    resume,
    features,
    root,
    splits,
    i3d_rgb,
    i3d_flow,
    quiet,
    workers,
    gpus_per_worker,
    address,
    storage,
    max_failures,
    tracking,
    tracking_dir,
):
    """Train and evaluate one run, writing its run directory.

    \b
    The run directory holds config.json (the resolved settings), metrics.parquet
    (one row per evaluation), summary.json (the reported accuracy: mean of the
    last 9 evaluations) and checkpoints/. Examples:
      cmcl train --benchmark synthetic-epic --pair D2-D1 --method cmco
      cmcl train --method cmco --set lambda=1.0 --set T=0.9 --seed 2
      cmcl train --benchmark epic --features STORE --pair D2-D1      # feature mode
      cmcl train --benchmark epic --root FRAMES --pair D2-D1 \\
          --i3d-rgb rgb_imagenet.pt --i3d-flow flow_imagenet.pt       # video mode (I3D)

    \b
    --root, --i3d-rgb and --i3d-flow select video mode (model.backbone=i3d)
    unless --set model.backbone=... says otherwise; --features selects feature mode.

    \b
    With --workers N >= 2 (or --address) the run goes through Ray Train
    (docs/distributed.md): N DDP workers on a private local Ray or on the
    cluster at --address, checkpoints and run files in STORAGE/NAME, and up to
    train.restarts (--max-failures) restarts of the worker group, each from the
    newest checkpoint, after a worker or its node is lost. Examples:
      cmcl train --method cmco --workers 2
      cmcl train --method cmco --workers 8 --gpus-per-worker 1 \\
          --address auto --storage s3://my-bucket/cmcl
    """
    from cmcl.commands.train_setup import (
        check_video_inputs,
        given_settings,
        local_run_state,
        ray_location,
        resume_from,
        run_config,
    )
    from cmcl.config import normalise_pair
    from cmcl.engine import ConsoleReporter, NonFiniteLossError, fit
    from cmcl.methods import method_class

    named = {"benchmark": benchmark, "pair": pair, "method": method, "seed": seed}
    paths = {
        "data.features": features,
        "data.root": root,
        "data.splits": splits,
        "model.i3d_rgb": i3d_rgb,
        "model.i3d_flow": i3d_flow,
    }
    try:
        given = given_settings(named, paths, assignments)
        default_name = f"{benchmark}-{normalise_pair(pair)}-{method}-s{seed}"
    except (KeyError, ValueError) as error:
        _fail(str(error).strip('"'))
    # click's FloatRange lets nan and inf through (every comparison with nan is False).
    if not math.isfinite(gpus_per_worker):
        _fail(f"--gpus-per-worker must be a finite number >= 0, got {gpus_per_worker}")
    on_ray = workers >= 2 or address is not None
    _check_tracking(tracking, tracking_dir, on_ray=on_ray)
    if on_ray:
        location = ray_location(storage, out, default_name, resume=resume)
        recorded = location.read_bytes("config.json") if resume else None
        where = location.uri
    else:
        if gpus_per_worker > 0 or storage is not None:
            _fail("--gpus-per-worker and --storage apply to Ray runs: add --workers N (N >= 2)")
        if out is None:
            out = f"runs/{default_name}"
        recorded = local_run_state(out, resume=resume)
        where = out
    try:
        config = run_config(named, given, recorded, source=f"{where}/config.json")
        method_class(config.method.name)
        check_video_inputs(config)
    except (KeyError, ValueError) as error:
        _fail(str(error).strip('"'))
    if on_ray:
        _train_on_ray(
            config,
            location,
            workers=max(workers, 1),
            gpus_per_worker=gpus_per_worker,
            address=address,
            max_failures=max_failures,
            quiet=quiet,
        )
        return
    config = config.replace({"out": out, "resume": resume_from(out) if resume else None})
    click.echo(
        f"{config.method.name} on {config.data.benchmark} {config.data.pair}, seed "
        f"{config.train.seed}: {config.train.warmup_steps} warm-up + {config.train.steps} "
        f"adaptation steps -> {out}",
        err=True,
    )
    reporter = None if quiet else ConsoleReporter()
    tracked = contextlib.nullcontext()
    if tracking is not None:
        from cmcl.tracking import tracking_reporter

        try:
            reporter = tracking_reporter(
                tracking, config=config, run_dir=out, directory=tracking_dir, inner=reporter
            )
        except ValueError as error:
            _fail(str(error))
        tracked = reporter.marking_failure()
    try:
        with tracked:
            result = fit(config, reporter)
    except NonFiniteLossError as error:
        _fail(str(error))
    _echo_summary(result.summary)
    click.echo(f"wrote {out}/summary.json")


def _verbose() -> bool:
    """``cmcl --verbose`` (or CMCL_VERBOSE=1): Ray's own output too."""
    import os

    from cmcl.cli import VERBOSE_ENV

    context = click.get_current_context(silent=True)
    root = context.find_root().params if context is not None else {}
    return bool(root.get("verbose")) or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def _check_tracking(tracking: str | None, tracking_dir: str | None, *, on_ray: bool) -> None:
    """Before any run starts: the tracker's client is installed, the options fit together."""
    if tracking is None:
        if tracking_dir is not None:
            _fail("--tracking-dir needs --tracking mlflow|wandb|tensorboard")
        return
    if on_ray:
        _fail(
            "--tracking applies to runs trained in this process for now; leave out "
            "--workers/--address, or track the run afterwards with cmcl track sync"
        )
    from cmcl.tracking import TrackingNotInstalledError, check_tracking

    try:
        check_tracking(tracking)
    except TrackingNotInstalledError as error:
        _fail(str(error))


def _echo_summary(s: dict) -> None:
    click.echo(
        f"target accuracy {s['target_acc']:.2f}% (mean of the last {s['evaluations']} "
        f"evaluations; rgb {s['target_acc_rgb']:.2f}, flow {s['target_acc_flow']:.2f}); "
        f"best {s['best']['target_acc']:.2f}% at adapt step {s['best']['step']}; "
        f"{s['steps_per_s']:.3g} steps/s"
    )


def _train_on_ray(
    config,
    location,
    *,
    workers: int,
    gpus_per_worker: float,
    address: str | None,
    max_failures: int | None,
    quiet: bool,
) -> None:
    """``cmcl train`` through Ray Train (cmcl/ray/train.py) into ``location``; errors become
    click errors."""
    from cmcl.engine import NonFiniteLossError
    from cmcl.ray.scaling import check_scaling, missing_resources
    from cmcl.ray.session import ray_session

    try:
        check_scaling(config, workers=workers, gpus_per_worker=gpus_per_worker)
    except ValueError as error:
        _fail(str(error))
    if address is None and gpus_per_worker > 0:
        import torch

        need, have = math.ceil(workers * gpus_per_worker), torch.cuda.device_count()
        if need > have:
            _fail(
                f"--gpus-per-worker {gpus_per_worker:g} x {workers} workers needs {need} GPUs; "
                f"this machine has {have} (torch.cuda.device_count()); use --address to run "
                "on a cluster with GPUs, or leave --gpus-per-worker out to train on CPUs"
            )
    click.echo(
        f"{config.method.name} on {config.data.benchmark} {config.data.pair}, seed "
        f"{config.train.seed}: {config.train.warmup_steps} warm-up + {config.train.steps} "
        f"adaptation steps on {workers} Ray Train workers -> {location.uri}",
        err=True,
    )
    with ray_session(address, quiet=not _verbose()) as available:
        # Imported once the session is up: importing ray first would keep a private Ray from
        # binding to loopback (cmcl/ray/session.py).
        from cmcl.ray.train import fit_distributed

        short = missing_resources(
            available, workers=workers, gpus_per_worker=gpus_per_worker, cpus_per_worker=1.0
        )
        if short and address is None:
            _fail(f"{short} (this machine); lower --workers or --gpus-per-worker")
        if short:
            click.echo(f"warning: {short}; the run waits for the cluster to grow", err=True)
        try:
            summary = fit_distributed(
                config,
                workers=workers,
                gpus_per_worker=gpus_per_worker,
                storage=location.storage,
                name=location.name,
                max_failures=max_failures,
                progress=not quiet,
            )
        except (ValueError, NonFiniteLossError) as error:
            _fail(str(error))
        except Exception as error:  # ray.train.TrainingFailedError and its kin
            if type(error).__module__.startswith("ray."):
                _fail(f"Ray Train run {location.uri} failed: {error}")
            raise
    _echo_summary(summary)
    click.echo(f"wrote {location.uri}/summary.json")


@click.command()
def methods() -> None:
    """List every method with what it does and the paper's table rows it reproduces."""
    from cmcl.methods import METHODS

    width = max(len(name) for name in METHODS)
    for name, cls in METHODS.items():
        rows = ", ".join(cls.paper_rows) or "-"
        click.echo(f"{name:<{width}}  {cls.description}")
        click.echo(f"{'':<{width}}  paper rows: {rows}")
