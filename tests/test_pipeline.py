"""The whole loop, tiny: rollout -> filter -> train -> evaluate x4 -> compare, every artefact, then a resume."""

from __future__ import annotations

import json

import mlflow
import pytest
from conftest import project_overrides

from crafter_exp.config import compose_config
from crafter_exp.stages.pipeline import pipeline
from crafter_exp.store.traces import TraceStore

TINY = [
    "env.episodes=6",
    "env.max_steps=40",
    "eval.episodes=4",
    "eval.seed=1000",
    "trainer.max_time_s=4",
    "trainer.student.hidden_size=32",
    "trainer.student.num_layers=1",
    "trainer.student.num_heads=2",
    "trainer.student.intermediate_size=64",
    "trainer.eval_fraction=0",
    "compare.bootstrap=200",
    "compare.permutations=199",
]


@pytest.mark.slow
def test_tiny_pipeline_produces_every_artefact_and_resumes(project):
    cfg = compose_config(project_overrides(project) + TINY)
    out = pipeline(cfg)

    store = TraceStore(cfg.paths.db)
    runs = store.runs().set_index("run_id")
    assert runs.loc[out.teacher_run, "stage"] == "rollout"
    assert set(out.eval_runs) == {"random", "teacher", "student_before", "student_after"}
    for run_id in out.eval_runs.values():
        episodes = store.episodes([run_id])
        assert episodes.seed.tolist() == [1000, 1001, 1002, 1003]  # the same held-out seeds for every policy
    dataset = json.loads((out.dataset / "manifest.json").read_text())
    checkpoint = json.loads((out.checkpoint / "manifest.json").read_text())
    assert dataset["examples"] > 0 and checkpoint["dataset_digest"] == dataset["digest"]
    report = out.compare.report_dir
    assert (report / "report.md").is_file() and (report / "metrics.csv").is_file()
    assert any(p.suffix == ".png" for p in report.rglob("*.png"))
    assert "fine-tuned student mean_achievements=" in out.verdict

    client = mlflow.MlflowClient(cfg.tracking.uri)
    all_runs = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    parent = [r for r in all_runs if r.data.tags.get("stage") == "pipeline"]
    assert len(parent) == 1
    children = {
        r.data.tags["stage"] for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id
    }
    assert {"rollout", "filter", "train", "eval", "compare"} <= children

    # a rerun with the same name skips every finished stage: nothing is played or trained again
    before = {r: len(store.episodes([r])) for r in [out.teacher_run, *out.eval_runs.values()]}
    mtime = (out.checkpoint / "manifest.json").stat().st_mtime
    # (progress bars are not part of any output's identity: switching them off retrains nothing)
    again = pipeline(compose_config(project_overrides(project) + TINY + ["trainer.progress=false"]))
    assert again.teacher_run == out.teacher_run and again.eval_runs == out.eval_runs
    assert {r: len(store.episodes([r])) for r in before} == before
    assert (again.checkpoint / "manifest.json").stat().st_mtime == mtime
