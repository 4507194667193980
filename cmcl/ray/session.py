"""Connecting to Ray: a private local instance, or an existing cluster by address.

``ray.init()`` with no address attaches to whatever cluster ``ray start``
left on the machine (someone else's, possibly); a private instance is started
with ``address="local"`` instead, and is stopped when the block ends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    log_to_driver: bool = True,
) -> Iterator[dict[str, float]]:
    """Start (``address`` None) or join (``address`` e.g. ``ray://host:10001``, ``auto``) Ray.

    Yields the cluster's resources (``{"CPU": 2.0, ...}``). If Ray is already
    initialised in this process it is used as is and left running.

    Args:
        address: None for a private local instance; otherwise passed to ``ray.init``.
        num_cpus, num_gpus: resources of a private local instance (default: detected).
        log_to_driver: forward worker output (progress lines, errors) to this process.
    """
    import ray

    if ray.is_initialized():
        yield dict(ray.cluster_resources())
        return
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": log_to_driver}
    if address is None:
        # The dashboard costs ~1 GiB of memory and a port; a private instance needs neither.
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            **kwargs,
        )
    else:
        if num_cpus is not None or num_gpus is not None:
            raise ValueError("num_cpus/num_gpus size a private local Ray; omit them with address")
        ray.init(address=address, **kwargs)
    try:
        yield dict(ray.cluster_resources())
    finally:
        ray.shutdown()
