"""The whole loop as one stage: rollout -> filter -> train -> evaluate (several policies, same held-out seeds) -> compare.

One MLflow parent run; every stage is a child run (tracking.stage_run nests under the active run). Each stage
writes where it writes when run alone (crafter_exp/paths.py: outputs named by their identity — the trace run id
by what was played, the dataset folder by the filter and its source runs, the checkpoint folder by the trainer and
its dataset), so a rerun with the same name skips every stage whose output is complete, and sweep jobs that share
a stage (say, the rollout of a LoRA-rank sweep) share its output instead of redoing it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crafter_exp import tracking
from crafter_exp.config import RandomModelConfig
from crafter_exp.envs import also_held_out_env_configs, check_env_config, env_primary_metric
from crafter_exp.errors import UserError
from crafter_exp.stages.evaluate import check_eval_config, evaluate
from crafter_exp.stages.rollout import as_dict, rollout

if TYPE_CHECKING:
    from crafter_exp.config import Config

log = logging.getLogger(__name__)

EVAL_POLICIES = ("random", "teacher", "student_before", "student_after", "student_rl")


@dataclass
class PipelineResult:
    teacher_run: str
    dataset: Path
    checkpoint: Path
    eval_runs: dict[str, str]
    """Policy name -> eval trace run id."""
    also_runs: dict[str, dict[str, Any]]
    """Further held-out set (e.g. valid_unseen) -> policy -> {run_id, metrics} (eval.also_policies there)."""
    compare: Any
    """The compare stage's result (table, significance, report paths)."""
    seconds: float
    verdict: str
    """One line: does the fine-tuned student beat its untrained self and random, and how close is it to the teacher."""

    def job_result(self) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
        """What a sweep job records (crafter_exp/sweep.py `report_job`): the compare table's metrics per policy."""
        return self.compare.metrics_by_label, {
            "eval_runs": self.eval_runs,
            "verdict": self.verdict,
            "seconds": self.seconds,
        }


def check_pipeline_config(cfg: Config) -> None:
    """Everything that can be checked before any episode is played."""
    check_env_config(cfg.env)
    check_eval_config(cfg)
    unknown = [p for p in [*cfg.eval.policies, *cfg.eval.also_policies] if p not in EVAL_POLICIES]
    if unknown:
        raise UserError(f"unknown eval.policies / eval.also_policies {unknown} (known: {', '.join(EVAL_POLICIES)})")
    if "student_rl" in cfg.eval.policies and cfg.pipeline.rl is None:
        raise UserError("eval.policies has student_rl but pipeline.rl is off (set pipeline.rl=grpo)")
    if cfg.pipeline.rl is not None:
        from crafter_exp.stages.rl import check_pipeline_rl

        check_pipeline_rl(cfg)
    from crafter_exp.stages.train import check_trainer_config

    check_trainer_config(cfg)


def pipeline(cfg: Config) -> PipelineResult:
    from crafter_exp.stages.compare import compare
    from crafter_exp.stages.filter import filter_and_export
    from crafter_exp.stages.train import train

    check_pipeline_config(cfg)
    _probe_teacher_endpoint(cfg)
    start = time.perf_counter()
    tags = {"name": cfg.name, "env": cfg.env.name, "trainer": cfg.trainer.name}
    with tracking.stage_run(cfg.tracking, "pipeline", f"pipeline-{cfg.name}", as_dict(cfg), tags):
        teacher = rollout(cfg)
        data = filter_and_export(cfg, runs=[teacher.run_id])
        trained = train(cfg, dataset_path=data.path)
        policies = list(cfg.eval.policies)
        if cfg.pipeline.rl is not None:  # after SFT, RL from its checkpoint (crafter_exp/stages/rl.py)
            from crafter_exp.stages.rl import rl

            improved = rl(cfg, start=trained.checkpoint)
            policies += [] if "student_rl" in policies else ["student_rl"]

        candidates = {
            "random": lambda: RandomModelConfig(label="random"),
            "teacher": lambda: dataclasses.replace(cfg.model, label="teacher"),
            "student_before": lambda: trained.policy_before(),
            "student_after": lambda: trained.policy_after(),
            "student_rl": lambda: improved.policy(),
        }
        eval_runs = {}
        for name in policies:
            eval_runs[name] = evaluate(cfg, candidates[name]()).run_id
        order = [p for p in ("student_before", "random", "student_after", "student_rl", "teacher") if p in eval_runs]
        pairs: list[tuple[str, str]] = [
            (p, "student_after") for p in ("random", "teacher") if p in eval_runs and "student_after" in eval_runs
        ]
        pairs += [
            (p, "student_rl") for p in ("student_after", "teacher") if p in eval_runs and "student_rl" in eval_runs
        ]
        result = compare(cfg, runs=[eval_runs[p] for p in order], labels=order, pairs=pairs)
        metric = env_primary_metric(cfg.env.name)
        also_runs = _also_held_out(cfg, candidates)
        verdict = _verdict(result, metric) + "".join(
            f"; on {where}: " + ", ".join(f"{p} {r['metrics'].get(metric, float('nan')):.3g}" for p, r in runs.items())
            for where, runs in also_runs.items()
        )
        tracking.log_json({"eval_runs": eval_runs, "also_held_out": also_runs, "verdict": verdict}, "pipeline.json")
    seconds = time.perf_counter() - start
    out = PipelineResult(
        teacher.run_id, Path(data.path), Path(trained.checkpoint), eval_runs, also_runs, result, seconds, verdict
    )
    return out


