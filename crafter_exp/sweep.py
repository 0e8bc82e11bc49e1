"""Sweeps (`crafter-exp -m ...`): one MLflow parent run per sweep, a summary of the chosen metric at the end.

`SweepCallback` is a Hydra callback (registered in conf/config.yaml under `hydra.callbacks`):

- `on_multirun_start` (main process, before any job) creates the MLflow store and experiment — so jobs that log
  in parallel cannot race on their creation — and opens the sweep's parent run. Under the basic launcher the jobs
  run in this same process, so the parent stays the active run and every stage run of every job nests under it
  (`tracking.stage_run` nests under the active run). Under a launcher whose jobs run in other processes (Ray),
  `on_job_start` runs in the worker: it exports the parent's id as `CRAFTER_EXP_PARENT_RUN_ID` there, for
  stages to nest under.
- each job writes `<job output dir>/result.json`: {"metrics": {policy_label: {metric: value}}, "overrides": [...]}
  (`report_job`, called by the entrypoint after the stage: a result with `job_result()` — pipeline, compare —
  says what to record; for every other stage its headline metrics). Stages never import this module.
- `on_multirun_end` (main process) reads every job's result.json, writes a table (CSV + Markdown) and a figure of
  `sweep.metric` against the swept values to `<sweep dir>/sweep_summary/`, logs them to the parent run and ends it.

Hydra does not call `on_multirun_end` when a job fails (the sweeper re-raises the job's error first). For that
case an exit hook writes the summary of the jobs that did finish and ends the parent run as FAILED.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional

import pandas as pd
from hydra.experimental.callback import Callback

from crafter_exp.files import write_json_atomic, write_text_atomic
from crafter_exp.tracking import PARENT_RUN_ENV as PARENT_ENV

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
SUMMARY_DIR = "sweep_summary"


# ------------------------------------------------------------------------------------------------ job side


def hydra_job_dir() -> Optional[Path]:
    """The running Hydra job's output folder, or None outside Hydra (tests, notebooks)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return None


def write_job_result(metrics: dict[str, dict[str, float]], **extra: Any) -> Optional[Path]:
    """Write result.json into the Hydra job folder ({"metrics": {label: {metric: value}}, "overrides": [...], ...}).

    No-op outside Hydra. The overrides are the job's own (`hydra.overrides.task`), so the sweep summary knows
    which swept values produced which numbers.
    """
    job_dir = hydra_job_dir()
    if job_dir is None:
        return None
    from hydra.core.hydra_config import HydraConfig

    payload = {"metrics": metrics, "overrides": list(HydraConfig.get().overrides.task), **extra}
    return write_json_atomic(job_dir / RESULT_FILE, payload)


# what each stage reports when its result has no `job_result()` (pipeline and compare have): its headline
# metrics, the same ones its console summary prints
TRAIN_HEADLINE = (
    "train_loss",
    "eval_loss",
    "eval_reply_accuracy",
    "trained_tokens",
    "tokens_per_s",
    "train_time_s",
    "steps",
)
FILTER_HEADLINE = ("examples", "episodes", "episodes_passing", "episodes_selected")


def stage_metrics(stage: str, result: Any) -> dict[str, dict[str, float]]:
    """{stage: {metric: value}}: the headline numbers of a stage's result (empty for stages that have none)."""
    from crafter_exp.stages.rollout import HEADLINE

    metrics = getattr(result, "metrics", None)
    if callable(metrics):  # filter.stats_only's FilterStats computes its metrics
        metrics = metrics()
    values = dict(metrics or {})  # rollout, eval, train
    values.update({k: getattr(result, k) for k in FILTER_HEADLINE if hasattr(result, k) and k not in values})
    keys = {"rollout": HEADLINE, "eval": HEADLINE, "train": TRAIN_HEADLINE, "filter": FILTER_HEADLINE}.get(stage, ())
    return {
        stage: {
            k: float(values[k])
            for k in keys
            if isinstance(values.get(k), (int, float)) and not isinstance(values.get(k), bool)
        }
    }


def report_job(stage: str, result: Any) -> Optional[Path]:
    """After a stage ran under Hydra: its result.json — what the result's `job_result()` says (pipeline, compare),
    else the stage's headline metrics."""
    job_dir = hydra_job_dir()
    if job_dir is None or (job_dir / RESULT_FILE).exists():
        return None
    if callable(getattr(result, "job_result", None)):
        metrics, extra = result.job_result()
        return write_job_result(metrics, **extra)
    extra = {
        k: str(getattr(result, k))
        for k in ("run_id", "mlflow_run_id", "checkpoint", "path")
        if getattr(result, k, None) is not None
    }
    return write_job_result(stage_metrics(stage, result), stage=stage, **extra)


