"""MLflow: one run per cmcl run in an experiment named by the group, found again by its key tag.

Configured as MLflow users expect: ``MLFLOW_TRACKING_URI`` (a team server, or
``sqlite:///mlflow.db``), ``MLFLOW_EXPERIMENT_NAME`` (else the study's name,
else ``cmcl``) and MLflow's own credentials variables. The group is an
experiment rather than a parent run: an experiment found or created by name is
safe when many workers of a study start at once, while a parent run would need
one owner to create it first and to end it last.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cmcl.tracking.base import FAILED, FINISHED, KILLED, Backend
from cmcl.tracking.identity import RUN_KEY_TAG, RunIdentity

HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
"""MLflow's defaults (120 s, 7 retries, factor 2) can hold a call for many minutes; these bound
the tracker's own calls unless the user set the variables."""

DEFAULT_EXPERIMENT = "cmcl"
_STATUS = {FINISHED: "FINISHED", FAILED: "FAILED", KILLED: "KILLED"}
_BATCH_METRICS, _BATCH_PARAMS, _PARAM_CHARS = 1000, 100, 6000  # MLflow's log_batch limits


@contextlib.contextmanager
def bounded_http() -> Iterator[None]:
    """:data:`HTTP_DEFAULTS` for the calls inside, where the user set nothing."""
    added = {k: v for k, v in HTTP_DEFAULTS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def experiment_name(group: str | None) -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or group or DEFAULT_EXPERIMENT


class MlflowBackend(Backend):
    name = "mlflow"

    def __init__(self, *, tracking_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.client: Any = None
        self.run_id: str | None = None

    def _client(self):
        if self.client is None:
            from mlflow import MlflowClient

            self.client = MlflowClient(tracking_uri=self.tracking_uri)
        return self.client

    def experiment_id(self, group: str | None) -> str:
        """The experiment of ``group``, created if missing (another worker may win the race)."""
        from mlflow.exceptions import MlflowException

        client, name = self._client(), experiment_name(group)
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name)
        except MlflowException:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def find_run(self, experiment_id: str, run_key: str, tags: Mapping[str, str], name: str):
        """The run tagged ``run_key`` (the first, should two have raced), else a new one."""
        client = self._client()
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'",
            max_results=5,
            order_by=["attributes.start_time ASC"],
        )
        if found:
            return found[0], True
        return client.create_run(experiment_id, tags=dict(tags), run_name=name), False

    def open(
        self, identity: RunIdentity, params: Mapping[str, Any], *, resume_step: int | None
    ) -> dict[str, int]:
        from mlflow.entities import Param

        with bounded_http():
            client = self._client()
            tags = {**identity.tags, RUN_KEY_TAG: identity.run_key}
            if identity.group:
                tags["cmcl.group"] = identity.group
            run, existed = self.find_run(
                self.experiment_id(identity.group), identity.run_key, tags, identity.name
            )
            self.run_id = run.info.run_id
            last: dict[str, int] = {}
            if existed:
                client.update_run(self.run_id, status="RUNNING")
                for key in run.data.metrics:
                    history = client.get_metric_history(self.run_id, key)
                    if history:
                        last[key] = max(point.step for point in history)
            # Parameters are immutable in MLflow: a resumed run (whose operational settings,
            # train.log_every say, may differ) keeps the values first recorded.
            new = [
                Param(key, str(value)[:_PARAM_CHARS])
                for key, value in params.items()
                if key not in run.data.params
            ]
            for start in range(0, len(new), _BATCH_PARAMS):
                client.log_batch(self.run_id, params=new[start : start + _BATCH_PARAMS])
            return last

    def log_metrics(self, values: Mapping[str, float], *, step: int) -> None:
        self.log_points([(step, dict(values))])

    def log_points(self, points: list[tuple[int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for step, values in points for k, v in values.items()]
        with bounded_http():
            for start in range(0, len(metrics), _BATCH_METRICS):
                self._client().log_batch(
                    self.run_id, metrics=metrics[start : start + _BATCH_METRICS]
                )

    def close(self, status: str) -> None:
        if self.run_id is None:
            return
        with bounded_http():
            self._client().set_terminated(self.run_id, status=_STATUS[status])

    def attach(self, paths: list[Path], *, group: str) -> None:
        """Into a run named ``report`` of the group's experiment (key ``<group>/report``)."""
        with bounded_http():
            key = f"{group}/report"
            tags = {RUN_KEY_TAG: key, "cmcl.group": group, "cmcl.kind": "report"}
            run, _ = self.find_run(self.experiment_id(group), key, tags, "report")
            for path in paths:
                if path.is_dir():
                    self._client().log_artifacts(run.info.run_id, str(path), path.name)
                else:
                    self._client().log_artifact(run.info.run_id, str(path))
            self._client().set_terminated(run.info.run_id, status="FINISHED")
