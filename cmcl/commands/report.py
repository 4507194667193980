"""`cmcl report`."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
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
def report_command(
    dirs: tuple[str, ...], out: str | None, formats: str, rule: str, max_tsne: int
) -> None:
    """Write a report of study or run directories: the paper's tables beside reproduced numbers.

    \b
    DIR is a study directory (results/, runs/, study.json, optuna.journal), a run
    directory from `cmcl train --out` (config.json, metrics.parquet), or a folder
    holding either one level down; several DIRs are combined. Unfinished runs and
    missing files are reported, not fatal. Reads result files only (no torch, no Ray).

    \b
    Example:  cmcl report runs/quickstart --out reports/quickstart
    """
    import shlex
    from pathlib import Path

    from cmcl.report.build import build_report, parse_formats

    try:
        chosen = parse_formats(formats)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--formats") from None
    target = Path(out) if out else Path("reports") / Path(dirs[0]).resolve().name
    command = (
        "cmcl report "
        + " ".join(shlex.quote(d) for d in dirs)
        + f" --out {shlex.quote(str(target))}"
    )
    if rule != "last9":
        command += f" --rule {rule}"
    summary = build_report(
        dirs, target, formats=chosen, rule=rule, max_tsne=max_tsne, command=command
    )
    click.echo(f"wrote {target}/ ({len(summary.files)} files)")
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
