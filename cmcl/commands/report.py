"""`cmcl report`."""

from __future__ import annotations

import click


def _check_dirs(ctx: click.Context, param: click.Parameter, dirs: tuple[str, ...]):
    """Local directories must exist; object-store URIs are checked when they are read."""
    from pathlib import Path

    from cmcl.filestore import is_uri

    for given in dirs:
        if not is_uri(given) and not Path(given.removeprefix("file://")).is_dir():
            raise click.BadParameter(
                f"{given!r} is not a directory (a study or run directory, or a URI such as "
                "s3://bucket/prefix/NAME)",
                ctx=ctx,
                param=param,
            )
    return dirs


@click.command("report")
@click.argument("dirs", nargs=-1, required=True, callback=_check_dirs)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Report folder to write [default: reports/<name of the first DIR>].",
)
@click.option(
    "--formats",
    default="md,tex,csv,html",
    show_default=True,
    help="Comma-separated subset of md,tex,csv,html (index.md, index.tex, csv/*.csv, index.html).",
)
@click.option(
    "--rule",
    type=click.Choice(["last9", "best", "final"]),
    default="last9",
    show_default=True,
    help="Per-run accuracy: mean of the last k=cfg.train.eval_last_k adaptation evaluations "
    "(the paper's protocol), the best evaluation (an oracle: uses target labels), or the last.",
)
@click.option(
    "--max-tsne",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="At most this many t-SNE figures (one run per benchmark and method); 0 skips t-SNE.",
)
@click.option(
    "--all-features",
    is_flag=True,
    help="t-SNE and nearest-neighbour tables for every run with features.parquet (one file at "
    "a time; slow for many runs), not one representative run per benchmark and method; "
    "--max-tsne is then ignored.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@click.option(
    "--tracking",
    type=click.Choice(["mlflow", "wandb", "tensorboard"]),
    default=None,
    help="Also attach the report's files to each study's group in this tracker (an MLflow "
    "run `report` in the study's experiment, a W&B artifact; docs/tracking.md).",
)
def report_command(
    dirs: tuple[str, ...],
    out: str | None,
    formats: str,
    rule: str,
    max_tsne: int,
    all_features: bool,
    quiet: bool,
    tracking: str | None,
) -> None:
    """Write a report of study or run directories: the paper's tables beside reproduced numbers.

    \b
    DIR is a study directory (results/, summaries/, runs/, study.json,
    optuna.journal) as a local path or an object-store URI (s3://bucket/prefix/NAME;
    results format version 2), a run directory from `cmcl train --out`
    (config.json, metrics.parquet), or a folder holding either one level down;
    several DIRs are combined. Unfinished runs and missing files are reported, not
    fatal. Reads result files only (no torch, no Ray); progress lines go to stderr.

    \b
    Example:  cmcl report runs/quickstart --out reports/quickstart
    """
    import shlex
    import sys
    from pathlib import Path

    from cmcl.report.build import build_report, parse_formats

    try:
        chosen = parse_formats(formats)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--formats") from None
    if tracking is not None:
        from cmcl.tracking import TrackingNotInstalledError, check_tracking

        try:
            check_tracking(tracking)  # before the report is built, not after
        except TrackingNotInstalledError as error:
            raise click.ClickException(str(error)) from None
    target = Path(out) if out else Path("reports") / _name(dirs[0])
    command = (
        "cmcl report "
        + " ".join(shlex.quote(d) for d in dirs)
        + f" --out {shlex.quote(str(target))}"
    )
    if rule != "last9":
        command += f" --rule {rule}"
    if all_features:
        command += " --all-features"
    summary = build_report(
        dirs,
        target,
        formats=chosen,
        rule=rule,
        max_tsne=max_tsne,
        command=command,
        all_features=all_features,
        progress=None if quiet else sys.stderr,
    )
    click.echo(f"wrote {target}/ ({len(summary.files)} files)")
    if tracking is not None:
        from cmcl.tracking import attach_files

        for group in summary.studies:
            attach_files(sorted(target.iterdir()), tracking=tracking, group=group, directory=target)
            click.echo(f"  attached to {group} in {tracking}")
    for table in summary.tables:
        click.echo(f"  {table}")
    if not summary.tables:
        click.echo("  no paper table has a finished run yet")
    if summary.missing:
        click.echo(
            f"  warning: {summary.missing} planned row/pair line(s) without a finished run "
            "(failed, stopped or not run yet): see the Missing lists in index.md"
        )
    if summary.unplanned:
        click.echo(
            f"  {summary.unplanned} paper row(s) or pair(s) not planned by the studies "
            "(empty by design; listed under each table)"
        )


def _name(given: str) -> str:
    """The last part of a path or a URI (the default report folder's name)."""
    from pathlib import Path

    from cmcl.filestore import is_uri

    if is_uri(given):
        return given.rstrip("/").rsplit("/", 1)[-1]
    return Path(given.removeprefix("file://")).resolve().name
