"""`cmcl report --tracking mlflow`: the report's files kept with the study's experiment."""

from __future__ import annotations

from click.testing import CliRunner
from report_fixtures import Run
from report_fixtures_v2 import write_study_v2

from cmcl.cli import cli


def test_the_report_is_attached_to_each_studys_experiment(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's local artifact root is ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    runs = [Run("synthetic-epic", "D2-D1", m, s, 50.0 + s) for m in ("cmco",) for s in (0, 1)]
    study = write_study_v2(tmp_path / "studies", "tracked-report", runs)
    result = CliRunner().invoke(
        cli,
        ["report", str(study), "--out", str(tmp_path / "rep"), "--tracking", "mlflow", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert "attached to tracked-report in mlflow" in result.output
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked-report")
    (run,) = client.search_runs([experiment.experiment_id])
    listed = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"index.md", "csv"} <= listed
