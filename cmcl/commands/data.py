"""`cmcl data check` and `cmcl data synth-video`."""

from __future__ import annotations

import sys

import click


def _fail(message: str) -> None:
    raise click.ClickException(message)


@click.group()
def data() -> None:
    """Real-data utilities: check a frames tree, write synthetic videos.

    \b
    cmcl data synth-video --out synth            # tiny EPIC-layout videos + split pickles
    cmcl data check --benchmark epic --root synth
    """


@data.command("check")
@click.option(
    "--benchmark",
    type=click.Choice(["epic", "ucf-hmdb"]),
    default="epic",
    show_default=True,
    help="Which annotation format and frame layout to check.",
)
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False),
    required=True,
    help="Frames root (holding rgb/ and flow/ for EPIC).",
)
@click.option(
    "--splits",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Annotation directory: EPIC D{1,2,3}_{train,test}.pkl or TA3N list files "
    "[default: ROOT/splits].",
)
@click.option(
    "--rgb-template",
    default=None,
    help="RGB frame path template or layout name (mmsada, epic-tar, ta3n) "
    "[default: mmsada for epic, ta3n for ucf-hmdb].",
)
@click.option("--flow-template", default=None, help="Flow frame path template or layout name.")
@click.option("--domains", default=None, help="Comma-separated domains to check [default: all].")
@click.option(
    "--decode/--no-decode", default=True, show_default=True, help="Also decode every frame."
)
@click.option("--workers", type=int, default=None, help="Decoding threads [default: min(8, CPUs)].")
@click.option("--show", type=int, default=10, show_default=True, help="Offending paths to list.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_check(
    benchmark, root, splits, rgb_template, flow_template, domains, decode, workers, show, quiet
):
    """Verify that every frame any window of any segment can read exists and decodes.

    Covers every segment of every split (train and test) of each domain, both
    modalities (RGB and flow u, v; EPIC flow at half the RGB rate). Prints
    per-split counts of segments ok / missing / corrupt and the first offending
    paths; exits with status 1 when any frame is missing or corrupt.
    """
    from cmcl.data.check import check_frames

    try:
        report = check_frames(
            benchmark,
            root,
            splits,
            rgb_template=rgb_template,
            flow_template=flow_template,
            domains=None
            if domains is None
            else [d.strip() for d in domains.split(",") if d.strip()],
            decode=decode,
            workers=workers,
            progress=not quiet,
        )
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    click.echo(report.summary(show=show))
    if not report.passed:
        sys.exit(1)


@data.command("synth-video")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory to write.")
@click.option("--size", type=int, default=64, show_default=True, help="Frame height and width.")
@click.option(
    "--train-per-class",
    type=int,
    default=3,
    show_default=True,
    help="Training segments per class and domain.",
)
@click.option(
    "--test-per-class",
    type=int,
    default=1,
    show_default=True,
    help="Test segments per class and domain.",
)
@click.option(
    "--segment-frames",
    type=(int, int),
    default=(20, 60),
    show_default=True,
    metavar="MIN MAX",
    help="Range of segment lengths in RGB frames.",
)
@click.option("--seed", type=int, default=0, show_default=True)
def data_synth_video(out, size, train_per_class, test_per_class, segment_frames, seed):
    """Write small synthetic videos in the exact EPIC layout, with MM-SADA split pickles.

    \b
    OUT/rgb/{P08,P01,P22}/VIDEO/frame_%010d.jpg, OUT/flow/.../{u,v}/frame_%010d.jpg
    (flow at half the RGB rate) and OUT/splits/D{1,2,3}_{train,test}.pkl: moving
    squares whose colour and direction depend on the class, over a background
    that depends on the domain. Deterministic for a seed.
    """
    from cmcl.data.synth_video import write_synthetic_videos

    try:
        written = write_synthetic_videos(
            out,
            height=size,
            width=size,
            train_per_class=train_per_class,
            test_per_class=test_per_class,
            segment_frames=segment_frames,
            seed=seed,
        )
    except ValueError as error:
        _fail(str(error))
    sizes = ", ".join(f"{k} {v}" for k, v in written.sizes.items())
    click.echo(f"wrote frames under {written.root} and splits in {written.splits} ({sizes})")
    click.echo(f"check them with: cmcl data check --benchmark epic --root {written.root}")
