"""A stage's MLflow run ends by its outcome, and a failing store never hides why the stage stopped."""

from __future__ import annotations

import logging

import pytest

from crafter_exp import tracking
from crafter_exp.config import TrackingConfig


def _status(cfg: TrackingConfig, run_id: str) -> str:
    import mlflow

    return mlflow.MlflowClient(cfg.uri).get_run(run_id).info.status


@pytest.mark.parametrize(
    ("raised", "status"), [(None, "FINISHED"), (KeyboardInterrupt, "KILLED"), (RuntimeError, "FAILED")]
)
def test_run_status_follows_the_outcome(project, raised, status):
    cfg = TrackingConfig(uri=f"sqlite:///{project}/mlflow.db")
    run_id = None
    try:
        with tracking.stage_run(cfg, "rollout", "r", {"a": 1}) as run:
            run_id = run.info.run_id
            if raised:
                raise raised()
    except BaseException as err:  # noqa: BLE001 - the test checks which one arrives
        assert isinstance(err, raised)
    assert _status(cfg, run_id) == status


def test_interrupt_survives_a_locked_store(project, monkeypatch, caplog):
    """Seen in CI: Ctrl-C landed mid-write, ending the run hit `database is locked`, and the user got exit 1 and a
    store traceback instead of the interrupt. The interrupt must come out; the run stays RUNNING and resumes."""
    import mlflow
    from mlflow.exceptions import MlflowException

    cfg = TrackingConfig(uri=f"sqlite:///{project}/mlflow.db")

    def locked(*args, **kwargs):
        raise MlflowException("(sqlite3.OperationalError) database is locked\n(Background on this error: ...)")

    with pytest.raises(KeyboardInterrupt), caplog.at_level(logging.WARNING, logger="crafter_exp"):
        with tracking.stage_run(cfg, "rl", "rl-run", {"a": 1}) as run:
            run_id = run.info.run_id
            monkeypatch.setattr(mlflow.tracking.client.MlflowClient, "set_terminated", locked)
            raise KeyboardInterrupt
    monkeypatch.undo()
    assert mlflow.active_run() is None  # nothing left on mlflow's run stack for the next stage to trip on
    assert "could not mark the MLflow run KILLED (" in caplog.text and "database is locked)" in caplog.text
    assert _status(cfg, run_id) == "RUNNING"
    with tracking.stage_run(cfg, "rl", "rl-run", {"a": 1}, resume_run_id=run_id):
        pass
    assert _status(cfg, run_id) == "FINISHED"
