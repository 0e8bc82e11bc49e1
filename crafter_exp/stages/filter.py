"""Filter stage: select traces with SQL over the trace store and export an SFT dataset; also `stage=validate`.

`filter_and_export(cfg)` is the whole stage as a plain function (tests, the pipeline); `run(cfg)` is the CLI
(`stage=filter`, or `filter.stats_only=true` to print the stats table and write nothing); `validate_run(cfg)`
checks a JSONL file or a dataset folder (`stage=validate`).

The stage computes, then reports: `prepare` + `select` read the store and return what would be exported (the
episodes, their turns, the stats) without writing anything; `_report` writes the dataset folder's manifest and
the MLflow run; `run` says what happened (the `crafter_exp` logger).

Output: `<paths.datasets>/<name>/<identity>/` (or filter.output; see crafter_exp/paths.py) with the data files and
`manifest.json`, written last: {format, files, examples, episodes, digest, source_runs, env, prompt, identity, ...}.
The identity is a hash of the filter's result-changing fields, the source runs with their episode counts and the
prompt: a rerun whose output already holds it complete is skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pandas as pd

from crafter_exp import paths, tracking
from crafter_exp.config import PromptConfig
from crafter_exp.envs import env_achievements, env_instructions
from crafter_exp.errors import UserError
from crafter_exp.export import ExportPlan, Layout, conversation_layout, derive_layout, prompt_config, write_dataset
from crafter_exp.export.layout import system_override
from crafter_exp.filtering import (
    FilterStats,
    check_filter_config,
    compute_stats,
    count_steps,
    episode_criteria,
    format_stats,
    resolve_runs,
    select_episodes,
)
from crafter_exp.filtering.select import (
    ReadSession,
    SourceRun,
    choose_episodes,
    episode_frame,
    large_frees_to_os,
    split_episodes,
)
from crafter_exp.store.traces import TraceStore

if TYPE_CHECKING:
    from crafter_exp.config import Config, FilterConfig

MANIFEST = paths.MANIFEST
log = logging.getLogger(__name__)


class EmptySelectionError(UserError):
    """Nothing passes the filter: no dataset is written (the CLI prints the line and exits with 2)."""


@dataclass
class FilterResult:
    path: Path
    """The dataset folder."""
    digest: str
    """Content hash of the data files (also the MLflow dataset digest)."""
    format: str
    examples: int
    episodes: int
    files: list[str]
    manifest: dict[str, Any]
    stats: Optional[FilterStats] = None
    mlflow_run_id: Optional[str] = None
    skipped: bool = False
    """True when an up-to-date dataset was already there."""
    seconds: float = 0.0


@dataclass
class _Context:
    store: TraceStore
    db: Any
    """A ReadSession on the store (one connection for the whole stage, reopened every few seconds)."""
    sources: list[SourceRun]
    env: str
    achievements: tuple[str, ...]
    prompt: PromptConfig
    layout: Layout
    filter_hash: str


def _as_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _prompt_of(sources: Sequence[SourceRun]) -> PromptConfig:
    prompts_seen = {}
    for s in sources:
        p = prompt_config(s.config)
        prompts_seen[s.run_id] = p
    known = {json.dumps(_as_dict(p), sort_keys=True) for p in prompts_seen.values() if p is not None}
    if len(known) > 1:
        raise UserError(
            "source runs were played with different model.prompt settings; filter them separately ("
            + "; ".join(f"{r}: {_as_dict(p)}" for r, p in prompts_seen.items())
            + ")"
        )
    if not known:
        log.warning("the source runs recorded no model.prompt; exporting with the default prompt")
        return PromptConfig()
    return next(p for p in prompts_seen.values() if p is not None)


def _filter_hash(fcfg: FilterConfig, sources: Sequence[SourceRun], prompt: PromptConfig) -> str:
    basis = {
        "filter": paths.identity_tree(fcfg),
        "sources": [[s.run_id, s.episodes] for s in sources],
        "prompt": _as_dict(prompt),
    }
    return paths.identity(basis)


def prepare(cfg: Config, runs: Optional[Sequence[str]] = None, db: Optional[ReadSession] = None) -> _Context:
    """Resolve source runs, check the filter against their env, read the prompt layout. Raises ValueError /
    FileNotFoundError with one line before any work. `db`: a read session to reuse (else the store is opened per
    query)."""
    fcfg = cfg.filter
    check_filter_config(fcfg)
    store = TraceStore(cfg.paths.db)
    db = db if db is not None else store
    sources = resolve_runs(db, cfg.name, list(runs) if runs else list(fcfg.runs))
    env = sources[0].env
    achievements = tuple(env_achievements(env))
    check_filter_config(fcfg, achievements)
    prompt = _prompt_of(sources)
    if not fcfg.keep_predictions and prompt.template == "world_model":
        # replies without their <prediction> answer the standard template's prompt: export (and later play) with it
        prompt = dataclasses.replace(prompt, template="standard")
    instructions = env_instructions(env)
    override = system_override(prompt, instructions, fcfg.system_prompt, fcfg.system_prompt_mode)
    layout = (conversation_layout if fcfg.multi_turn else derive_layout)(prompt, instructions, override)
    return _Context(store, db, sources, env, achievements, prompt, layout, _filter_hash(fcfg, sources, prompt))


# ----------------------------------------------------------------------------------------------------- stats


def stats(
    cfg: Config,
    runs: Optional[Sequence[str]] = None,
    ctx: Optional[_Context] = None,
    with_steps: bool = True,
    selected: Optional[pd.DataFrame] = None,
) -> FilterStats:
    """The stats table's figures (reads only). `selected`: select_episodes' result when already at hand."""
    if ctx is None:
        with ReadSession(TraceStore(cfg.paths.db), cfg.filter.memory_limit) as db:
            return stats(cfg, runs, prepare(cfg, runs, db), with_steps, selected)
    fcfg = cfg.filter
    run_ids = [s.run_id for s in ctx.sources]
    frame, criteria = episode_frame(ctx.db, fcfg, run_ids)
    if selected is None:
        selected = select_episodes(ctx.db, fcfg, run_ids)
    st = compute_stats(frame, criteria, selected, ctx.achievements, fcfg.exclude_achievements)
    if with_steps and len(selected):
        counts = count_steps(ctx.db, fcfg, selected)
        st.examples = counts.examples
        st.episodes_with_examples = int((counts.kept > 0).sum())
    elif with_steps:
        st.examples, st.episodes_with_examples = 0, 0
    return st


def _empty_message(cfg: Config, ctx: _Context, st: Optional[FilterStats] = None) -> str:
    st = st or stats(cfg, ctx=ctx, with_steps=False)
    runs = ", ".join(s.run_id for s in ctx.sources)
    alone = "; ".join(f"{k} {v}" for k, v in st.criteria.items()) or "no criteria"
    return (
        f"no example passes the filter: {st.total_episodes} episode(s) in {runs}; passing each criterion "
        f"alone: {alone}; all together: {st.passing_all}; nothing written"
    )


# ---------------------------------------------------------------------------------------------------- export


def output_dir(cfg: Config, output: Optional[str | Path] = None, ctx: Optional[_Context] = None) -> Path:
    """Where this filter writes (`ctx` given), or the dataset `stage=validate` checks: the newest complete one."""
    if output:
        return Path(output)
    if ctx is not None:
        return paths.dataset_dir(cfg, ctx.filter_hash)
    if cfg.filter.output:
        return Path(cfg.filter.output)
    return paths.newest_complete(paths.dataset_root(cfg)) or paths.dataset_root(cfg)


read_manifest = paths.read_manifest


def _plan(cfg: Config, ctx: _Context) -> tuple[ExportPlan, pd.DataFrame]:
    """Selected episodes -> the episodes and turns to write (raises EmptySelectionError when none)."""
    fcfg = cfg.filter
    run_ids = [s.run_id for s in ctx.sources]
    selected = select_episodes(ctx.db, fcfg, run_ids)
    if selected.empty:
        raise EmptySelectionError(_empty_message(cfg, ctx))
    if not (fcfg.multi_turn or fcfg.max_examples is not None or fcfg.format == "parquet"):
        # one example per kept turn, every episode's turns written as they come: no need to count them first
        # (an episode keeping none writes nothing; nothing kept at all is caught after writing, before publishing)
        selected["kept"] = -1
        selected["last_kept"] = selected["turns"] - 1
        selected["split"] = np.where(split_episodes(len(selected), val_fraction(fcfg), fcfg.seed), "val", "train")
        return ExportPlan(ctx.db, fcfg, selected, ctx.layout, None, data_source=f"crafter_exp/{ctx.env}"), selected
    per_turn_subset = fcfg.max_examples if not fcfg.multi_turn else None
    counts = count_steps(ctx.db, fcfg, selected, subset=per_turn_subset)
    selected["kept"] = counts.kept
    selected["last_kept"] = counts.last_kept
    keep = counts.kept > 0
    if counts.subset is not None:
        chosen = np.zeros(len(selected), dtype=bool)
        chosen[counts.subset["ep_order"].unique()] = True
        keep &= chosen
    episodes = selected[keep].copy()
    if episodes.empty:
        raise EmptySelectionError(_no_turn_message(fcfg, len(selected)))
    if fcfg.multi_turn and fcfg.max_examples is not None and fcfg.max_examples < len(episodes):
        episodes = episodes[choose_episodes(episodes, fcfg.max_examples, fcfg.seed)].copy()
    # re-number the export order densely; carry the chosen turns along
    remap = np.full(len(selected), -1, dtype=np.int64)
    remap[episodes["ep_order"].to_numpy()] = np.arange(len(episodes))
    episodes["ep_order"] = np.arange(len(episodes), dtype=np.int64)
    subset = None
    if counts.subset is not None:
        subset = counts.subset.assign(ep_order=remap[counts.subset["ep_order"].to_numpy()])
        subset = subset[subset["ep_order"] >= 0].reset_index(drop=True)
    is_val = split_episodes(len(episodes), val_fraction(fcfg), fcfg.seed)
    episodes["split"] = np.where(is_val, "val", "train")
    episodes = episodes.reset_index(drop=True)
    plan = ExportPlan(ctx.db, fcfg, episodes, ctx.layout, subset, data_source=f"crafter_exp/{ctx.env}")
    return plan, selected


@dataclass
class Selection:
    """What the filter exports, before anything is written: `select`'s result."""

    plan: ExportPlan
    """The episodes (with their split and kept-turn counts) and turns to write."""
    selected: pd.DataFrame
    """Every episode passing the episode criteria (the plan's episodes are those keeping a turn)."""
    stats: FilterStats
    """The stats table's figures for this selection (without step counts)."""

    @property
    def total_steps(self) -> int:
        """Turns of the episodes to export (the progress bar's length)."""
        return int(self.plan.episodes["turns"].sum())


