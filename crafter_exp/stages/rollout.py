"""Rollout stage: play seeds with a policy in parallel and append whole episodes to the trace store.

Also used by the evaluate stage (stage="eval", held-out seeds). A run id names a trace run: rerunning it plays
only the seeds it lacks, so an interrupted rollout resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from crafter_exp import __version__, paths, tracking
from crafter_exp.envs import (
    check_env_config,
    env_achievements,
    env_actions_admissible,
    env_has_expert,
    env_metrics,
    env_slow_steps,
)
from crafter_exp.errors import UserError
from crafter_exp.policies import make_policy, model_label, model_provider
from crafter_exp.progress import progress_bar
from crafter_exp.runner.pool import run_episodes
from crafter_exp.store.traces import EpisodeRecord, TraceStore

if TYPE_CHECKING:
    from crafter_exp.config import Config, EnvConfig, ModelConfig, RayConfig

log = logging.getLogger(__name__)


HEADLINE = (
    "mean_achievements",
    "progression",
    "success_rate",
    "mean_reward",
    "episode_length",
    "parse_failure_rate",
    "steps_per_s",
    "tokens_per_episode",
    "cost_per_episode",
)


@dataclass
class RolloutResult:
    run_id: str
    """Trace run id in the store."""
    mlflow_run_id: Optional[str]
    """MLflow run of this rollout (the earlier one when nothing was left to play)."""
    metrics: dict[str, Any]
    """Summary over all requested seeds (see crafter_exp.metrics.summary)."""
    new_episodes: int
    """Episodes played by this call (0 when resuming a complete run)."""
    seeds: list[int]
    """Seeds of the run."""


def code_version() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def as_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) else obj


def resolve_model(cfg: Config, model_cfg: ModelConfig) -> Any:
    """`model_cfg` with what it leaves to the project filled in: hf_local without a path plays the experiment's
    newest complete checkpoint (stage=eval model=hf_local after stage=train)."""
    if model_cfg.name == "hf_local" and not model_cfg.path:
        model_cfg = dataclasses.replace(model_cfg, path=str(paths.find_checkpoint(cfg)))
        log.info(f"model.path: {model_cfg.path} (newest checkpoint of name={cfg.name})")
    return model_cfg


def for_env(model_cfg: ModelConfig, env_name: str) -> Any:
    """The model config with its environment-dependent defaults settled, so the run's config records what played:
    `decoding: auto` becomes `rank` where the env lists its admissible commands, else `generate`."""
    if getattr(model_cfg, "decoding", None) == "auto":
        decoding = "rank" if env_actions_admissible(env_name) else "generate"
        model_cfg = dataclasses.replace(model_cfg, decoding=decoding)
    if hasattr(model_cfg, "in_process") and model_cfg.in_process is None:
        model_cfg = dataclasses.replace(model_cfg, in_process=not env_slow_steps(env_name))
    return model_cfg


def default_run_id(cfg: Config, stage: str, env_name: str, model_cfg: ModelConfig, config_hash: str) -> str:
    # the hash makes a changed env/model config a new run (sweeps), the same config the same run (resume)
    return f"{cfg.name}-{stage}-{env_name}-{model_label(model_cfg)}-{config_hash[:6]}"


def rollout(
    cfg: Config,
    *,
    stage: str = "rollout",
    run_id: Optional[str] = None,
    seed_start: Optional[int] = None,
    episodes: Optional[int] = None,
    model_cfg: Optional[ModelConfig] = None,
    env_cfg: Optional[EnvConfig] = None,
    protocol: Any = None,
) -> RolloutResult:
    """Play `episodes` seeds from `seed_start` (defaults: cfg.env) with `model_cfg` (default cfg.model) in
    `env_cfg` (default cfg.env). `protocol`: the evaluation protocol the episodes follow (recorded with the run and
    as MLflow tag `protocol`); None = a plain rollout (recorded as protocol null)."""
    env_cfg = env_cfg or cfg.env
    check_env_config(env_cfg)
    check_ray_config(cfg.ray)
    model_cfg = for_env(resolve_model(cfg, model_cfg or cfg.model), env_cfg.name)
    tracking.check_traces_mode(cfg.tracking.traces, cfg.tracking.trace_episodes)
    seed_start = env_cfg.seed if seed_start is None else seed_start
    episodes = env_cfg.episodes if episodes is None else episodes
    if episodes < 0:
        raise UserError(f"episodes must be >= 0, got {episodes}")
    seeds = list(range(seed_start, seed_start + episodes))
    label = model_label(model_cfg)
    max_actions = model_cfg.prompt.max_actions_per_turn if getattr(model_cfg, "prompt", None) else 1
    invalid_feedback = bool(getattr(getattr(model_cfg, "prompt", None), "invalid_feedback", False))
    record_expert = cfg.rollout.record_expert
    if record_expert is None:
        # evaluation: how often each policy does what the expert would (cheap beside a model); and wherever the
        # filter trains on the expert's labels (ALFWorld's default), whichever policy plays
        record_expert = (stage == "eval" or cfg.filter.target == "expert") and env_has_expert(env_cfg.name)
    elif record_expert and not env_has_expert(env_cfg.name):
        raise UserError(f"rollout.record_expert=true needs an env with an expert; {env_cfg.name} has none")

    played_config = {"env": as_dict(env_cfg), "model": as_dict(model_cfg)}
    # what decides the episodes (the schema marks what does not: which seeds, since more episodes extend a run;
    # how fast or robustly they are played, so a resume may change those)
    played_hash = paths.identity({"env": paths.identity_tree(env_cfg), "model": paths.identity_tree(model_cfg)})
    run_id = (
        run_id
        or (cfg.rollout.run_id if stage == "rollout" else None)
        or default_run_id(cfg, stage, env_cfg.name, model_cfg, played_hash)
    )
    run_row = {
        "run_id": run_id,
        "name": cfg.name,
        "stage": stage,
        "env": env_cfg.name,
        "policy": model_cfg.name,
        "model": label,
        "provider": model_provider(model_cfg),
        "seed_start": seed_start,
        "episodes": episodes,
        "config": tracking.redact(as_dict(cfg) | played_config | {"protocol": as_dict(protocol)}),
        "config_hash": played_hash,
        "code_version": code_version(),
    }
    store = TraceStore(cfg.paths.db)
    missing = sorted(set(seeds) - store.done_seeds(run_id))
    # started before anything is written: a bad endpoint or checkpoint fails with no run row and no MLflow run
    policy = make_policy(model_cfg, cfg.seed) if missing else None
    try:
        if policy is not None:
            policy.start()
        stored_run = store.register_run(run_row)
        if episodes > int(stored_run.get("episodes") or 0):  # extended: complete only once every seed is in
            store.set_run_field(run_id, "episodes", episodes)
        if not missing and stored_run.get("mlflow_run_id"):
            return RolloutResult(
                run_id, stored_run["mlflow_run_id"], summarize(store, run_id, seeds, env_cfg.name), 0, seeds
            )
        run_meta = {k: run_row[k] for k in ("run_id", "env", "policy", "model", "provider")}
        tags = {"env": env_cfg.name, "model": label, "policy": model_cfg.name, "trace_run_id": run_id, "name": cfg.name}
        if protocol is not None:
            tags["protocol"] = protocol.name
        with tracking.stage_run(cfg.tracking, stage, f"{stage}-{label}", run_row["config"], tags) as mlrun:
            mlflow_run_id = mlrun.info.run_id if mlrun else None
            if mlflow_run_id:
                store.set_run_field(run_id, "mlflow_run_id", mlflow_run_id)
            # traces only where there is a run to link them to (tracking on); none at all when off
            trace_mode = cfg.tracking.traces if mlflow_run_id and cfg.tracking.traces != "off" else None
            new = _play(
                cfg,
                env_cfg,
                model_cfg,
                policy,
                missing,
                run_meta,
                max_actions,
                trace_mode,
                invalid_feedback,
                record_expert,
            )
            metrics = summarize(store, run_id, seeds, env_cfg.name)
            metrics["new_episodes"] = new["episodes"]
            metrics["steps_per_s"] = new["steps"] / new["seconds"] if new["seconds"] > 0 else 0.0
            if trace_mode:
                metrics["traced_episodes"] = new["traced"]
            tracking.log_metrics(metrics)
            if mlrun:
                episodes_df = store.episodes([run_id])
                tracking.log_dataframe_input(
                    episodes_df.drop(columns=["created_at"]), name=run_id, source=str(cfg.paths.db), context="traces"
                )
                tracking.log_json(
                    {"run_id": run_id, "seeds": [seeds[0], seeds[-1]] if seeds else [], "metrics": metrics},
                    "summary.json",
                )
    finally:
        if policy is not None:
            policy.close()
    return RolloutResult(run_id, mlflow_run_id, metrics, new["episodes"], seeds)


def check_ray_config(ray_cfg: RayConfig) -> None:
    """Negative actors or retries, or batches of no episode, are typos: refuse them before any work."""
    if ray_cfg.num_workers < 0:
        raise UserError(f"ray.num_workers must be >= 0 (0 = play in this process), got {ray_cfg.num_workers}")
    if ray_cfg.episodes_per_task < 1:
        raise UserError(f"ray.episodes_per_task must be >= 1, got {ray_cfg.episodes_per_task}")
    if ray_cfg.max_task_retries < 0:
        raise UserError(f"ray.max_task_retries must be >= 0, got {ray_cfg.max_task_retries}")


def _play(
    cfg: Config,
    env_cfg: EnvConfig,
    model_cfg: ModelConfig,
    policy: Any,
    seeds: list[int],
    run_meta: dict[str, Any],
    max_actions: int,
    trace_mode: Optional[str] = None,
    invalid_feedback: bool = False,
    record_expert: bool = False,
) -> dict[str, float]:
    """Play `seeds`, storing each batch as it finishes; with `trace_mode`, each stored episode that mode selects
    also becomes an MLflow trace of the active run (built here from the records: actors never touch MLflow)."""
    store = TraceStore(cfg.paths.db)
    # a policy that overlaps calls or batches a forward pass wants at least that many episodes together
    per_task = max(cfg.ray.episodes_per_task, getattr(model_cfg, "concurrency", 0), getattr(model_cfg, "batch_size", 0))
    done = {"episodes": 0, "steps": 0, "achievements": 0, "traced": 0}
    traced: set[int] = set()  # a batch replayed after an actor died must not trace its episodes twice
    start = time.perf_counter()
    bar = progress_bar(
        total=len(seeds), desc=f"{run_meta['run_id']}", unit="ep", disable=not cfg.rollout.progress, dynamic_ncols=True
    )

    def on_batch(records: list[EpisodeRecord]) -> None:
        store.append(records)
        if trace_mode:
            chosen = [
                r for r in records if int(r.episode["seed"]) not in traced and tracking.wants_trace(trace_mode, r.calls)
            ]
            if cfg.tracking.trace_episodes is not None:
                chosen = chosen[: max(0, cfg.tracking.trace_episodes - done["traced"])]
            tracking.log_episode_traces([(r.episode, r.steps, r.calls) for r in chosen])
            traced.update(int(r.episode["seed"]) for r in chosen)
            done["traced"] += len(chosen)
        done["episodes"] += len(records)
        done["steps"] += sum(r.episode["steps"] for r in records)
        done["achievements"] += sum(r.episode["num_achievements"] for r in records)
        elapsed = time.perf_counter() - start
        bar.update(len(records))
        bar.set_postfix(
            steps_s=f"{done['steps'] / max(elapsed, 1e-9):.0f}",
            ach=f"{done['achievements'] / max(done['episodes'], 1):.2f}",
        )

    try:
        run_episodes(
            env_cfg,
            model_cfg,
            seeds,
            run_meta,
            on_batch,
            policy=policy,
            per_task=per_task,
            seed=cfg.seed,
            num_workers=cfg.ray.num_workers,
            address=cfg.ray.address,
            max_actions=max_actions,
            max_task_retries=cfg.ray.max_task_retries,
            invalid_feedback=invalid_feedback,
            record_expert=record_expert,
        )
        if done["traced"]:
            tracking.flush_traces()  # written before the run ends, and counted in the rollout's time
    finally:
        bar.close()
    return {**done, "seconds": time.perf_counter() - start}


def summarize(store: TraceStore, run_id: str, seeds: list[int], env_name: str) -> dict[str, Any]:
    from crafter_exp.metrics import summary

    df = store.episodes([run_id])
    df = df[df["seed"].isin(seeds)]
    return summary(df, env_achievements(env_name), declaration=env_metrics(env_name))


def latest_run(store: TraceStore, name: str, stage: str = "rollout") -> str:
    """The newest complete trace run of an experiment name and stage (how stages find each other's outputs)."""
    runs = store.runs()
    mine = runs[(runs["name"] == name) & (runs["stage"] == stage)]
    done = {r: len(store.done_seeds(r)) for r in mine["run_id"]}
    found = paths.newest_complete_run(mine, done, name, stage)
    if found is None:
        raise UserError(f"no complete {stage} run found for name={name!r} in {store.path}; run stage={stage} first")
    return found


def run(cfg: Config) -> RolloutResult:
    """stage=rollout."""
    result = rollout(cfg)
    log.info(f"rollout {result.run_id}: {result.new_episodes} new episodes, {len(result.seeds)} in the run")
    log.info("  " + ", ".join(f"{k}={result.metrics[k]:.3g}" for k in HEADLINE if k in result.metrics))
    return result


def export_run(cfg: Config) -> Path:
    """stage=export: write a trace run as the reference workflows' JSON."""
    store = TraceStore(cfg.paths.db)
    run_id = cfg.rollout.run_id or latest_run(store, cfg.name)
    if store.get_run(run_id) is None:
        raise UserError(f"no trace run {run_id!r} in {store.path}")
    path = store.export_json(run_id, paths.export_path(cfg, run_id))
    log.info(f"wrote {path}")
    return path


__all__ = ["RolloutResult", "rollout", "run", "export_run", "latest_run", "summarize"]
