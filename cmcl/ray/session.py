"""Connecting to Ray: a private local instance, or an existing cluster by address.

``ray.init()`` with no address attaches to whatever cluster ``ray start``
left on the machine (someone else's, possibly); a private instance is started
with ``address="local"`` instead, and is stopped when the block ends.

A private instance serves this process alone, so it listens on the loopback
interface only and asks for Ray's token authentication explicitly (the
:data:`PRIVATE_ENV` settings, which Ray reads from the environment when it is
first imported: ``RAY_AUTH_MODE=token`` is Ray's documented switch; with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` Ray takes the node's address to be
127.0.0.1, which GCS, raylet, agents and workers then bind to). A value the
user set in the environment wins (e.g. ``RAY_AUTH_MODE=disabled`` in tests).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
PRIVATE_ENV = {"RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Environment settings of a private instance (see the module docstring)."""


@contextlib.contextmanager
def private_ray_env() -> Iterator[None]:
    """The :data:`PRIVATE_ENV` settings while the block runs, if ray is not imported yet.

    Enter it before importing a module that imports ray (``cmcl.ray.train``) when
    a private instance will follow; a no-op once ray is imported.
    """
    # Ray reads both when it is imported: once imported, changing them splits the
    # driver's view from its children's (an auth-mode mismatch refuses the driver).
    if "ray" in sys.modules:
        yield
        return
    added = {k: v for k, v in PRIVATE_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    log_to_driver: bool = True,
    logging_level: int = logging.WARNING,
    dashboard: bool = False,
    quiet: bool = False,
) -> Iterator[dict[str, float]]:
    """Start (``address`` None) or join (``address`` e.g. ``ray://host:10001``, ``auto``) Ray.

    Yields the cluster's resources (``{"CPU": 2.0, ...}``). If Ray is already
    initialised in this process it is used as is and left running.

    Args:
        address: None for a private local instance; otherwise passed to ``ray.init``.
        num_cpus, num_gpus: resources of a private local instance (default: detected).
        log_to_driver: forward worker output (progress lines, errors) to this process.
        logging_level: of Ray's own loggers in this process.
        dashboard: start a private instance with its dashboard (on 127.0.0.1), for
            Ray's State API; it costs ~1 GiB of memory, so it is off unless asked.
        quiet: Ray's messages about lost nodes become one line each
            (cmcl/ray/quiet.py), whoever initialised Ray.
    """
    from cmcl.ray.quiet import quiet_raylet_messages

    with quiet_raylet_messages(quiet):
        yield from _session(
            address,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            log_to_driver=log_to_driver,
            logging_level=logging_level,
            dashboard=dashboard,
        )


def _session(
    address: str | None,
    *,
    num_cpus: int | None,
    num_gpus: int | None,
    log_to_driver: bool,
    logging_level: int,
    dashboard: bool,
) -> Iterator[dict[str, float]]:
    with private_ray_env() if address is None else contextlib.nullcontext():
        import ray

        if ray.is_initialized():
            yield dict(ray.cluster_resources())
            return
        kwargs = {"logging_level": logging_level, "log_to_driver": log_to_driver}
        if address is None:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=dashboard,
                dashboard_host=LOOPBACK,
                **kwargs,
            )
            node = ray.util.get_node_ip_address()
            if node != LOOPBACK:
                log.warning(
                    "the private Ray listens on %s, not only on %s: Ray was imported before "
                    "cmcl could ask for loopback (set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "
                    "in the environment to have it)",
                    node,
                    LOOPBACK,
                )
        else:
            if num_cpus is not None or num_gpus is not None:
                raise ValueError(
                    "num_cpus/num_gpus size a private local Ray; omit them with address"
                )
            ray.init(address=address, **kwargs)
        try:
            yield dict(ray.cluster_resources())
        finally:
            ray.shutdown()
