"""Review: `mlflow server` on the project's store shows what the README says — checked through MLflow's REST API.

The store is written by a compare run nested in a parent (pipeline) run over hand-built DuckDB episodes (the
pipeline's own end-to-end test covers the full loop); then a real `mlflow server` is started on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
from conftest import project_overrides
from episode_factory import random_episodes, use_crafter_achievements, write_run

from crafter_exp import tracking
from crafter_exp.config import compose_config
from crafter_exp.stages.compare import compare
from crafter_exp.store.traces import TraceStore

HEALTH_TIMEOUT_S = 240  # ~35 s here when idle (FACTS); much more when the 2 cores are shared


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store_uri: str, cwd, log_path):
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            store_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # own group: stop it and its workers
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}: {open(log_path).read()[-2000:]}")
        try:
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                return proc, base
        except requests.RequestException:
            pass
        time.sleep(1)
    stop_server(proc)
    raise TimeoutError(f"mlflow server not healthy after {HEALTH_TIMEOUT_S} s: {open(log_path).read()[-2000:]}")


def stop_server(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mlflow_server_shows_runs_metrics_datasets_figures(project, monkeypatch):
    achievements = use_crafter_achievements(monkeypatch)
    store = TraceStore(project / "data" / "traces.duckdb")
    rng = np.random.default_rng(0)
    for run_id, mean in [("weak", 1.0), ("strong", 5.0)]:
        write_run(store, run_id, random_episodes(run_id, mean, range(20), rng, achievements))
    cfg = compose_config(project_overrides(project) + ["compare.bootstrap=300", "compare.permutations=499"])
    with tracking.stage_run(cfg.tracking, "pipeline", "pipeline-review", {"name": cfg.name}) as parent:
        result = compare(cfg, ["weak", "strong"])
    parent_id = parent.info.run_id

    proc, base = start_server(cfg.tracking.uri, project, project / "mlflow-server.log")
    try:
        api = f"{base}/api/2.0/mlflow"
        exp = requests.get(
            f"{api}/experiments/get-by-name", params={"experiment_name": cfg.tracking.experiment}, timeout=30
        ).json()["experiment"]
        runs = requests.post(f"{api}/runs/search", json={"experiment_ids": [exp["experiment_id"]]}, timeout=30).json()[
            "runs"
        ]
        tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs}
        assert tags[parent_id]["stage"] == "pipeline"
        children = [run_id for run_id, t in tags.items() if t.get("mlflow.parentRunId") == parent_id]
        assert children == [result.mlflow_run_id] and tags[result.mlflow_run_id]["stage"] == "compare"

        child = requests.get(f"{api}/runs/get", params={"run_id": result.mlflow_run_id}, timeout=30).json()["run"]
        metrics = {m["key"]: m["value"] for m in child["data"]["metrics"]}
        assert metrics["strong/mean_achievements"] == pytest.approx(result.value("strong", "mean_achievements"))
        assert metrics["strong/crafter_score_p"] < 0.05
        assert {"weak/crafter_score_ci_low", "weak/achievement/collect_wood"} <= set(metrics)
        params = {p["key"]: p["value"] for p in child["data"]["params"]}
        assert params["compare.k"] == "3"
        datasets = {d["dataset"]["name"] for d in child["inputs"]["dataset_inputs"]}
        assert datasets == {"weak", "strong"}

        listed = requests.get(
            f"{api}/artifacts/list", params={"run_id": result.mlflow_run_id, "path": "compare/figures"}, timeout=30
        ).json()
        sizes = {f["path"]: int(f.get("file_size", 0)) for f in listed["files"]}
        for name in ("per_achievement", "reward_distribution", "action_distribution", "metric_intervals"):
            assert sizes[f"compare/figures/{name}.png"] > 5000, name
        png = requests.get(
            f"{base}/get-artifact",
            params={"path": "compare/figures/per_achievement.png", "run_uuid": result.mlflow_run_id},
            timeout=30,
        )
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
        report = requests.get(
            f"{base}/get-artifact", params={"path": "compare/report.md", "run_uuid": result.mlflow_run_id}, timeout=30
        )
        assert "strong vs weak: mean_achievements" in report.text
    finally:
        stop_server(proc)