def select(cfg: Config, ctx: _Context) -> Selection:
    """Select episodes and turns and compute their stats: reads the store, writes nothing. Raises
    EmptySelectionError when nothing passes."""
    plan, selected = _plan(cfg, ctx)
    return Selection(plan, selected, stats(cfg, ctx=ctx, with_steps=False, selected=selected))


def val_fraction(fcfg: FilterConfig) -> float:
    """The validation split's share of episodes: filter.val_fraction, by default 0.1 for parquet (the AlfWorld
    workflow's 90/10) and none for JSONL (one train.jsonl, as before validation files existed)."""
    if fcfg.val_fraction is not None:
        return float(fcfg.val_fraction)
    return 0.1 if fcfg.format == "parquet" else 0.0


def _no_turn_message(fcfg: FilterConfig, selected: int) -> str:
    why = [f"step_mode={fcfg.step_mode}"] + (["drop_unparsed"] if fcfg.drop_unparsed else [])
    if fcfg.exclude_actions:
        why.append(f"exclude_actions={list(fcfg.exclude_actions)}")
    if fcfg.target == "expert":  # labels exist only where the rollout asked the expert (a scripted teacher does)
        why.append("target=expert (turns without steps.expert_action: rollout.record_expert=true records it)")
    return f"no turn left: the {selected} selected episode(s) keep no turn with {' and '.join(why)}; nothing written"


