"""`cmcl train` and `cmcl methods`."""

from __future__ import annotations

import click


def _fail(message: str) -> None:
    raise click.ClickException(message)


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
        f"{s['steps_per_s']:.3g} steps/s"
    )
    click.echo(f"wrote {out}/summary.json")


@click.command()
def methods() -> None:
    """List every method with what it does and the paper's table rows it reproduces."""
    from cmcl.methods import METHODS

    width = max(len(name) for name in METHODS)
    for name, cls in METHODS.items():
        rows = ", ".join(cls.paper_rows) or "-"
        click.echo(f"{name:<{width}}  {cls.description}")
        click.echo(f"{'':<{width}}  paper rows: {rows}")
