"""Rounds of play, then SFT continued on what the round selected: `rl=rft` and `rl=dagger`.

`rl=rft` (rejection sampling, the baseline GRPO has to beat): each round plays the same G x B episodes GRPO would
(stored as stage `rl` trace runs), keeps the best `rl.keep` of them with the filter stage (its SQL criteria:
`sort_by`, `limit`, `min_achievements`, on top of `cfg.filter`) and trains on the student's own replies.

`rl=dagger` (DAgger, Ross et al. 2011): each round the student plays B fresh worlds while the environment's expert
is asked, at every state the student reached, what it would do (`steps.expert_action`); every turn becomes an
example whose prompt is what the student saw and whose reply is the expert's action (`filter.target=expert`),
aggregated over the rounds so far. Behaviour cloning trains only on the teacher's states; a student that drifts
off them meets states it never saw labelled, and DAgger labels exactly those.

Both continue SFT from the current checkpoint with the train stage (the trainer's loss and schedule,
`rl.sft_steps` / `rl.sft_time_s`, `rl.learning_rate`); the round's checkpoint is the next round's start.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from crafter_exp import paths, tracking
from crafter_exp.files import write_json_atomic

if TYPE_CHECKING:
    from crafter_exp.config import Config, DaggerConfig, FilterConfig, LocalTrainerConfig, RFTConfig, RoundsConfig
    from crafter_exp.stages.rl import RLResult

log = logging.getLogger(__name__)


def run_rounds(
    cfg: Config, start: Path, manifest: dict[str, Any], chash: str, folder: Path, state: dict[str, Any]
) -> RLResult:
    from crafter_exp.envs import env_achievements
    from crafter_exp.progress import progress_bar
    from crafter_exp.stages.filter import filter_and_export
    from crafter_exp.stages.rl import (
        STATE,
        Rollouts,
        _budget_spent,
        _probe_format,
        _result,
        iteration_metrics,
        make_rollout_policy,
        read_iteration,
        rollout_env,
        run_params_and_tags,
        score_text,
        temperature_of,
    )
    from crafter_exp.stages.train import train

    r = cast("RoundsConfig", cfg.rl)  # stage=rl sends rl=rft and rl=dagger here
    relabel = r.name == "dagger"
    temperature = temperature_of(cfg, manifest)
    label = f"{r.name}-{chash[:6]}"
    achievements = env_achievements(cfg.env.name)
    folder.mkdir(parents=True, exist_ok=True)
    state["config_hash"] = chash
    run_config, tags = run_params_and_tags(cfg, start, folder)
    start_runs = start_data_runs(cfg, manifest) if relabel else []
    session_start = time.perf_counter()
    seconds_before = float(state.get("seconds", 0.0))
    with tracking.stage_run(
        cfg.tracking, "rl", f"rl-{r.name}-{cfg.name}", run_config, tags, resume_run_id=state.get("mlflow_run_id")
    ) as mlrun:
        mlflow_run_id = mlrun.info.run_id if mlrun else None
        state["mlflow_run_id"] = mlflow_run_id
        while state["iterations"] < r.iterations and not _budget_spent(cfg, state):
            it = state["iterations"] + 1
            current = Path(state.get("checkpoint") or start)
            t_it = time.perf_counter()
            policy = make_rollout_policy(cfg, current, temperature, label)
            try:
                if it == 1 and r.probe:
                    _probe_format(policy, rollout_env(cfg), r.seed)
                rollouts = Rollouts(cfg, chash, policy, label, record_expert=relabel)
                run_ids = rollouts.register(it, current)
                bar = progress_bar(
                    total=rollout_env(cfg).max_steps,
                    desc=f"{r.name} {it}/{r.iterations} rollout",
                    unit="turn",
                    disable=not r.progress,
                    dynamic_ncols=True,
                )
                try:
                    played = rollouts.play(
                        it, run_ids, on_turn=lambda live: (bar.update(1), bar.set_postfix(live=live))
                    )
                finally:
                    bar.close()
            finally:
                policy.close()
            eps, _ = read_iteration(rollouts.store, run_ids)
            if len(eps) != r.group_size * r.seeds:
                raise RuntimeError(f"round {it}: {len(eps)} of {r.group_size * r.seeds} episodes stored")
            rollout_s = time.perf_counter() - t_it

            t_up = time.perf_counter()
            sources = run_ids
            if relabel:
                dagger = cast("DaggerConfig", r)
                earlier = list(state.get("run_ids", [])) if dagger.aggregate else []
                sources = (start_runs if dagger.start_data else []) + earlier + run_ids
            fcfg = round_filter(cfg.filter, r)
            data = filter_and_export(
                dataclasses.replace(cfg, filter=fcfg), runs=sources, output=folder / f"data-{it:03d}", progress=False
            )
            tcfg = dataclasses.replace(
                cast("LocalTrainerConfig", cfg.trainer),  # rounds continue SFT locally (checked at start)
                model=str(current),
                method="full",
                max_steps=int(r.sft_steps),
                max_time_s=r.sft_time_s,
                learning_rate=float(r.learning_rate),
                warmup_ratio=0.0,
                eval_fraction=0.0,
                save_best=False,
                play_temperature=temperature,
                progress=bool(r.progress),
                dataset=None,
                output_dir=None,
            )
            trained = train(
                dataclasses.replace(cfg, trainer=tcfg), dataset_path=data.path, output_dir=folder / f"iter-{it:03d}"
            )
            update_s = time.perf_counter() - t_up
            m = trained.metrics
            metrics = {
                **iteration_metrics(eps, achievements),
                "kept_episodes": data.episodes,
                "kept_examples": data.examples,
                "loss": m.get("train_loss_mean", float("nan")),
                "loss_first": m.get("train_loss_first", float("nan")),
                "loss_last": m.get("train_loss", float("nan")),
                "optimizer_steps": m.get("steps", 0),
                "update_tokens_per_s": m.get("tokens_per_s", 0.0),
                "rollout_steps_per_s": played["steps"] / played["seconds"] if played["seconds"] > 0 else 0.0,
                "rollout_s": rollout_s,
                "update_s": update_s,
                "replayed_episodes": played["episodes"],
                "iteration_s": time.perf_counter() - t_it,
            }
            if relabel:
                metrics["expert_agreement"] = expert_agreement(rollouts.store, run_ids)
            state["iterations"] = it
            state["checkpoint"] = str(trained.checkpoint)
            state["seconds"] = seconds_before + (time.perf_counter() - session_start)
            state["history"] = list(state.get("history", [])) + [{"iteration": it, **metrics}]
            state["run_ids"] = list(state.get("run_ids", [])) + run_ids
            state.setdefault("datasets", []).append(str(data.path))
            write_json_atomic(folder / STATE, state)
            if mlrun:
                tracking.log_metrics(metrics, step=it)
                if r.log_checkpoints:
                    import mlflow

                    mlflow.log_artifacts(str(trained.checkpoint), f"checkpoints/iter-{it:03d}")
            log.info(
                f"[{r.name}] round {it}: {score_text(metrics)}"
                + (f", agrees with the expert on {metrics['expert_agreement']:.0%} of its turns" if relabel else "")
                + f", kept {data.episodes} episodes ({data.examples} turns), "
                f"rollout {rollout_s:.0f} s, sft {update_s:.0f} s"
            )
        if mlrun:
            import mlflow

            mlflow.set_tag("checkpoint", str(state.get("checkpoint") or start))
            tracking.log_json(state, "rl_state.json")
    return _result(folder, state, start)


def round_filter(base: FilterConfig, r: RoundsConfig) -> FilterConfig:
    """The filter a round exports with. rft: the best `rl.keep` episodes and their replies, on top of `base`.
    dagger: every turn that has an expert label, whatever the episode did (the filter's episode criteria, e.g.
    ALFWorld's success_only for teacher data, would throw away exactly the states DAgger is for), but not the
    labels `base.exclude_actions` drops (ALFWorld's `look`, which its expert plays wherever it is lost)."""
    from crafter_exp.config import FilterConfig

    if r.name == "dagger":
        return FilterConfig(
            format=base.format,
            target="expert",
            drop_unparsed=False,
            exclude_actions=list(base.exclude_actions),
            seed=base.seed,
        )
    rft = cast("RFTConfig", r)
    return dataclasses.replace(
        base,
        runs=[],
        stats_only=False,
        output=None,
        limit=rft.keep,
        sort_by=rft.sort_by,
        min_achievements=rft.min_achievements,
    )


def expert_agreement(store: Any, run_ids: list[str]) -> float:
    """Share of the round's labelled turns where the student played what the expert would have (DAgger's own
    measure of how far the student is from the expert on the student's states), from the episodes' counters."""
    value = store.query(
        "SELECT sum(expert_agreed)::DOUBLE / nullif(sum(expert_turns), 0) AS a FROM episodes "
        "WHERE list_contains($1::VARCHAR[], run_id)",
        [run_ids],
    ).a.iloc[0]
    return float(value) if value == value and value is not None else float("nan")


def start_data_runs(cfg: Config, manifest: dict[str, Any]) -> list[str]:
    """The trace runs the start checkpoint was trained on (its dataset's `source_runs`) that this store holds and
    that carry expert labels; [] when the checkpoint names no dataset of ours (a hub model, synthetic data)."""
    from crafter_exp.store.traces import TraceStore

    runs = paths.dataset_source_runs(manifest)
    if not runs:
        return []
    labelled = TraceStore(cfg.paths.db).query(
        "SELECT run_id, count(expert_action) AS n FROM steps WHERE list_contains($1::VARCHAR[], run_id) GROUP BY 1",
        [runs],
    )
    with_labels = set(labelled.run_id[labelled.n > 0])
    keep = [run for run in runs if run in with_labels]
    if len(keep) < len(runs):
        log.warning(
            "[dagger] %d of the start checkpoint's %d trace runs carry no expert labels (played before the store "
            "recorded them, or elsewhere): trained on without them",
            len(runs) - len(keep),
            len(runs),
        )
    return keep
