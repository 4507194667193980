"""Build the :class:`~cmcl.data.base.PairData` a run's config asks for."""

from __future__ import annotations

from cmcl.config import RunConfig
from cmcl.data.base import PairData
from cmcl.data.benchmarks import get_benchmark


def build_pair_data(config: RunConfig) -> PairData:
    """Synthetic benchmarks and ``data.features`` -> a feature store; ``model.backbone=i3d`` -> frames."""
    benchmark = get_benchmark(config.data.benchmark)
    source, target = benchmark.check_pair(config.data.pair)
    synchronised = config.data.sampling == "synchronised"
    if config.model.backbone == "i3d":
        if benchmark.synthetic:
            raise ValueError(
                f"benchmark {benchmark.name} is a feature benchmark; video mode needs frames "
                "(make some with `cmcl data synth-video --out DIR`, then --benchmark epic --root DIR)"
            )
        from cmcl.data.video import build_video_pair_data

        return build_video_pair_data(config)
    from cmcl.data.feature_store import FeaturePairData

    if config.data.features is not None:
        root = config.data.features
    elif benchmark.synthetic:
        from cmcl.data.synthetic import synthetic_store

        root = synthetic_store(benchmark.name)
    else:
        raise ValueError(
            f"benchmark {benchmark.name} in feature mode needs data.features=DIR "
            "(a store written by `cmcl features extract`), or model.backbone=i3d with data.root"
        )
    return FeaturePairData(
        root, benchmark=benchmark.name, source=source, target=target, synchronised=synchronised
    )