def filter_and_export(
    cfg: Config, runs: Optional[Sequence[str]] = None, output: Optional[str | Path] = None, progress: bool = True
) -> FilterResult:
    """Select, export, write the manifest last, track in MLflow. Returns where the dataset is and its digest."""
    with large_frees_to_os(), ReadSession(TraceStore(cfg.paths.db), cfg.filter.memory_limit) as db:
        return _filter_and_export(cfg, db, runs, output, progress)


def _filter_and_export(
    cfg: Config, db: ReadSession, runs: Optional[Sequence[str]], output: Optional[str | Path], progress: bool
) -> FilterResult:
    from crafter_exp.progress import progress_bar

    start = time.perf_counter()
    fcfg = cfg.filter
    ctx = prepare(cfg, runs, db)
    out = output_dir(cfg, output, ctx)
    folder = paths.OutputFolder(out, ctx.filter_hash)
    old = read_manifest(out)
    done = folder.existing()
    if done:
        log.info("dataset %s is up to date (identity %s); nothing to do", out, ctx.filter_hash)
        return FilterResult(
            out,
            done["digest"],
            done["format"],
            done["examples"],
            done["episodes"],
            done["files"],
            done,
            mlflow_run_id=done.get("mlflow_run_id"),
            skipped=True,
        )

    chosen = select(cfg, ctx)
    created = not out.exists()
    with progress_bar(
        total=chosen.total_steps, desc=f"filter {cfg.name}", unit="step", disable=not progress, dynamic_ncols=True
    ) as bar:
        written = write_dataset(chosen.plan, out, bar)  # under temporary names: an earlier dataset stays intact
    if written.examples == 0:
        written.discard()
        if created:
            out.rmdir()
        raise EmptySelectionError(_no_turn_message(fcfg, len(chosen.selected)))
    folder.invalidate()  # the folder is incomplete until the new manifest lands
    written.publish(out)
    for stale in set((old or {}).get("files", [])) - set(written.files):
        (out / stale).unlink(missing_ok=True)
    return _report(cfg, ctx, chosen, written, folder, time.perf_counter() - start)


