"""Several processes on one project: a reader holding the trace store open, and a parallel sweep (Hydra's joblib
launcher) whose jobs all write one traces.duckdb and one mlflow.db."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import mlflow
import pandas as pd
import pytest
from conftest import project_overrides

from crafter_exp.config import compose_config
from crafter_exp.errors import StageFailed
from crafter_exp.stages.rollout import rollout
from crafter_exp.store import traces
from crafter_exp.store.traces import TraceStore

HOLD = (
    "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True); print('open', flush=True); sys.stdin.read()"
)


@pytest.fixture
def reader(project):
    """Another process holding the trace store open read-only until its stdin is closed."""
    store = TraceStore(project / "data" / "traces.duckdb")
    store.init()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(store.path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "open"
    yield proc
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=30)


def config(home, *extra):
    return compose_config(
        project_overrides(home)
        + ["env.max_steps=20", "env.episodes=2", "model=random", "tracking.enabled=false", *extra]
    )


def test_rollout_waits_for_a_reader_then_writes(project, reader, caplog):
    cfg = config(project)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", rollout(cfg)), daemon=True)
    with caplog.at_level(logging.WARNING, logger="crafter_exp.store.traces"):
        thread.start()
        waited = threading.Event()

        def seen() -> bool:
            return any("is locked by process" in r.getMessage() for r in caplog.records)

        for _ in range(600):  # the rollout reached the lock and is waiting on it
            if seen() or not thread.is_alive():
                break
            waited.wait(0.1)
        assert seen(), "the rollout never waited on the reader's lock"
        assert f"process {reader.pid}" in next(r.getMessage() for r in caplog.records if "locked" in r.getMessage())
        reader.stdin.close()  # the reader lets go: the waiting writer goes on
        thread.join(timeout=120)
    result = outcome["result"]
    assert result.new_episodes == 2
    assert TraceStore(cfg.paths.db).done_seeds(result.run_id) == {0, 1}


def test_a_reader_holding_the_store_too_long_gives_one_clear_line(project, reader, monkeypatch):
    monkeypatch.setattr(traces, "LOCK_WAIT_S", 1.5)
    cfg = config(project)
    with pytest.raises(StageFailed) as err:
        rollout(cfg)
    message = str(err.value)
    assert "\n" not in message and str(cfg.paths.db) in message and f"process {reader.pid}" in message
    assert "stayed locked" in message and "1.5 s" in message
    reader.stdin.close()
    reader.wait(timeout=30)
    assert TraceStore(cfg.paths.db).runs().empty  # nothing was written before the wait gave up


@pytest.mark.slow
def test_parallel_sweep_writes_one_store_and_one_mlflow_db(project):
    """3 rollout jobs at once (`hydra/launcher=joblib`): every run stored and tracked once, under the sweep parent,
    linked to the right trace run; the summary lists all three."""
    lengths = [10, 20, 30]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "crafter_exp",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=3",
            "stage=rollout",
            "model=scripted",
            f"env.max_steps={','.join(map(str, lengths))}",
            "env.episodes=2",
            "hydra.sweep.dir=multirun/par",
            *project_overrides(project),
        ],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=500,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "database is locked" not in out.stdout + out.stderr
    assert "Joblib.Parallel" in out.stdout + out.stderr  # the jobs really went to the joblib launcher

    store = TraceStore(project / "data" / "traces.duckdb")
    runs = store.runs()
    assert len(runs) == 3 and runs.mlflow_run_id.notna().all()
    client = mlflow.MlflowClient(f"sqlite:///{project}/mlflow.db")
    exp = client.get_experiment_by_name("crafter-exp")
    tracked = client.search_runs([exp.experiment_id])
    parents = [r for r in tracked if r.data.tags.get("stage") == "sweep"]
    jobs = [r for r in tracked if r.data.tags.get("stage") == "rollout"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(jobs) == 3 and {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parents[0].info.run_id}
    assert {r.info.status for r in jobs} == {"FINISHED"}
    by_id = {r.info.run_id: r for r in jobs}
    for run in runs.itertuples():  # each trace run <-> its own MLflow run, with its own settings and episodes
        mlrun = by_id[run.mlflow_run_id]
        assert mlrun.data.tags["trace_run_id"] == run.run_id
        steps = store.query("SELECT steps FROM episodes WHERE run_id = ?", [run.run_id]).steps.tolist()
        assert steps == [int(mlrun.data.params["env.max_steps"])] * 2
    summary = pd.read_csv(project / "multirun" / "par" / "sweep_summary" / "summary.csv")
    assert sorted(summary["env.max_steps"]) == lengths and summary.mean_achievements.notna().all()
    markdown = (project / "multirun" / "par" / "sweep_summary" / "summary.md").read_text()
    assert "3 job(s) reported (finished). Swept: env.max_steps." in markdown
    assert "| job | env.max_steps | policy | mean_achievements |" in markdown


def test_every_stage_reports_its_headline_metrics_to_the_sweep(tmp_path):
    """What the entrypoint writes per job (`report_job` -> result.json) for stages without their own report."""
    import json
    from types import SimpleNamespace

    from crafter_exp.stages.rollout import RolloutResult
    from crafter_exp.sweep import stage_metrics, write_summary

    rollout_metrics = {
        "mean_achievements": 2.5,
        "progression": 11.4,
        "episodes": 2,
        "new_episodes": 2,
        "steps_per_s": 40.0,
        "per_achievement": {"collect_wood": 1.0},
    }
    reported = stage_metrics("rollout", RolloutResult("r", None, rollout_metrics, 2, [0, 1]))
    assert reported == {"rollout": {"mean_achievements": 2.5, "progression": 11.4, "steps_per_s": 40.0}}
    train = stage_metrics("train", SimpleNamespace(metrics={"train_loss": 0.5, "eval_loss": 0.7, "lr": [1e-3]}))
    assert train == {"train": {"train_loss": 0.5, "eval_loss": 0.7}}
    assert stage_metrics("filter", SimpleNamespace(examples=120, episodes=8)) == {
        "filter": {"examples": 120.0, "episodes": 8.0}
    }
    assert stage_metrics("export", "data/reports/x.json") == {"export": {}}

    sweep = tmp_path / "multirun"
    for job, (model, value) in enumerate([("random", 0.0), ("scripted", 2.5)]):
        (sweep / str(job)).mkdir(parents=True)
        metrics = {"rollout": {"mean_achievements": value, "progression": value * 4.5}}
        (sweep / str(job) / "result.json").write_text(
            json.dumps({"metrics": metrics, "overrides": ["stage=rollout", f"model={model}"], "stage": "rollout"})
        )
    markdown = write_summary(sweep, "mean_achievements")["markdown"].read_text()
    assert "2 job(s) reported (finished). Swept: model." in markdown
    assert "| random | 0.00 |" in markdown and "| scripted | 2.50 |" in markdown
    assert "| 1 | scripted | rollout | 2.50 | 11.2 |" in markdown  # every reported metric, per job
