"""MLflow helpers for stages (only stages call these; backends never touch MLflow).

One store and one experiment per project. The store and the experiment are created up front, by one process,
before any parallel writer exists: several processes creating them at once lose runs (measured: crashes on a new
sqlite file, and runs silently landing in experiment 0 when `set_experiment` loses the creation race), so every
run is started with an explicit `experiment_id`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from crafter_exp.config import TrackingConfig

logger = logging.getLogger(__name__)

PARENT_RUN_ENV = "CRAFTER_EXP_PARENT_RUN_ID"
SECRET_KEY_RE = re.compile(r"(api[_-]?key|secret|token|password)$", re.I)
MAX_PARAM_LEN = 6000


def redact(value: Any) -> Any:
    """A copy of a config tree without secret-looking keys (names like *api_key; `api_key_env` is a name, kept)."""
    if isinstance(value, dict):
        return {k: ("***" if SECRET_KEY_RE.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return out


def config_hash(tree: Any) -> str:
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


def setup(tracking_cfg: TrackingConfig) -> Optional[str]:
    """Point MLflow at the project's store and return the experiment id (created once, here)."""
    if not tracking_cfg.enabled:
        return None
    import mlflow

    mlflow.set_tracking_uri(tracking_cfg.uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(tracking_cfg.experiment)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(tracking_cfg.experiment, artifact_location=_artifact_location(tracking_cfg.uri))
    except Exception:  # another process won the race: read it back rather than fall into "Default"
        exp = client.get_experiment_by_name(tracking_cfg.experiment)
        if exp is None:
            raise
        return exp.experiment_id


def _artifact_location(uri: str) -> Optional[str]:
    """Artifacts of a local sqlite store go beside the database (MLflow's default is ./mlruns of whatever folder the
    first run happened in); a tracking server keeps its own default."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return (db.parent / "mlartifacts").as_uri()


@contextmanager
def stage_run(
    tracking_cfg: TrackingConfig,
    stage: str,
    run_name: str,
    config: dict[str, Any],
    tags: Optional[dict[str, str]] = None,
    parent_run_id: Optional[str] = None,
    resume_run_id: Optional[str] = None,
) -> Iterator[Optional[Any]]:
    """An MLflow run for one stage: params = the resolved config (secrets removed), tags = stage + given tags.

    Nested under `parent_run_id`, or under the active run (a pipeline or a sweep) when there is one.
    `resume_run_id`: continue that run (a stage resumed after an interrupt keeps one run) instead of a new one.
    Yields the mlflow ActiveRun, or None when tracking is disabled.
    """
    if not tracking_cfg.enabled:
        yield None
        return
    import mlflow

    experiment_id = setup(tracking_cfg)
    active = mlflow.active_run()
    if resume_run_id:
        with _ended_by_outcome(mlflow.start_run(run_id=resume_run_id, nested=active is not None)) as run:
            yield run
        return
    # a sweep under a launcher whose jobs run in other processes (Ray) passes its parent run by environment
    parent = parent_run_id or (active.info.run_id if active else None) or os.environ.get(PARENT_RUN_ENV)
    all_tags = {"stage": stage, **(tags or {})}
    started = mlflow.start_run(
        run_name=run_name,
        experiment_id=experiment_id,
        parent_run_id=parent,
        nested=active is not None,
        tags=all_tags,
    )
    with _ended_by_outcome(started) as run:
        params = {k: (str(v)[:MAX_PARAM_LEN] if v is not None else "None") for k, v in flatten(redact(config)).items()}
        items = list(params.items())
        for i in range(0, len(items), 100):
            mlflow.log_params(dict(items[i : i + 100]))
        yield run


@contextmanager
def _ended_by_outcome(run: Any) -> Iterator[Any]:
    """End `run` as FINISHED, KILLED (Ctrl-C / SIGTERM: the user stopped it, the same command resumes) or FAILED.

    mlflow's own `with start_run()` marks every exception FAILED, which in the UI reads as a crash.
    """
    import mlflow

    try:
        yield run
    except (KeyboardInterrupt, SystemExit):
        _end_quietly("KILLED")
        raise
    except BaseException:
        _end_quietly("FAILED")
        raise
    mlflow.end_run("FINISHED")


def _end_quietly(status: str) -> None:
    """End the active run as `status` while an exception is already on its way out: the store failing must not hide it.

    An interrupt can land in the middle of an MLflow write and leave the sqlite store locked (seen in CI:
    `database is locked` replaced the Ctrl-C, exit 1 instead of 130). The run then stays RUNNING in the UI; the
    same command resumes it.
    """
    import mlflow

    try:
        mlflow.end_run(status)
    except Exception as err:  # noqa: BLE001 - any store failure; the original exception is what the user must see
        logger.warning("could not mark the MLflow run %s (%s); it stays RUNNING", status, str(err).splitlines()[0])


def log_metrics(metrics: dict[str, Any], step: Optional[int] = None) -> None:
    """Log the numeric entries of `metrics` to the active run (non-numbers and NaN skipped)."""
    import math

    import mlflow

    if mlflow.active_run() is None:
        return
    clean = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
            clean[re.sub(r"[^0-9A-Za-z_\-. /]", "_", key)] = float(value)
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_json(obj: Any, artifact_file: str) -> None:
    """Write a JSON artifact to the active run."""
    import mlflow

    if mlflow.active_run() is None:
        return
    mlflow.log_dict(json.loads(json.dumps(redact(obj), default=str)), artifact_file)


def log_file(path: str | Path, artifact_path: Optional[str] = None) -> None:
    import mlflow

    if mlflow.active_run() is None:
        return
    mlflow.log_artifact(str(path), artifact_path)


def log_dataframe_input(df: Any, name: str, source: str, context: str, digest: Optional[str] = None) -> Optional[str]:
    """Register a table as a dataset input of the active run; returns its digest (`digest` overrides MLflow's own,
    e.g. a content hash of the files the table describes)."""
    import mlflow

    if mlflow.active_run() is None:
        return None
    import warnings

    with warnings.catch_warnings():  # schema-inference hints and source-guessing notes: noise for a trace table
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(df, source=source, name=name, digest=digest)
        mlflow.log_input(dataset, context=context)
    return dataset.digest


TRACE_MODES = ("llm", "all", "off")


def check_traces_mode(mode: str, episodes: Optional[int] = None) -> None:
    from crafter_exp.errors import UserError

    if mode not in TRACE_MODES:
        raise UserError(f"unknown tracking.traces {mode!r} ({', '.join(TRACE_MODES)})")
    if episodes is not None and episodes < 0:
        raise UserError(f"tracking.trace_episodes must be >= 0 or null, got {episodes}")


def wants_trace(mode: str, calls: list[dict[str, Any]]) -> bool:
    """Whether an episode gets an MLflow trace: `all`, or `llm` and the episode made model calls."""
    return mode == "all" or (mode == "llm" and bool(calls))


def _turn_times(
    start_ns: int, wall_ns: int, steps: list[dict[str, Any]], latency: dict[int, float]
) -> list[tuple[int, int]]:
    """(start, end) of each turn: the store keeps no per-turn clock, so each turn lasts its model calls' latency
    plus an equal share of the rest of the episode's wall time (turns are sequential within an episode)."""
    spent = [int(latency.get(int(s["turn"]), 0.0) * 1e9) for s in steps]
    rest = max(0, wall_ns - sum(spent)) // max(1, len(steps))
    times, t = [], start_ns
    for ns in spent:
        times.append((t, t + ns + rest))
        t += ns + rest
    return times


def log_episode_traces(episodes: list[tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]]) -> list[str]:
    """One MLflow trace per episode, linked to the active run: a root span (seed, model -> achievements, reward,
    termination) with one child span per turn (inputs: the observation; outputs: the reply, the parsed actions, the
    reward; attributes: tokens, latency). `episodes`: (episode row, step rows, llm_call rows) as in the trace store.
    Returns the trace ids (none when no run is active)."""
    import time

    import mlflow
    from mlflow.entities import SpanType
    from mlflow.tracing.constant import SpanAttributeKey

    run = mlflow.active_run()
    if run is None or not episodes:
        return []
    client = mlflow.MlflowClient()
    ids = []
    now = time.time_ns()
    for episode, steps, calls in episodes:
        wall_ns = int(float(episode.get("wall_time_s") or 0.0) * 1e9)
        start = now - wall_ns
        latency: dict[int, float] = {}
        tokens: dict[int, tuple[int, int]] = {}
        models: dict[int, str] = {}
        for c in calls:
            turn = int(c["turn"])
            latency[turn] = latency.get(turn, 0.0) + float(c.get("latency_s") or 0.0)
            p, q = tokens.get(turn, (0, 0))
            tokens[turn] = (p + int(c.get("prompt_tokens") or 0), q + int(c.get("completion_tokens") or 0))
            if c.get("model"):
                models[turn] = str(c["model"])
        seed = int(episode["seed"])
        root = client.start_trace(
            name=f"episode {seed}",
            span_type=SpanType.AGENT,
            inputs={"seed": seed, "env": episode.get("env"), "model": episode.get("model")},
            tags={
                "trace_run_id": str(episode.get("run_id")),
                "seed": str(seed),
                "model": str(episode.get("model")),
                "env": str(episode.get("env")),
            },
            experiment_id=run.info.experiment_id,
            run_id=run.info.run_id,
            start_time_ns=start,
        )
        for step, (t0, t1) in zip(steps, _turn_times(start, wall_ns, steps, latency)):
            turn = int(step["turn"])
            attributes: dict[str, Any] = {
                "turn": turn,
                "step": step.get("step"),
                "parse_ok": step.get("parse_ok"),
                "valid": step.get("valid"),
            }
            if turn in tokens:
                p, q = tokens[turn]
                attributes[SpanAttributeKey.CHAT_USAGE] = {"input_tokens": p, "output_tokens": q, "total_tokens": p + q}
                attributes["latency_s"] = latency.get(turn, 0.0)
                attributes["model"] = models.get(turn)
            span = client.start_span(
                name=f"turn {turn}",
                trace_id=root.trace_id,
                parent_id=root.span_id,
                span_type=SpanType.LLM if turn in tokens else SpanType.CHAIN,
                inputs={"observation": step.get("observation")},
                start_time_ns=t0,
            )
            client.end_span(
                root.trace_id,
                span.span_id,
                end_time_ns=t1,
                attributes=attributes,
                outputs={
                    "reply": step.get("reply"),
                    "actions": list(step.get("actions") or []),
                    "reward": float(step.get("reward") or 0.0),
                    "unlocked": list(step.get("unlocked") or []),
                },
            )
        client.end_trace(
            root.trace_id,
            end_time_ns=start + wall_ns,
            outputs={
                "achievements": list(episode.get("achievements") or []),
                "total_reward": episode.get("total_reward"),
                "steps": episode.get("steps"),
                "termination": episode.get("termination"),
            },
        )
        ids.append(root.trace_id)
    return ids


def flush_traces() -> None:
    """Wait until every trace is written (MLflow exports them in a background thread)."""
    import mlflow

    mlflow.flush_trace_async_logging()


def active_run_id() -> Optional[str]:
    try:
        import mlflow
    except ImportError:
        return None
    run = mlflow.active_run()
    return run.info.run_id if run else None


__all__ = [
    "redact",
    "flatten",
    "config_hash",
    "setup",
    "stage_run",
    "log_metrics",
    "log_json",
    "log_file",
    "log_dataframe_input",
    "active_run_id",
    "log_episode_traces",
    "flush_traces",
    "wants_trace",
    "check_traces_mode",
]
