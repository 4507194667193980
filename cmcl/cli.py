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


def _fail(message: str) -> None:
    raise click.ClickException(message)


@cli.command()
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
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in --out.")
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
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(benchmark, pair, method, seed, assignments, out, resume, features, root, splits, quiet):
    """Train and evaluate one run, writing its run directory.

    \b
    The run directory holds config.json (the resolved settings), metrics.parquet
    (one row per evaluation), summary.json (the reported accuracy: mean of the
    last 9 evaluations) and checkpoints/. Examples:
      cmcl train --benchmark synthetic-epic --pair D2-D1 --method cmco
      cmcl train --method cmco --set lambda=1.0 --set T=0.9 --seed 2
    """
    from cmcl.config import RunConfig, parse_assignments
    from cmcl.engine import ConsoleReporter, NonFiniteLossError, fit
    from cmcl.engine.checkpoint import latest_checkpoint
    from cmcl.methods import method_class

    try:
        overrides = {"benchmark": benchmark, "pair": pair, "method": method, "seed": seed}
        for key, value in (
            ("data.features", features),
            ("data.root", root),
            ("data.splits", splits),
        ):
            if value is not None:
                overrides[key] = value
        overrides.update(parse_assignments(assignments))
        config = RunConfig.from_overrides(overrides)
        method_class(config.method.name)
    except (KeyError, ValueError) as error:
        _fail(str(error).strip('"'))
    if out is None:
        c = config
        out = f"runs/{c.data.benchmark}-{c.data.pair}-{c.method.name}-s{c.train.seed}"
    if resume:
        if latest_checkpoint(out) is None:
            _fail(f"--resume: no checkpoint under {out}/checkpoints")
        config = config.replace({"resume": "auto"})
    elif latest_checkpoint(out) is not None:
        _fail(f"{out} already holds a run; add --resume to continue it or choose another --out")
    config = config.replace({"out": out})
    click.echo(
        f"{config.method.name} on {config.data.benchmark} {config.data.pair}, seed "
        f"{config.train.seed}: {config.train.warmup_steps} warm-up + {config.train.steps} "
        f"adaptation steps -> {out}",
        err=True,
    )
    try:
        result = fit(config, None if quiet else ConsoleReporter())
    except NonFiniteLossError as error:
        _fail(str(error))
    except FileNotFoundError as error:
        _fail(str(error))
    s = result.summary
    click.echo(
        f"target accuracy {s['target_acc']:.2f}% (mean of the last {s['evaluations']} "
        f"evaluations; rgb {s['target_acc_rgb']:.2f}, flow {s['target_acc_flow']:.2f}); "
        f"best {s['best']['target_acc']:.2f}% at adapt step {s['best']['step']}; "
        f"{s['steps_per_s']:.1f} steps/s"
    )
    click.echo(f"wrote {out}/summary.json")


@cli.command()
def methods() -> None:
    """List every method with what it does and the paper's table rows it reproduces."""
    from cmcl.methods import METHODS

    width = max(len(name) for name in METHODS)
    for name, cls in METHODS.items():
        rows = ", ".join(cls.paper_rows) or "-"
        click.echo(f"{name:<{width}}  {cls.description}")
        click.echo(f"{'':<{width}}  paper rows: {rows}")


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
