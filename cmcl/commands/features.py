"""`cmcl features extract`."""

from __future__ import annotations

import click


def _fail(message: str) -> None:
    raise click.ClickException(message)


@click.group()
def features() -> None:
    """Pre-extracted I3D features for feature-mode studies.

    \b
    cmcl features extract --benchmark epic --root FRAMES --out features/epic \\
        --i3d-rgb rgb_imagenet.pt --i3d-flow flow_imagenet.pt
    cmcl train --benchmark epic --features features/epic --pair D2-D1 --method cmco
    """


@features.command("extract")
@click.option(
    "--benchmark",
    type=click.Choice(["epic", "ucf-hmdb"]),
    default="epic",
    show_default=True,
    help="Which annotations and frame layout to read.",
)
@click.option(
    "--root", type=click.Path(exists=True, file_okay=False), required=True, help="Frames root."
)
@click.option(
    "--splits",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Annotation directory [default: ROOT/splits].",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Feature store directory to write (re-run with the same settings to resume).",
)
@click.option(
    "--i3d-rgb", type=click.Path(dir_okay=False), default=None, help="pytorch-i3d rgb_imagenet.pt."
)
@click.option(
    "--i3d-flow",
    type=click.Path(dir_okay=False),
    default=None,
    help="pytorch-i3d flow_imagenet.pt.",
)
@click.option(
    "--random-weights",
    is_flag=True,
    help="Allow seeded random I3D weights for a modality without a checkpoint (tests only).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --random-weights.")
@click.option(
    "--windows",
    type=int,
    default=5,
    show_default=True,
    help="Equidistant windows per segment (train and test splits alike).",
)
@click.option("--crop-size", type=int, default=224, show_default=True, help="Centre crop side.")
@click.option("--domains", default=None, help="Comma-separated domains [default: all].")
@click.option("--rgb-template", default=None, help="RGB frame template or layout name.")
@click.option("--flow-template", default=None, help="Flow frame template or layout name.")
@click.option(
    "--shard-size", type=int, default=64, show_default=True, help="Segments per shard (part file)."
)
@click.option(
    "--batch-size", type=int, default=4, show_default=True, help="Segments per forward pass."
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default="auto",
    show_default=True,
    help="auto: bf16 autocast on GPU, fp32 on CPU.",
)
@click.option(
    "--loader-workers",
    type=int,
    default=-1,
    show_default=True,
    help="DataLoader workers per extraction worker (-1: auto, from its CPUs).",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster to use (auto, ray://HOST:10001) [default: a private local Ray].",
)
@click.option("--num-cpus", type=int, default=None, help="CPUs of the private local Ray.")
@click.option(
    "--gpus-per-worker",
    type=float,
    default=None,
    help="GPUs per extraction worker [default: 1 when the cluster has GPUs, else 0].",
)
@click.option(
    "--cpus-per-worker",
    type=float,
    default=None,
    help="CPUs per extraction worker [default: the CPUs split between GPU workers, or 1].",
)
@click.option("--max-workers", type=int, default=None, help="At most this many workers.")
@click.option("--no-ray", is_flag=True, help="Compute every shard in this process, no Ray.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def features_extract(
    benchmark,
    root,
    splits,
    out,
    i3d_rgb,
    i3d_flow,
    random_weights,
    seed,
    windows,
    crop_size,
    domains,
    rgb_template,
    flow_template,
    shard_size,
    batch_size,
    precision,
    loader_workers,
    address,
    num_cpus,
    gpus_per_worker,
    cpus_per_worker,
    max_workers,
    no_ray,
    quiet,
):
    """Run a frozen I3D over every segment and write a feature store to --out.

    \b
    Every segment of every split (EPIC: D1-D3 train and test; UCF/HMDB: U, H)
    gives --windows equidistant windows, centre-cropped as at test time; window k
    of RGB and of flow share a temporal position. Shards of --shard-size segments
    run in parallel on Ray (one worker per GPU when there are GPUs, bf16 autocast
    and channels-last there) and are written as part files as they finish; a
    re-run skips finished shards. The store is usable (meta.json written) once
    every shard is done:
      cmcl train --benchmark epic --features OUT --pair D2-D1 --method cmco
    """
    from cmcl.data.extract import ExtractSettings, extract_store

    if not random_weights:
        for option, path in (("--i3d-rgb", i3d_rgb), ("--i3d-flow", i3d_flow)):
            if path is None:
                _fail(
                    f"{option} is required (a pytorch-i3d checkpoint); --random-weights for tests"
                )
    try:
        settings = ExtractSettings(
            benchmark=benchmark,
            root=root,
            splits=splits,
            domains=None
            if domains is None
            else tuple(d.strip() for d in domains.split(",") if d.strip()),
            windows=windows,
            crop_size=crop_size,
            rgb_template=rgb_template,
            flow_template=flow_template,
            i3d_rgb=i3d_rgb,
            i3d_flow=i3d_flow,
            random_seed=seed if random_weights else None,
            precision=precision,
            shard_size=shard_size,
            batch_size=batch_size,
            loader_workers=loader_workers,
        )
        if no_ray:
            if address is not None or num_cpus is not None:
                _fail("--no-ray computes in this process; drop --address/--num-cpus")
            report = extract_store(settings, out, progress=not quiet)
        else:
            from cmcl.ray.extract import extract_on_ray

            report = extract_on_ray(
                settings,
                out,
                address=address,
                num_cpus=num_cpus,
                gpus_per_worker=gpus_per_worker,
                cpus_per_worker=cpus_per_worker,
                max_workers=max_workers,
                progress=not quiet,
            )
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        from cmcl.commands.errors import error_message

        _fail(error_message(error))
    click.echo(
        f"{report.store}: {report.shards} shards ({report.computed} computed, "
        f"{report.skipped} already done)"
    )
    click.echo(f"train on it with: cmcl train --benchmark {benchmark} --features {report.store}")