# ------------------------------------------------------------------------------------------------ summary


def _split_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def read_results(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every job's result.json under the sweep folder, in job order, each with its `job` (folder name)."""
    sweep_dir = Path(sweep_dir)
    found = []
    for path in sweep_dir.rglob(RESULT_FILE):
        if SUMMARY_DIR in path.parts:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        data["job"] = path.parent.relative_to(sweep_dir).as_posix()
        found.append(data)
    return sorted(found, key=lambda d: (int(d["job"]) if d["job"].isdigit() else math.inf, d["job"]))


def summary_table(results: list[dict[str, Any]], metric: str) -> tuple[pd.DataFrame, list[str]]:
    """One row per (job, policy): the swept keys' values and `metric`; returns (table, swept keys).

    Swept keys are the override keys whose value differs between jobs.
    """
    overrides = [dict(_split_override(o) for o in r.get("overrides", [])) for r in results]
    keys = list(dict.fromkeys(k for o in overrides for k in o))
    swept = [k for k in keys if len({o.get(k) for o in overrides}) > 1] or keys
    rows = []
    for result, ov in zip(results, overrides):
        for policy, values in (result.get("metrics") or {}).items():
            value = values.get(metric) if isinstance(values, dict) else None
            rows.append(
                {
                    "job": result["job"],
                    **{k: ov.get(k) for k in swept},
                    "policy": policy,
                    metric: float(value) if isinstance(value, (int, float)) else float("nan"),
                }
            )
    table = pd.DataFrame(rows, columns=["job", *swept, "policy", metric])
    return table, swept


def all_metrics_table(results: list[dict[str, Any]], swept: list[str], max_metrics: int = 10) -> pd.DataFrame:
    """One row per (job, policy): the swept values and every metric reported (the first `max_metrics` names)."""
    rows: list[dict[str, Any]] = []
    names: list[str] = []
    for result in results:
        overrides = dict(_split_override(o) for o in result.get("overrides", []))
        for policy, values in (result.get("metrics") or {}).items():
            values = values if isinstance(values, dict) else {}
            names.extend(k for k in values if k not in names)
            rows.append({"job": result["job"], **{k: str(overrides.get(k)) for k in swept}, "policy": policy, **values})
    names = names[:max_metrics]
    return pd.DataFrame(rows, columns=["job", *swept, "policy", *names])


def write_summary(sweep_dir: str | Path, metric: str, status: str = "finished") -> dict[str, Path]:
    """Write the sweep summary (CSV, Markdown, figure, manifest last) under `<sweep_dir>/sweep_summary/`."""
    from crafter_exp import figures
    from crafter_exp.tables import fmt, markdown_table

    sweep_dir = Path(sweep_dir)
    out = sweep_dir / SUMMARY_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    results = read_results(sweep_dir)
    table, swept = summary_table(results, metric)
    files: dict[str, Path] = {}

    def write(name: str, text: str) -> Path:
        return write_text_atomic(out / name, text)

    files["csv"] = write("summary.csv", table.to_csv(index=False))
    x = "setting"
    plot = table.copy()
    plot[x] = [", ".join(f"{k}={row[k]}" for k in swept) for _, row in plot.iterrows()] if swept else plot["job"]
    if len(swept) == 1:
        x = swept[0]
    if plot[metric].notna().any():
        safe = metric.replace("/", "_")
        files["figure"] = figures.sweep_metric(plot, x, metric, out / f"{safe}.png")
    wide = (
        plot.pivot_table(index=x, columns="policy", values=metric, aggfunc="first", sort=False) if len(plot) else None
    )
    if wide is not None:
        wide.index = wide.index.astype(str)
        wide = wide.loc[figures.natural_order(pd.Series(wide.index))]  # 4, 8, 16, 64 — not job order
    lines = [
        f"# Sweep summary: {metric}",
        "",
        f"Sweep folder: `{sweep_dir}`; {len(results)} job(s) reported "
        f"({status}). Swept: {', '.join(swept) or 'nothing'}.",
        "",
    ]
    if wide is not None and not wide.empty:
        lines.append(
            markdown_table(
                [x, *map(str, wide.columns)],
                [[str(i), *(fmt(v) for v in row)] for i, row in zip(wide.index, wide.values)],
            )
        )
    else:
        lines.append("No job reported a result.")
    if "figure" in files:
        lines += ["", f"![{metric}]({files['figure'].name})"]
    every = all_metrics_table(results, swept)
    if len(every):
        lines += [
            "",
            "## Every reported metric",
            "",
            markdown_table(
                list(map(str, every.columns)),
                [[v if isinstance(v, str) else fmt(v) for v in row] for row in every.values],
            ),
        ]
    files["markdown"] = write("summary.md", "\n".join(lines) + "\n")
    manifest = {
        "kind": "sweep_summary",
        "metric": metric,
        "status": status,
        "jobs": [r["job"] for r in results],
        "swept": swept,
        "files": {k: p.name for k, p in files.items()},
    }
    files["manifest"] = write("manifest.json", json.dumps(manifest, indent=1))
    return files


# ------------------------------------------------------------------------------------------------ callback


def _primary_metric(config: Any) -> str:
    """The environment's own headline metric (Crafter: mean_achievements, ALFWorld: success_rate)."""
    try:
        from crafter_exp.envs import env_primary_metric

        return env_primary_metric(str(config.env.name))
    except Exception:  # an env whose optional extra is missing still gets a summary
        return "mean_achievements"


class SweepCallback(Callback):
    """Hydra callback: an MLflow parent run per multirun and a summary of `sweep.metric` at the end."""

    def __init__(self, metric: Optional[str] = None) -> None:
        self.metric_override = metric
        self.parent_run_id: Optional[str] = None
        self.sweep_dir: Optional[Path] = None
        self.metric = metric or "mean_achievements"
        self.tracking_uri: Optional[str] = None
        self._closed = True

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from crafter_exp import tracking

        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.metric = self.metric_override or config.sweep.metric or _primary_metric(config)
        self._closed = False
        atexit.register(self._finish_on_exit)
        if not config.tracking.enabled:
            return
        import mlflow

        experiment_id = tracking.setup(config.tracking)  # store + experiment created here, once, before any job
        self.tracking_uri = mlflow.get_tracking_uri()
        swept = [str(o) for o in config.hydra.overrides.task]
        run = mlflow.start_run(
            run_name=f"sweep-{config.name}",
            experiment_id=experiment_id,
            tags={"stage": "sweep", "name": str(config.name), "sweep_dir": str(self.sweep_dir)},
        )
        self.parent_run_id = run.info.run_id
        mlflow.log_params({"overrides": " ".join(swept)[:6000], "metric": self.metric})
        os.environ[PARENT_ENV] = self.parent_run_id

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        # A job in another process (Ray launcher) has no active parent run: tell its stages which run to nest under.
        if self.parent_run_id and os.environ.get(PARENT_ENV) != self.parent_run_id:
            os.environ[PARENT_ENV] = self.parent_run_id

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        self._finish("FINISHED", "finished")

    def _finish_on_exit(self) -> None:
        """Exit hook: a failed job skipped on_multirun_end; summarise what finished, mark the parent FAILED."""
        if not self._closed:
            self._finish("FAILED", "incomplete: a job failed")

    def _finish(self, run_status: str, summary_status: str) -> None:
        if self._closed:
            return
        self._closed = True
        files: dict[str, Path] = {}
        try:
            if self.sweep_dir is not None and self.sweep_dir.exists():
                files = write_summary(self.sweep_dir, self.metric, summary_status)
                log.info(f"sweep summary: {files['markdown']}")
        finally:
            self._log_and_close(files, run_status)

    def _log_and_close(self, files: dict[str, Path], run_status: str) -> None:
        if self.parent_run_id is None:
            return
        import mlflow

        os.environ.pop(PARENT_ENV, None)
        client = mlflow.MlflowClient(self.tracking_uri)
        for path in files.values():
            client.log_artifact(self.parent_run_id, str(path), "sweep_summary")
        if "csv" in files:
            table = pd.read_csv(files["csv"])
            for step, (_job, rows) in enumerate(table.groupby("job", sort=False)):
                for record in rows.to_dict("records"):
                    value = record.get(self.metric)
                    if isinstance(value, (int, float)) and math.isfinite(value):
                        key = f"{record['policy']}/{self.metric}".replace(":", "_")
                        client.log_metric(self.parent_run_id, key, float(value), step=step)
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.parent_run_id:
            mlflow.end_run(run_status)
        else:
            client.set_terminated(self.parent_run_id, run_status)
        self.parent_run_id = None


__all__ = [
    "SweepCallback",
    "write_job_result",
    "report_job",
    "stage_metrics",
    "all_metrics_table",
    "read_results",
    "summary_table",
    "write_summary",
    "PARENT_ENV",
]