def turns_kept(chosen: Selection, written: Any) -> int:
    """Turns the selection kept before deduplication (counted up front, or what was written plus what dedupe
    dropped when turns were not counted first)."""
    kept = chosen.plan.episodes["kept"]
    return int(kept.sum()) if (kept >= 0).all() else written.examples + written.dedupe_dropped


def dataset_manifest(
    fcfg: FilterConfig, ctx: _Context, written: Any, prompt: dict[str, Any], kept: int, seconds: float
) -> dict[str, Any]:
    """The dataset folder's manifest.json (without its identity and MLflow run id, added when it is written)."""
    return {
        "format": fcfg.format,
        "multi_turn": bool(fcfg.multi_turn),
        "files": written.files,
        "examples": written.examples,
        "episodes": written.episodes,
        "digest": written.digest,
        "source_runs": [s.run_id for s in ctx.sources],
        "env": ctx.env,
        "prompt": prompt,
        "filter": _as_dict(fcfg),
        "splits": written.splits,
        "turns_kept": kept,
        "dedupe_dropped": written.dedupe_dropped,
        "mlflow_run_id": None,
        "created_at": pd.Timestamp.now().isoformat(),
        "seconds": round(seconds, 3),
    }


def _report(
    cfg: Config, ctx: _Context, chosen: Selection, written: Any, folder: paths.OutputFolder, seconds: float
) -> FilterResult:
    """The written dataset's report: the system prompt file, the MLflow run and the manifest, written last."""
    fcfg = cfg.filter
    out = folder.path
    prompt = _as_dict(ctx.prompt)
    if fcfg.system_prompt is not None:
        # the model trained on this data should play with the same system prompt: ship it with the data
        (out / "system_prompt.txt").write_text(ctx.layout.system or "")
        prompt = {**prompt, "system_prompt_file": str((out / "system_prompt.txt").resolve())}
    kept = turns_kept(chosen, written)
    manifest = dataset_manifest(fcfg, ctx, written, prompt, kept, seconds)
    st = chosen.stats
    # the MLflow run records a finished export (an empty selection leaves no failed run behind)
    source_ids = manifest["source_runs"]
    params = {"filter": _as_dict(fcfg), "source_runs": source_ids, "name": cfg.name}
    tags = {
        "name": cfg.name,
        "env": ctx.env,
        "format": fcfg.format,
        "source_runs": ",".join(source_ids),
        "dataset_digest": written.digest,
    }
    with tracking.stage_run(cfg.tracking, "filter", f"filter-{cfg.name}", params, tags) as mlrun:
        if mlrun:
            manifest["mlflow_run_id"] = mlrun.info.run_id
            index = chosen.plan.episodes[
                ["run_id", "seed", "split", "counted_achievements", "total_reward", "turns", "quality"]
            ].assign(examples=written.per_episode)
            tracking.log_dataframe_input(
                index,
                name=f"{cfg.name}-{fcfg.format}",
                source=str(out.resolve()),
                context="output",
                digest=written.digest,
            )
            tracking.log_metrics(
                {
                    **st.metrics(),
                    "episodes_exported": written.episodes,
                    "examples": written.examples,
                    "turns_kept": kept,
                    "dedupe_dropped": written.dedupe_dropped,
                    "seconds": seconds,
                    "steps_per_s": chosen.total_steps / max(seconds, 1e-9),
                }
            )
        manifest = folder.finish(manifest)
        if mlrun:
            tracking.log_file(out / MANIFEST)
    return FilterResult(
        out,
        written.digest,
        fcfg.format,
        written.examples,
        written.episodes,
        written.files,
        manifest,
        st,
        manifest["mlflow_run_id"],
        seconds=seconds,
    )


