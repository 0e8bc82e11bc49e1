"""The compare stage over hand-built episodes in a real DuckDB store: report files, MLflow run, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import project_overrides
from episode_factory import episode, random_episodes, use_crafter_achievements, write_run

from crafter_exp import metrics as M
from crafter_exp.config import compose_config
from crafter_exp.errors import UserError
from crafter_exp.stages.compare import compare
from crafter_exp.store.traces import TraceStore

SEEDS = range(1000, 1020)
FAST = ["compare.bootstrap=400", "compare.permutations=999"]


def make_cfg(home, *extra, tracking=False):
    return compose_config(project_overrides(home) + FAST + [f"tracking.enabled={str(tracking).lower()}", *extra])


@pytest.fixture
def runs(project, monkeypatch):
    """weak and twin (same policy quality), strong; all on the same 20 seeds."""
    achievements = use_crafter_achievements(monkeypatch)
    store = TraceStore(project / "data" / "traces.duckdb")
    rng = np.random.default_rng(0)
    for run_id, mean in [("weak", 1.0), ("twin", 1.0), ("strong", 5.0)]:
        write_run(store, run_id, random_episodes(run_id, mean, SEEDS, rng, achievements))
    return store


def test_compare_report_files_and_mlflow(project, runs, capsys):
    import mlflow

    cfg = make_cfg(project, tracking=True)
    result = compare(cfg, ["weak", "twin", "strong"])
    assert result.labels == ["weak", "twin", "strong"]

    # numbers: the table holds each run's metrics, the tests flag the real difference only
    weak = runs.episodes(["weak"])
    assert result.value("weak", "mean_achievements") == pytest.approx(M.compute(weak, M_ACH())["mean_achievements"])
    strong_test = result.test("weak", "strong", "mean_achievements")
    assert strong_test["significant"] and strong_test["p"] < 0.01 and strong_test["test"].startswith("paired")
    assert not result.test("weak", "twin", "mean_achievements")["significant"]
    assert ("strong", "crafter_score") in set(zip(result.significant["experiment"], result.significant["metric"]))
    assert set(result.significant["experiment"]) == {"strong"}

    # files: CSV + Markdown + figures, manifest last
    out = project / "data" / "reports" / cfg.name / "compare"
    assert result.report_dir == out
    table = pd.read_csv(out / "metrics.csv")
    assert {"experiment", "metric", "value", "ci_low", "ci_high", "p", "p_adj", "significant"} <= set(table.columns)
    row = table[(table.experiment == "strong") & (table.metric == "mean_achievements")].iloc[0]
    assert row.ci_low <= row.value <= row.ci_high and bool(row.significant)
    assert len(table[table.metric.str.startswith("achievement/")]) == 3 * 22
    tests = pd.read_csv(out / "significance.csv")
    assert set(zip(tests.baseline, tests.experiment)) == {("weak", "twin"), ("weak", "strong")}
    report = (out / "report.md").read_text()
    assert "| metric | weak | twin | strong |" in report
    assert "strong vs weak: mean_achievements +" in report
    assert "weak vs" not in report.split("## Significant differences")[1].split("##")[0]
    assert "## Per-achievement success rate" in report
    for name in ("per_achievement", "reward_distribution", "action_distribution", "metric_intervals"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000, name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runs"] == {"weak": "weak", "twin": "twin", "strong": "strong"}
    assert manifest["metrics"]["strong"]["mean_achievements"] == result.value("strong", "mean_achievements")
    latest = max(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert (out / "manifest.json").stat().st_mtime_ns >= latest
    printed = capsys.readouterr().out
    assert "mean_achievements" in printed and "strong vs weak: mean_achievements" in printed

    # MLflow: one compare run with per-experiment metrics, the figures, the episodes as dataset inputs
    client = mlflow.MlflowClient(cfg.tracking.uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["stage"] == "compare"
    assert run.data.metrics["strong/mean_achievements"] == pytest.approx(result.value("strong", "mean_achievements"))
    assert run.data.metrics["strong/mean_achievements_p"] < 0.01
    assert "twin/achievement/collect_wood" in run.data.metrics
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "compare/figures")}
    assert "compare/figures/per_achievement.png" in figures
    assert {a.path for a in client.list_artifacts(run.info.run_id, "compare")} >= {
        "compare/report.md",
        "compare/metrics.csv",
        "compare/manifest.json",
    }
    assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == ["strong", "twin", "weak"]

    # runs named by their MLflow run id or MLflow run name resolve to trace runs
    with mlflow.start_run(run_name="eval-strong", experiment_id=run.info.experiment_id) as named:
        pass
    runs.set_run_field("strong", "mlflow_run_id", named.info.run_id)
    quick = make_cfg(project, "compare.figures=false", "compare.metrics=[mean_achievements]", tracking=True)
    by_id = compare(quick, ["weak", named.info.run_id], labels=["base", "other"])
    assert by_id.runs == ["weak", "strong"] and by_id.labels == ["base", "other"]
    by_name = compare(quick, ["weak", "eval-strong"])
    assert by_name.runs == ["weak", "strong"]


def M_ACH():
    import crafter_exp.envs as envs

    return envs.env_achievements("crafter")


def test_compare_bad_input(project, runs, monkeypatch):
    cfg = make_cfg(project)
    write_run(runs, "empty", [])
    write_run(runs, "elsewhere", random_episodes("elsewhere", 1.0, range(50, 70), np.random.default_rng(1), M_ACH()))
    write_run(runs, "alf", [episode("alf", s, [], env="alfworld", success=False) for s in SEEDS], env="alfworld")
    cases = [
        ([], "nothing to compare"),
        (["weak", "nope"], "unknown run(s): nope"),
        (["weak", "empty"], "no episodes: empty"),
        (["weak", "weak"], "more than once"),
        (["weak", "elsewhere"], "different seed sets"),
        (["weak", "alf"], "different environments"),
    ]
    for names, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            compare(cfg, names)
    with pytest.raises(ValueError, match="unknown metric 'mean_achievement'"):
        compare(make_cfg(project, "compare.metrics=[mean_achievement]"), ["weak", "strong"])
    with pytest.raises(ValueError, match="one distinct label per run"):
        compare(cfg, ["weak", "strong"], labels=["a", "a"])
    with pytest.raises(ValueError, match="compare.alpha"):
        compare(make_cfg(project, "compare.alpha=1.5"), ["weak", "strong"])
    with pytest.raises(UserError, match="trace database not found"):
        compare(make_cfg(project / "elsewhere"), ["weak"])
    assert not (project / "data" / "reports").exists()  # every refusal came before any output

    # forced: different seed sets are compared unpaired
    forced = compare(make_cfg(project, "compare.force=true", "compare.figures=false"), ["weak", "elsewhere"])
    assert set(forced.tests["test"]) == {"permutation (episodes shuffled)"}


def test_metric_selection_custom_metrics_and_pairs(project, runs):
    cfg = make_cfg(
        project,
        "compare.metrics=[mean_achievements,crafter_score,success_rate,achievement/collect_*,termination/*]",
        "compare.custom_metrics=[{_target_: crafter_exp.metrics.termination_rates, kinds: [death]}]",
        "compare.custom_resamples=100",
        "compare.figures=false",
    )
    result = compare(cfg, ["weak", "twin", "strong"], pairs=[("twin", "strong")])
    metrics = set(result.table["metric"])
    assert {"mean_achievements", "crafter_score", "termination/death", "achievement/collect_wood"} <= metrics
    assert not any(m.startswith(("action/", "achievement/place")) for m in metrics) and "mean_reward" not in metrics
    assert result.test("twin", "strong", "mean_achievements")["significant"]
    report = (result.report_dir / "report.md").read_text()
    assert "| termination/death |" in report and "| collect_wood |" in report
    assert not (result.report_dir / "figures").exists()  # compare.figures=false

    everything = compare(
        make_cfg(project, "compare.pairwise=true", "compare.figures=false"), ["weak", "twin", "strong"]
    )
    assert set(zip(everything.tests.baseline, everything.tests.experiment)) == {
        ("weak", "twin"),
        ("weak", "strong"),
        ("twin", "strong"),
    }


def test_alfworld_success_per_task_type(project):
    store = TraceStore(project / "data" / "traces.duckdb")
    rng = np.random.default_rng(0)
    for run_id, p in [("base", 0.2), ("tuned", 0.9)]:
        rows = []
        for seed in range(30):
            won = bool(rng.random() < p)
            rows.append(
                episode(
                    run_id,
                    seed,
                    ["won"] if won else [],
                    env="alfworld",
                    steps=10 if won else 50,
                    success=won,
                    task_type=["pick_and_place_simple", "look_at_obj_in_light"][seed % 2],
                    actions={"go to desk 1": 3, "take pen 1": 1},
                )
            )
        write_run(store, run_id, rows, env="alfworld")
    result = compare(make_cfg(project, "env=alfworld"), ["base", "tuned"])
    assert result.test("base", "tuned", "success_rate")["significant"]
    assert result.value("tuned", "success/pick_and_place_simple") > result.value(
        "base", "success/pick_and_place_simple"
    )
    assert "steps_to_success" in set(result.table["metric"])
    assert (result.report_dir / "figures" / "task_success.png").stat().st_size > 5000
    assert "## Success rate per task type" in (result.report_dir / "report.md").read_text()


@pytest.mark.slow
def test_cli_compare_bad_run_exits_2_with_one_line(project, runs):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "crafter_exp",
            "stage=compare",
            "compare.runs=[weak,nope]",
            "tracking.enabled=false",
            *project_overrides(project),
        ],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("crafter-exp: error: unknown run(s): nope") and "Traceback" not in out.stderr
    assert not (project / "data" / "reports").exists()


# ------------------------------------------------------------------ the computation alone (no files, no MLflow)


def test_compute_gives_the_numbers_without_writing(project, runs):
    from crafter_exp.stages.compare import compute, report

    cfg = make_cfg(project, tracking=True)
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    comp = compute(cfg, ["weak", "strong"])
    # nothing written: no report folder, no MLflow store (tracking is on)
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before
    assert comp.labels == ["weak", "strong"] and comp.runs == ["weak", "strong"] and comp.env == "crafter"
    assert comp.seeds["weak"] == list(SEEDS)
    weak = runs.episodes(["weak"])
    row = comp.table[(comp.table["experiment"] == "weak") & (comp.table["metric"] == "mean_achievements")].iloc[0]
    assert row["value"] == pytest.approx(M.compute(weak, M_ACH())["mean_achievements"])
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    test = comp.tests[(comp.tests["experiment"] == "strong") & (comp.tests["metric"] == "mean_achievements")]
    assert bool(test["significant"].iloc[0]) and "mean_achievements" in comp.scalar
    lines = comp.console_lines(project / "report.md")
    assert lines[0].startswith("compare (crafter, baseline weak; 20 episodes each")
    assert "strong vs weak: mean_achievements +" in lines[-1]

    # the report step writes what was computed, unchanged
    result = report(dataclasses_replace_tracking(cfg), comp)
    assert result.files["metrics_csv"].exists()
    written = pd.read_csv(result.files["metrics_csv"])
    assert written["value"].to_numpy() == pytest.approx(comp.table["value"].to_numpy(dtype=float), nan_ok=True)


def dataclasses_replace_tracking(cfg):
    import dataclasses

    return dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, enabled=False))
