"""`cmcl track sync`: upload finished results to an experiment tracker afterwards."""

from __future__ import annotations

import click


@click.group()
def track() -> None:
    """Experiment trackers (MLflow, Weights & Biases, TensorBoard; docs/tracking.md)."""


@track.command("sync")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--tracking",
    type=click.Choice(["mlflow", "wandb", "tensorboard"]),
    required=True,
    help="The tracker, configured as for cmcl train --tracking (MLFLOW_TRACKING_URI, "
    "WANDB_PROJECT/WANDB_MODE, or the run directories).",
)
@click.option(
    "--tracking-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="TensorBoard's log root or W&B's folder [default: each run's directory].",
)
def sync(dirs: tuple[str, ...], tracking: str, tracking_dir: str | None) -> None:
    """Upload the finished runs in DIRS (run directories of cmcl train --out, study
    directories) to the tracker, adding only what it does not hold yet.

    \b
    A run tracked live is the same tracked run here, and syncing twice adds
    nothing; unfinished runs are left out (named at the end). Examples:
      MLFLOW_TRACKING_URI=http://mlflow.internal:5000 cmcl track sync studies_out/quickstart --tracking mlflow
      WANDB_MODE=offline cmcl track sync runs/* --tracking wandb
    """
    from cmcl.tracking import TrackingNotInstalledError
    from cmcl.tracking.sync import sync_results

    try:
        counts = sync_results(dirs, tracking=tracking, directory=tracking_dir, echo=click.echo)
    except (TrackingNotInstalledError, FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"synced {counts.runs} runs to {tracking}: {counts.points} new points")
    if counts.unfinished:
        click.echo(
            f"left out {len(counts.unfinished)} unfinished runs: {', '.join(counts.unfinished)}"
        )
