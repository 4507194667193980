"""Which trackers exist, which extra installs each, and the up-front check that it is there."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class BackendInfo:
    """One tracker: the module its client is imported as, and the cmcl extra that installs it."""

    module: str
    extra: str
    package: str


BACKENDS: dict[str, BackendInfo] = {
    "mlflow": BackendInfo(module="mlflow", extra="mlflow", package="mlflow-skinny"),
    "wandb": BackendInfo(module="wandb", extra="wandb", package="wandb"),
    "tensorboard": BackendInfo(module="tensorboard", extra="tensorboard", package="tensorboard"),
}


class TrackingNotInstalledError(RuntimeError):
    """A tracker was asked for whose client is not installed (raised before any run starts)."""


def backend_info(name: str) -> BackendInfo:
    """The entry of ``name``; a ValueError naming the valid ones otherwise."""
    if name not in BACKENDS:
        raise ValueError(f"tracking must be one of {', '.join(BACKENDS)}; got {name!r}")
    return BACKENDS[name]


def check_tracking(name: str) -> None:
    """Fail now, naming the extra to install, if tracker ``name`` cannot be used.

    Study drivers and ``cmcl train`` call this before starting any run, so a
    missing client is one clear error instead of a warning per run.
    """
    info = backend_info(name)
    try:
        importlib.import_module(info.module)
    except ImportError as error:
        raise TrackingNotInstalledError(
            f"tracking {name!r} needs the {info.package} package, which cannot be imported "
            f"({error}); install it with: pip install 'cmcl[{info.extra}]'"
        ) from None
