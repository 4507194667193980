"""The ``cmcl`` command line: thin wrappers that parse, call and print."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cmcl import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cmcl")
def cli() -> None:
    """Cross-modal contrastive video domain adaptation (Kim et al., ICCV 2021) on Ray.

    \b
    Train one run:        cmcl train --benchmark synthetic-epic --pair D2-D1 --method cmco
    List the methods:     cmcl methods
    Run a study:          cmcl study run studies/quickstart.yaml
    Write a report:       cmcl report STUDY_DIR --out reports/NAME
    """


def _register() -> None:
    # Each command group lives in its own module under cmcl/commands/; heavy
    # imports happen inside the commands, so `cmcl --help` stays fast.
    from cmcl.commands.data import data
    from cmcl.commands.report import report_command
    from cmcl.commands.train import methods, train

    for command in (train, methods, report_command, data):
        cli.add_command(command)


_register()


# -- studies ---------------------------------------------------------------------------


@cli.group()
def study() -> None:
    """Studies: sweeps over methods, settings, pairs and seeds on Ray Tune.

    \b
    A study file (YAML, docs/studies.md) names the benchmark(s) and pairs, the
    methods, fixed settings, a search space (grid or Optuna), seeds, the
    objective and the selection metric. Its directory <storage>/<name> holds
    everything: per-evaluation results (Parquet), run directories, trial records,
    Tune's state and the Optuna journal.
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
    help="Where study directories go [default: the file's storage, else ./studies_out].",
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
    "--synthetic",
    is_flag=True,
    help="Run the synthetic twin: epic -> synthetic-epic, ucf-hmdb -> synthetic-ucf-hmdb "
    "(their shorter schedule unless the file fixes one); the study name gets -synthetic.",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    default=None,
    help="Trials at once [default: from the cluster's resources].",
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
    address,
    root,
    features,
    splits,
    synthetic,
    max_concurrent,
    num_cpus,
    quiet,
    verbose,
):
    """Validate FILE, create <storage>/<name> and run the study in it.

    \b
    An existing directory is never overwritten: if it holds the same study,
    continue it with `cmcl study resume DIR`.
    """
    from cmcl.study.directory import StudyExistsError, create_study_dir, data_options
    from cmcl.study.spec import StudySpecError, load_spec

    try:
        spec = load_spec(file)
        if synthetic:
            spec = spec.on_synthetic()
        options = data_options(spec.benchmarks, root=root, features=features, splits=splits)
        path = create_study_dir(
            spec,
            storage=storage or spec.storage or "studies_out",
            data_options=options,
            source=str(file),
            synthetic=synthetic,
        )
    except (StudySpecError, StudyExistsError, ValueError) as error:
        _fail(str(error))
    click.echo(f"study {spec.name} -> {path}", err=True)
    _run_study(
        path,
        address=address,
        num_cpus=num_cpus,
        max_concurrent=max_concurrent,
        retry_errored=False,
        quiet=quiet,
        verbose=verbose,
    )


@study.command("resume")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
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
    help="Also run errored trials again (for failures that may not repeat: a lost node, out "
    "of memory). Optuna keeps them as failed: an Optuna trial is told once.",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.option("--verbose", is_flag=True, help="Also Ray's and Tune's own output.")
def study_resume(directory, address, num_cpus, retry_errored, quiet, verbose):
    """Finish the study in DIRECTORY after its driver stopped (killed, Ctrl-C, node lost).

    \b
    Finished trials are kept (not run again); unfinished ones continue, each run
    from its newest checkpoint; an Optuna study continues the same Optuna study,
    and the study ends with the number of trials its file asked for.
    """
    _run_study(
        Path(directory),
        address=address,
        num_cpus=num_cpus,
        max_concurrent=None,
        retry_errored=retry_errored,
        quiet=quiet,
        verbose=verbose,
    )


@study.command("status")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
def study_status(directory):
    """Trials by state, the best so far and per pair, read from DIRECTORY's files (no Ray)."""
    from cmcl.study.status import format_status, study_status

    try:
        click.echo(format_status(study_status(directory)))
    except FileNotFoundError as error:
        _fail(str(error))


def _run_study(path, *, address, num_cpus, max_concurrent, retry_errored, quiet, verbose) -> None:
    from cmcl.ray.study import run_study
    from cmcl.study.status import format_status, study_status

    try:
        run_study(
            path,
            address=address,
            num_cpus=num_cpus,
            max_concurrent=max_concurrent,
            retry_errored=retry_errored,
            echo=not quiet,
            verbose=verbose,
        )
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    click.echo(format_status(study_status(path)))


def main() -> None:
    cli(prog_name="cmcl")


if __name__ == "__main__":
    sys.exit(main())
