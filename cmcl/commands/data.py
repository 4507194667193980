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
    cmcl data check --features STORE             # a feature store's splits and values
    """


@data.command("check")
@click.option(
    "--benchmark",
    type=click.Choice(["epic", "ucf-hmdb"]),
    default=None,
    help="Which annotation format and frame layout to check [default: epic; with --features: "
    "the store's].",
)
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Frames root (holding rgb/ and flow/ for EPIC).",
)
@click.option(
    "--features",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A feature store to check instead of frames: every split readable, not empty, "
    "all values finite, labels in range.",
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
    benchmark,
    root,
    features,
    splits,
    rgb_template,
    flow_template,
    domains,
    decode,
    workers,
    show,
    quiet,
):
    """Verify that every frame any window of any segment can read exists and decodes.

    Covers every segment of every split (train and test) of each domain, both
    modalities (RGB and flow u, v; EPIC flow at half the RGB rate). Prints
    per-split counts of segments ok / missing / corrupt and the first offending
    paths; exits with status 1 when any frame is missing or corrupt, or a split
    has no segments.

    With --features STORE instead of --root, reads every split of a feature
    store as training would and exits with status 1 when a file does not read,
    a split is empty, a feature is NaN or infinite, or a label is out of range.
    """
    chosen = None if domains is None else [d.strip() for d in domains.split(",") if d.strip()]
    if (root is None) == (features is None):
        _fail("give --root (frames) or --features (a feature store), not both or neither")
    if features is not None:
        frame_options = [
            name
            for name, value in (
                ("--splits", splits),
                ("--rgb-template", rgb_template),
                ("--flow-template", flow_template),
            )
            if value is not None
        ]
        if frame_options:
            _fail(f"{', '.join(frame_options)} apply to frames (--root), not to --features")
        _check_store(features, benchmark, chosen)
        return
    from cmcl.data.check import check_frames

    try:
        report = check_frames(
            benchmark or "epic",
            root,
            splits,
            rgb_template=rgb_template,
            flow_template=flow_template,
            domains=chosen,
            decode=decode,
            workers=workers,
            progress=not quiet,
        )
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    click.echo(report.summary(show=show))
    if not report.passed:
        sys.exit(1)


def _check_store(features: str, benchmark: str | None, domains: list[str] | None) -> None:
    from cmcl.data.store_check import check_store

    try:
        report = check_store(features, domains=domains)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    if benchmark is not None and benchmark != report.benchmark:
        _fail(f"--benchmark {benchmark}, but {features} holds a {report.benchmark} store")
    click.echo(report.summary())
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
