"""`cmcl train` and `cmcl methods`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


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
    from cmcl.engine.guards import NonFiniteLossError
    from cmcl.launch import LaunchError, TrainRequest, train_run

    named = {"benchmark": benchmark, "pair": pair, "method": method, "seed": seed}
    paths = {
        "data.features": features,
        "data.root": root,
        "data.splits": splits,
        "model.i3d_rgb": i3d_rgb,
        "model.i3d_flow": i3d_flow,
    }
    request = TrainRequest(
        named=named,
        given=_given_settings(named, paths, assignments),
        out=out,
        resume=resume,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        address=address,
        storage=storage,
        max_failures=max_failures,
        tracking=tracking,
        tracking_dir=tracking_dir,
        progress=not quiet,
        quiet_ray=not _verbose(),
    )
    try:
        trained = train_run(request, say=lambda line: click.echo(line, err=True))
    except (LaunchError, NonFiniteLossError) as error:
        raise click.ClickException(str(error)) from error
    s = trained.summary
    click.echo(
        f"target accuracy {s['target_acc']:.2f}% (mean of the last {s['evaluations']} "
        f"evaluations; rgb {s['target_acc_rgb']:.2f}, flow {s['target_acc_flow']:.2f}); "
        f"best {s['best']['target_acc']:.2f}% at adapt step {s['best']['step']}; "
        f"{s['steps_per_s']:.3g} steps/s"
    )
    click.echo(f"wrote {trained.where}/summary.json")


def _given_settings(
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
    try:
        assigned = parse_assignments(assignments)
    except (KeyError, ValueError) as error:
        raise click.ClickException(str(error).strip('"')) from error
    given.update(assigned)
    video_options = [
        option
        for option, key in (
            ("--root", "data.root"),
            ("--i3d-rgb", "model.i3d_rgb"),
            ("--i3d-flow", "model.i3d_flow"),
        )
        if paths[key] is not None
    ]
    if video_options and paths["data.features"] is not None:
        raise click.UsageError(
            f"--features (feature mode) and {', '.join(video_options)} (video mode) "
            "exclude each other; give one"
        )
    if video_options and "model.backbone" not in assigned:
        given["model.backbone"] = "i3d"
    return given


def _verbose() -> bool:
    """``cmcl --verbose`` (or CMCL_VERBOSE=1): Ray's own output too."""
    import os

    from cmcl.cli import VERBOSE_ENV

    context = click.get_current_context(silent=True)
    root = context.find_root().params if context is not None else {}
    return bool(root.get("verbose")) or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@click.command()
def methods() -> None:
    """List every method with what it does and the paper's table rows it reproduces."""
    from cmcl.methods import METHODS

    width = max(len(name) for name in METHODS)
    for name, cls in METHODS.items():
        rows = ", ".join(cls.paper_rows) or "-"
        click.echo(f"{name:<{width}}  {cls.description}")
        click.echo(f"{'':<{width}}  paper rows: {rows}")
