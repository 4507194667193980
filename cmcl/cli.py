"""The ``cmcl`` command line: thin wrappers that parse, call and print."""

from __future__ import annotations

import sys

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


@cli.group()
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


def main() -> None:
    cli(prog_name="cmcl")


if __name__ == "__main__":
    sys.exit(main())
