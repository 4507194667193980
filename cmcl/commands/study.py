"""`cmcl study run | resume | status`: studies on Ray (docs/studies.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def _fail(message: str) -> None:
    raise click.ClickException(message)


@click.group()
def study() -> None:
    """Studies: sweeps over methods, settings, pairs and seeds on a Ray cluster.

    \b
    A study file (YAML, docs/studies.md) names the benchmark(s) and pairs, the
    methods, fixed settings, a search space (grid or Optuna), seeds, the
    objective and the selection metric. Its directory <storage>/<name> (a path,
    or an s3:// or gs:// URI) holds everything: per-evaluation results
    (Parquet), run directories, the driver's records and the Optuna journal.
      cmcl study run studies/quickstart.yaml
      cmcl study status studies_out/quickstart
      cmcl study resume studies_out/quickstart     (after a crash or Ctrl-C)
    """


_DATA_HELP = "DIR for every benchmark of the study, or BENCHMARK=DIR (repeatable)."


@study.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--storage",
    default=None,
    help="Where study directories go: a directory, or an object-store URI (s3://bucket/prefix, "
    "gs://...) [default: the file's storage, else ./studies_out].",
)
@click.option(
    "--optuna-storage",
    default=None,
    metavar="URL",
    help="An Optuna database for an Optuna study (postgresql://..., mysql://..., sqlite:///...), "
    "instead of the file's optuna_storage [default: a journal file in the study directory].",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster to use (auto, ray://HOST:10001) [default: a private local Ray].",
)
@click.option(
    "--root",
    multiple=True,
    metavar="[BENCHMARK=]DIR",
    help="Frames root (video mode). " + _DATA_HELP,
)
@click.option(
    "--features",
    multiple=True,
    metavar="[BENCHMARK=]DIR",
    help="Feature store (feature mode). " + _DATA_HELP,
)
@click.option(
    "--splits", multiple=True, metavar="[BENCHMARK=]DIR", help="Annotation directory. " + _DATA_HELP
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting for every run, above the file's (e.g. --set model.i3d_rgb=rgb_imagenet.pt "
    "--set train.device=cuda); not a searched key. Repeatable.",
)
@click.option(
    "--trials",
    default=None,
    metavar="N",
    help="Optuna trials, instead of the file's `trials` (a grid study's count is derived).",
)
@click.option(
    "--seeds",
    default=None,
    metavar="N|S,S...",
    help="Instead of the file's `seeds`: a count (3: seeds 0, 1, 2) or a list (0,5; one seed: 7,).",
)
@click.option(
    "--pairs",
    default=None,
    metavar="P,P...|all",
    help="Instead of the file's `pairs`: e.g. D2-D1,D3-D1.",
)
@click.option(
    "--methods",
    default=None,
    metavar="M,M...",
    help="Instead of the file's `methods`: e.g. source_only,cmco.",
)
@click.option(
    "--study-set",
    "study_assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any key of the study file, dotted below the top level, with a YAML value (e.g. "
    "--study-set scheduler.name=asha, --study-set settings.train.steps=300, "
    "--study-set name=quick-try); checked like the file, recorded in the study's spec.yaml. "
    "Repeatable.",
)
@click.option(
    "--tracking",
    type=click.Choice(["mlflow", "wandb", "tensorboard"]),
    default=None,
    help="Also track every run in MLflow (MLFLOW_TRACKING_URI), W&B (WANDB_PROJECT, "
    "WANDB_MODE) or TensorBoard (in each run's folder), instead of the file's tracking "
    "(docs/tracking.md).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Ray Train workers per run (DDP) [default: the file's, else 1].",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=None,
    help="GPUs per worker [default: the file's, else 0].",
)
@click.option(
    "--cpus-per-worker",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="CPUs per worker [default: the file's, else 1].",
)
@click.option(
    "--synthetic",
    is_flag=True,
    help="Run the synthetic twin: epic -> synthetic-epic, ucf-hmdb -> synthetic-ucf-hmdb "
    "(their shorter schedule unless the file fixes one); the study name gets -synthetic.",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    default=None,
    help="Trials in flight at once (their runs fill the slots) [default: the file's "
    "max_concurrent, else as many as keep every slot busy].",
)
@click.option(
    "--num-cpus",
    type=click.IntRange(min=1),
    default=None,
    help="CPUs of the private local Ray [default: all].",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.option("--verbose", is_flag=True, help="Also Ray's and Tune's own output.")
def study_run(
    file,
    storage,
    optuna_storage,
    address,
    root,
    features,
    splits,
    assignments,
    trials,
    seeds,
    pairs,
    methods,
    study_assignments,
    tracking,
    workers,
    gpus_per_worker,
    cpus_per_worker,
    synthetic,
    max_concurrent,
    num_cpus,
    quiet,
    verbose,
):
    """Validate FILE, create <storage>/<name> and run the study in it.

    \b
    Real data: --features DIR (feature mode) or --root DIR (video mode; add
    --set model.i3d_rgb=... --set model.i3d_flow=... and usually --gpus-per-worker 1).
    The synthetic twin of a real-data file: --synthetic. A smaller or other
    version of the file's study: --trials, --seeds, --pairs, --methods and
    --study-set KEY=VALUE change its keys before it is checked; the study
    directory records the changed study (add --study-set name=... to keep the
    full study's directory free). An existing directory is
    never overwritten: while a driver runs it, this one is refused (naming that
    driver); otherwise, if it holds the same study, continue it with
    `cmcl study resume DIR`.
    """
    from cmcl.study.overrides import study_from_command_line, study_overrides
    from cmcl.study.spec import StudySpecError

    try:
        changes = study_overrides(
            trials=trials,
            seeds=seeds,
            pairs=pairs,
            methods=methods,
            optuna_storage=optuna_storage,
            tracking=tracking,
            assignments=study_assignments,
        )
        prepared = study_from_command_line(
            file,
            changes=changes,
            synthetic=synthetic,
            resources={
                "workers": workers,
                "gpus_per_worker": gpus_per_worker,
                "cpus_per_worker": cpus_per_worker,
            },
            root=root,
            features=features,
            splits=splits,
            assignments=assignments,
        )
    except (StudySpecError, ValueError) as error:
        _fail(str(error))
    from cmcl.ray.study import run_new_study

    _drive(
        run_new_study,
        prepared.spec,
        storage=storage or prepared.spec.storage or "studies_out",
        overrides=prepared.overrides,
        source=prepared.source,
        synthetic=synthetic,
        address=address,
        num_cpus=num_cpus,
        max_concurrent=max_concurrent,
        quiet=quiet,
        verbose=verbose,
    )


_PLAN_OPTIONS = ("--trials", "--seeds", "--pairs", "--methods", "--study-set")


def _study_location(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A study directory: an existing local directory, or an object-store URI."""
    from cmcl.filestore import is_uri

    if is_uri(value):
        return value
    path = Path(value.removeprefix("file://"))
    if not path.is_dir():
        raise click.BadParameter(f"directory {value!r} does not exist", ctx=ctx, param=param)
    return str(path)


def _refuse_plan_changes(command: Callable[..., Any]) -> Callable[..., Any]:
    """Hidden ``cmcl study run`` options on resume, each refused with the reason and the way."""

    def refuse(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value:
            raise click.UsageError(
                f"{param.opts[0]}: a study's plan cannot change under it; `cmcl study resume` "
                "continues the study its directory records (spec.yaml). For another plan, "
                f"start a new study: cmcl study run FILE {param.opts[0]} ... --study-set name=NEW",
                ctx=ctx,
            )

    for option in _PLAN_OPTIONS:
        command = click.option(
            option,
            multiple=True,
            hidden=True,
            expose_value=False,
            callback=refuse,
        )(command)
    return command


@study.command("resume")
@click.argument("directory", callback=_study_location)
@click.option("--address", default=None, help="Ray cluster to use [default: a private local Ray].")
@click.option(
    "--num-cpus",
    type=click.IntRange(min=1),
    default=None,
    help="CPUs of the private local Ray [default: all].",
)
@click.option(
    "--retry-errored",
    is_flag=True,
    help="Also run again the runs whose own code failed (an out-of-memory, a bug since fixed). "
    "Runs lost to the infrastructure (a node, a worker process) run again without it. Optuna "
    "keeps such trials as failed: an Optuna trial is told once.",
)
@click.option(
    "--restart-unfinished",
    is_flag=True,
    help="Run the unfinished trials again from their start (e.g. after their checkpoints "
    "were damaged); the trials that ended are kept, the unfinished ones' run files go to "
    "unfinished-<time>/.",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.option("--verbose", is_flag=True, help="Also Ray's and Tune's own output.")
@_refuse_plan_changes
def study_resume(directory, address, num_cpus, retry_errored, restart_unfinished, quiet, verbose):
    """Finish the study in DIRECTORY after its driver stopped (killed, Ctrl-C, node lost).

    \b
    Finished runs are kept (not run again); unfinished ones continue, each from
    its newest checkpoint, and so do runs lost with a node; an Optuna study
    continues the same Optuna study, and the study ends with the number of
    trials its file asked for. Refused while another driver runs the study (its
    lease, docs/studies.md). DIRECTORY may be a study's object-store URI.
    """
    from cmcl.ray.study import run_study

    _drive(
        run_study,
        directory,
        address=address,
        num_cpus=num_cpus,
        retry_errored=retry_errored,
        restart_unfinished=restart_unfinished,
        quiet=quiet,
        verbose=verbose,
    )


@study.command("status")
@click.argument("directory", callback=_study_location)
def study_status(directory):
    """Trials and runs by state, the best so far and per pair, failed runs and how to retry
    them, read from DIRECTORY's files (no Ray). DIRECTORY may be an object-store URI."""
    from cmcl.study.status import describe_study

    try:
        click.echo(describe_study(directory))
    except FileNotFoundError as error:
        _fail(str(error))


def _drive(function: Callable[..., Path], target: Any, *, quiet: bool, **options: Any) -> None:
    """``function(target, ...)`` of cmcl.ray.study, then the status; errors become `Error:` lines."""
    from cmcl.study.directory import StudyExistsError, StudyFinishedError
    from cmcl.study.driver import StudyFailedError, StudyWaitTimeout
    from cmcl.study.lease import StudyBusyError
    from cmcl.study.status import describe_study
    from cmcl.study.unfinished import StudyStateError
    from cmcl.tracking import TrackingNotInstalledError

    try:
        path = function(target, echo=not quiet, **options)
    except StudyFinishedError as finished:
        # Running a finished study again (the README's main job twice) is not an error.
        click.echo(str(finished), err=True)
        path = finished.path
    except StudyFailedError as error:
        click.echo(describe_study(error.study))
        _fail(str(error))
    except (
        FileNotFoundError,
        ValueError,
        StudyExistsError,
        StudyBusyError,
        StudyStateError,
        StudyWaitTimeout,
        TrackingNotInstalledError,
    ) as error:
        _fail(str(error))
    click.echo(describe_study(path))