# ----------------------------------------------------------------------------------------------------- CLI


def run(cfg: Config) -> Any:
    """stage=filter."""
    if cfg.filter.stats_only:
        st = stats(cfg)
        log.info("%s", format_stats(st))
        return st
    result = filter_and_export(cfg)
    if not result.skipped:
        log.info(
            "wrote %d %s examples from %d episodes to %s (digest %s, %.1f s)",
            result.examples,
            result.format,
            result.episodes,
            result.path,
            result.digest,
            result.seconds,
        )
    return result


def validate_run(cfg: Config) -> Any:
    """stage=validate: check a JSONL file or a dataset folder; a broken line is an error (exit 2)."""
    from crafter_exp.export.validate import validate_path

    fcfg = cfg.filter
    target = Path(fcfg.validate_path) if fcfg.validate_path else output_dir(cfg)
    report = validate_path(target, fcfg)
    log.info("%s", report.summary())
    if report.errors:
        first = report.errors[0]
        raise UserError(f"{target}: {report.error_count} broken line(s); first: {first}")
    return report


__all__ = [
    "FilterResult",
    "EmptySelectionError",
    "Selection",
    "filter_and_export",
    "select",
    "select_episodes",
    "stats",
    "prepare",
    "dataset_manifest",
    "run",
    "validate_run",
    "output_dir",
    "read_manifest",
    "episode_criteria",
]
