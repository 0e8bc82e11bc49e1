"""Sweeps: the summary of job results, the Hydra callback's MLflow parent run, and a real `-m` multirun."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import project_overrides
from episode_factory import episode, write_run
from omegaconf import OmegaConf

from crafter_exp import tracking
from crafter_exp.store.traces import TraceStore
from crafter_exp.sweep import PARENT_ENV, SweepCallback, read_results, summary_table, write_summary


def fake_job(sweep_dir, num: int, overrides: list[str], metrics: dict) -> None:
    job = sweep_dir / str(num)
    job.mkdir(parents=True)
    (job / "result.json").write_text(json.dumps({"metrics": metrics, "overrides": overrides}))


def test_summary_of_a_lora_rank_sweep(tmp_path):
    sweep = tmp_path / "multirun" / "x"
    for num, rank in enumerate([16, 4, 64, 8]):  # job order is not value order
        fake_job(
            sweep,
            num,
            ["name=lora", f"trainer.lora_r={rank}"],
            {"student_after": {"mean_achievements": rank / 10}, "teacher": {"mean_achievements": 9.0}},
        )
    (sweep / "4").mkdir()  # a job that wrote nothing (still running or crashed) is skipped
    results = read_results(sweep)
    assert [r["job"] for r in results] == ["0", "1", "2", "3"]
    table, swept = summary_table(results, "mean_achievements")
    assert swept == ["trainer.lora_r"]  # name=lora is the same in every job: not swept
    assert len(table) == 8 and set(table.policy) == {"student_after", "teacher"}
    files = write_summary(sweep, "mean_achievements")
    csv = pd.read_csv(files["csv"])
    assert csv[csv.policy == "student_after"].set_index("trainer.lora_r")["mean_achievements"].to_dict() == {
        16: 1.6,
        4: 0.4,
        64: 6.4,
        8: 0.8,
    }
    markdown = files["markdown"].read_text()
    assert "| trainer.lora_r | student_after | teacher |" in markdown
    assert markdown.index("| 4 |") < markdown.index("| 8 |") < markdown.index("| 16 |") < markdown.index("| 64 |")
    assert files["figure"].read_bytes()[:4] == b"\x89PNG" and files["figure"].stat().st_size > 5000
    assert json.loads(files["manifest"].read_text())["jobs"] == ["0", "1", "2", "3"]


def sweep_config(project, overrides: list[str]):
    return OmegaConf.create(
        {
            "name": "sw",
            "tracking": {"enabled": True, "uri": f"sqlite:///{project}/mlflow.db", "experiment": "crafter-exp"},
            "env": {"name": "crafter"},
            "sweep": {"metric": None},  # the env's primary metric: mean_achievements
            "hydra": {"sweep": {"dir": str(project / "multirun" / "now")}, "overrides": {"task": overrides}},
        }
    )


def test_callback_parent_run_nests_jobs_and_ends(project, monkeypatch):
    import mlflow

    monkeypatch.delenv(PARENT_ENV, raising=False)
    cfg = sweep_config(project, ["trainer.lora_r=4,8"])
    callback = SweepCallback()
    callback.on_multirun_start(cfg)
    try:
        parent = callback.parent_run_id
        assert parent and mlflow.active_run().info.run_id == parent
        import os

        assert os.environ[PARENT_ENV] == parent
        children = []
        for num, rank in enumerate([4, 8]):  # what the basic launcher does: jobs in this process
            callback.on_job_start(cfg, task_function=None)
            with tracking.stage_run(cfg.tracking, "pipeline", f"pipeline-{rank}", {"rank": rank}) as run:
                children.append(run.info.run_id)
            fake_job(
                project / "multirun" / "now",
                num,
                [f"trainer.lora_r={rank}"],
                {"student_after": {"mean_achievements": rank / 4}},
            )
        callback.on_multirun_end(cfg)
    finally:
        while mlflow.active_run():
            mlflow.end_run()
    client = mlflow.MlflowClient(cfg.tracking.uri)
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "sweep"
    assert {client.get_run(c).data.tags["mlflow.parentRunId"] for c in children} == {parent}
    assert {a.path for a in client.list_artifacts(parent, "sweep_summary")} >= {
        "sweep_summary/summary.csv",
        "sweep_summary/summary.md",
        "sweep_summary/mean_achievements.png",
    }
    history = client.get_metric_history(parent, "student_after/mean_achievements")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 2.0)]
    assert PARENT_ENV not in __import__("os").environ

    # a failed job: Hydra skips on_multirun_end; the exit hook summarises what finished and marks the run FAILED
    cfg = sweep_config(project, ["trainer.lora_r=16,32"])
    cfg.hydra.sweep.dir = str(project / "multirun" / "failed")
    callback = SweepCallback()
    callback.on_multirun_start(cfg)
    fake_job(project / "multirun" / "failed", 0, ["trainer.lora_r=16"], {"s": {"mean_achievements": 1.0}})
    callback._finish_on_exit()
    assert mlflow.active_run() is None
    assert client.get_run(callback_run_id(client, "failed")).info.status == "FAILED"
    manifest = json.loads((project / "multirun" / "failed" / "sweep_summary" / "manifest.json").read_text())
    assert manifest["status"].startswith("incomplete") and manifest["jobs"] == ["0"]


def callback_run_id(client, sweep_dir_part: str) -> str:
    exp = client.get_experiment_by_name("crafter-exp")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'sweep'")
    return next(r.info.run_id for r in runs if sweep_dir_part in r.data.tags["sweep_dir"])


@pytest.mark.slow
def test_real_multirun_two_jobs(project):
    """`crafter-exp -m`: two compare jobs (compare.k=1,3), one parent run, a sweep summary at the end."""
    import mlflow

    store = TraceStore(project / "data" / "traces.duckdb")
    for run_id, wins in [("base", [0, 1, 0, 0]), ("tuned", [1, 1, 1, 0])]:
        # Crafter episodes: achievement_rate (what compare.k changes) is a Crafter metric, not one ALFWorld reports
        write_run(
            store,
            run_id,
            [episode(run_id, s, ["collect_wood"] if w else [], env="crafter") for s, w in enumerate(wins * 5)],
            env="crafter",
        )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "crafter_exp",
            "-m",
            "stage=compare",
            "compare.runs=[base,tuned]",
            "compare.k=0,1",
            "compare.figures=false",
            "compare.bootstrap=200",
            "compare.permutations=199",
            "sweep.metric=achievement_rate",
            "hydra.sweep.dir=multirun/test",
            *project_overrides(project),
        ],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = pd.read_csv(project / "multirun" / "test" / "sweep_summary" / "summary.csv")
    rates = summary.set_index(["compare.k", "policy"])["achievement_rate"].to_dict()
    assert rates == {(0, "base"): 100.0, (0, "tuned"): 100.0, (1, "base"): 25.0, (1, "tuned"): 75.0}
    client = mlflow.MlflowClient(f"sqlite:///{project}/mlflow.db")
    exp = client.get_experiment_by_name("crafter-exp")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("stage") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    jobs = [r for r in runs if r.data.tags.get("stage") == "compare"]
    assert len(jobs) == 2 and {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parents[0].info.run_id}
    assert "sweep_summary/summary.md" in {
        a.path for a in client.list_artifacts(parents[0].info.run_id, "sweep_summary")
    }