def _probe_teacher_endpoint(cfg: Config) -> None:
    """An API teacher is probed before the pipeline's parent run opens: an unreachable endpoint, a refused key or an
    unknown model is one line with no MLflow run left behind (the rollout probes again, after this one, only when it
    has episodes to play)."""
    if not getattr(cfg.model, "probe", False):
        return
    from crafter_exp.policies import make_policy

    policy = make_policy(cfg.model, cfg.seed)
    try:
        policy.start()
    finally:
        policy.close()


def _also_held_out(cfg: Config, candidates: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """eval.also_policies on the env's further held-out sets (same eval seeds), beside the main comparison: their
    games differ from the main set's, so they get no paired tests against it. Metrics also go to MLflow as
    `<set>/<policy>/<metric>` (the env's declared metrics: the rollout summary is already restricted to them)."""
    out: dict[str, dict[str, Any]] = {}
    for where, env_cfg in also_held_out_env_configs(cfg.env).items():
        for name in cfg.eval.also_policies:
            model_cfg = candidates[name]()
            model_cfg = dataclasses.replace(model_cfg, label=f"{model_cfg.label or name}-{where}")
            played = rollout(
                cfg,
                stage="eval",
                seed_start=cfg.eval.seed,
                episodes=cfg.eval.episodes,
                model_cfg=model_cfg,
                env_cfg=env_cfg,
            )
            out.setdefault(where, {})[name] = {"run_id": played.run_id, "metrics": played.metrics}
            tracking.log_metrics(
                {f"{where}/{name}/{k}": v for k, v in played.metrics.items() if isinstance(v, (int, float))}
            )
    return out


def _verdict(result: Any, metric: str) -> str:
    """One line on the question the pipeline asks: did fine-tuning help, and by how much."""
    if "student_after" not in result.labels:
        return f"{metric}: " + ", ".join(f"{label} {result.value(label, metric):.3g}" for label in result.labels)
    after = result.value("student_after", metric)
    parts = [f"fine-tuned student {metric}={after:.3g}"]
    for other, name in (("student_before", "untrained"), ("random", "random")):
        test = result.test(other, "student_after", metric)
        if test is not None:
            better = "beats" if test["diff"] > 0 and test["p"] < 0.01 else "vs"
            parts.append(f"{better} {name} {result.value(other, metric):.3g} (p={test['p']:.2g})")
    if "teacher" in result.labels:
        teacher = result.value("teacher", metric)
        share = f", {after / teacher:.0%} of the teacher" if teacher else ""
        parts.append(f"teacher {teacher:.3g}{share}")
    test = result.test("student_after", "student_rl", metric) if "student_rl" in result.labels else None
    if test is not None:
        better = "beats" if test["diff"] > 0 and test["p"] < 0.01 else "vs"
        parts.append(f"RL student {result.value('student_rl', metric):.3g} {better} fine-tuned (p={test['p']:.2g})")
    return "; ".join(parts)


def run(cfg: Config) -> PipelineResult:
    """stage=pipeline (the default)."""
    out = pipeline(cfg)
    log.info(out.verdict)
    log.info(f"pipeline {cfg.name} finished in {out.seconds:.0f} s")
    return out


__all__ = ["PipelineResult", "pipeline", "run", "check_pipeline_config"]
