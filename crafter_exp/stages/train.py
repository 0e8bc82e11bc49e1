"""Train stage: fine-tune on the filter stage's dataset and write a checkpoint folder the hf_local policy plays.

`trainer=tiny` (default, offline), `local_lora`, `local_qlora`, `local_full` run `crafter_exp.training.sft`;
`trainer=openai` runs a hosted fine-tuning job (`crafter_exp.training.openai_jobs`).

Inputs and outputs, by default found by experiment name (crafter_exp/paths.py, the same alone or in the pipeline):
- dataset: `trainer.dataset`, else the newest complete dataset under `<paths.datasets>/<name>/`;
- checkpoint: `trainer.output_dir`, else `<paths.checkpoints>/<name>/<identity>/`, holding the weights (or adapter)
  + tokenizer, `untrained/` (the tiny student before training, for before/after comparisons) and `manifest.json`,
  written last: {kind, base_model, untrained, dataset_digest, prompt, env, trainer, metrics, identity, ...}.
The identity hashes the trainer's result-changing settings and the dataset digest: a rerun whose output already
holds it complete returns it without training (`trainer.retrain=true` forces training).

The stage computes, then reports: `plan` checks the settings and reads the data (writes nothing), `fit` trains
(only its resumable work folder is written), `checkpoint_manifest` describes the result; `_report` saves the
checkpoint folder (manifest last) and logs to MLflow; `run` prints `summary_lines` (the `crafter_exp` logger).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, cast

from crafter_exp import paths, tracking
from crafter_exp.envs import env_interchangeable_names
from crafter_exp.errors import UserError
from crafter_exp.files import write_json_atomic
from crafter_exp.registry import Registry

if TYPE_CHECKING:
    from crafter_exp.config import Config, LocalTrainerConfig, TrainerConfig

MANIFEST = paths.MANIFEST
log = logging.getLogger(__name__)

# the metrics `stage=train` prints (when present and numeric)
SUMMARY_METRICS = (
    "train_loss",
    "eval_loss",
    "eval_reply_accuracy",
    "trained_tokens",
    "tokens_per_s",
    "train_time_s",
    "steps",
    "epochs",
    "peak_memory_mb",
)


@dataclass
class TrainResult:
    checkpoint: Path
    """The checkpoint folder (its manifest.json describes it)."""
    metrics: dict[str, Any]
    mlflow_run_id: Optional[str]
    manifest: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    """True when a complete checkpoint of the same config and data was already there."""

    def policy_after(self, **overrides: Any) -> Any:
        """A `model=hf_local` config that plays the trained checkpoint."""
        from crafter_exp.config import HFLocalModelConfig

        kw = {"label": "student_after", "path": str(self.checkpoint), **overrides}
        return HFLocalModelConfig(**kw)

    def policy_before(self, **overrides: Any) -> Any:
        """A `model=hf_local` config that plays the same model before training (same tokenizer and prompt)."""
        from crafter_exp.config import HFLocalModelConfig, PromptConfig

        untrained = self.manifest.get("untrained")
        if untrained is None:
            raise UserError(f"{self.checkpoint}/{MANIFEST} records no untrained model")
        path = self.checkpoint / untrained if (self.checkpoint / untrained).exists() else Path(untrained)
        prompt = self.manifest.get("prompt")
        play = self.manifest.get("play") or {}
        temperature, max_new = play.get("temperature"), play.get("max_new_tokens")
        kw = {
            "label": "student_before",
            "max_new_tokens": max_new,
            "path": str(path) if path.exists() else untrained,
            "prompt": PromptConfig(**prompt) if prompt else None,
            # decoded like the trained checkpoint (a pretrained base has no manifest of ours to say so)
            "do_sample": temperature is not None,
            "temperature": temperature,
            **overrides,
        }
        return HFLocalModelConfig(**kw)


# ------------------------------------------------------------------------------------------------ paths


def resolve_dataset(cfg: Config, dataset_path: Optional[str | Path]) -> Path:
    return Path(dataset_path) if dataset_path is not None else paths.find_dataset(cfg)


def resolve_output(cfg: Config, output_dir: Optional[str | Path], ident: str) -> Path:
    return Path(output_dir) if output_dir is not None else paths.checkpoint_dir(cfg, ident)


# ------------------------------------------------------------------------------------------------ checks


# trainer name -> its check(tcfg) and its train(cfg, dataset_path, output_dir); every name but `openai` (tiny,
# local_lora, local_qlora, local_full, or a conf/trainer option of one's own) trains locally
TRAINER_CHECKS: Registry[Callable[[Any], None]] = Registry(
    "trainer",
    {
        "openai": "crafter_exp.stages.train_openai:check_openai_trainer_config",
        "local": "crafter_exp.training.sft:check_local_trainer",
    },
    default="local",
)
TRAINERS: Registry[Callable[[Any, Optional[str | Path], Optional[str | Path]], Any]] = Registry(
    "trainer",
    {"openai": "crafter_exp.stages.train:_train_openai", "local": "crafter_exp.stages.train:_train_local"},
    default="local",
)


def check_trainer_config(cfg: Config) -> None:
    """Trainer settings that can be checked before any work (the pipeline calls this before its rollout)."""
    TRAINER_CHECKS.get(cfg.trainer.name)(cfg.trainer)


def train_config_hash(tcfg: TrainerConfig, dataset_digest: str) -> str:
    """The checkpoint's identity: the trainer's result-changing settings and the data."""
    return paths.identity({"trainer": paths.identity_tree(tcfg), "dataset": dataset_digest})


# ------------------------------------------------------------------------------------------------ entry points


def train(
    cfg: Config, dataset_path: Optional[str | Path] = None, output_dir: Optional[str | Path] = None
) -> TrainResult:
    """Fine-tune per `cfg.trainer` on the dataset; returns the checkpoint folder, metrics and MLflow run id."""
    return TRAINERS.get(cfg.trainer.name)(cfg, dataset_path, output_dir)


def _train_openai(cfg: Config, dataset_path: Optional[str | Path], output_dir: Optional[str | Path]) -> Any:
    """trainer=openai: a hosted fine-tuning job (crafter_exp/stages/train_openai.py; same result interface)."""
    from crafter_exp.stages.train_openai import train_openai

    return train_openai(cfg, Path(dataset_path) if dataset_path else None, Path(output_dir) if output_dir else None)


@dataclass
class TrainPlan:
    """What a local training will do, known before any work: `plan`'s result."""

    dataset: Path
    """The dataset folder or file."""
    data: Any
    """The loaded examples (crafter_exp.training.data.SFTData)."""
    identity: str
    """The checkpoint's identity (trainer settings + dataset digest)."""
    folder: paths.OutputFolder
    """The checkpoint folder (and its resumable work folder)."""
    swap_names: tuple[str, ...] = ()
    """The names trainer.augment_copies swaps in training copies (swap_names)."""


def plan(cfg: Config, dataset_path: Optional[str | Path] = None, output_dir: Optional[str | Path] = None) -> TrainPlan:
    """Every check that needs no model, the data, the identity and the output folder: writes nothing."""
    from crafter_exp.training import data as data_mod

    # every check that needs no data or model, then the data: all before any training work
    check_trainer_config(cfg)
    dataset = resolve_dataset(cfg, dataset_path)
    data = data_mod.load_sft_data(dataset)
    swap = swap_names(cfg, data)
    chash = train_config_hash(cfg.trainer, data.digest)
    out = resolve_output(cfg, output_dir, chash)
    return TrainPlan(dataset, data, chash, paths.OutputFolder(out, chash), swap)


def swap_names(cfg: Config, data: Any) -> tuple[str, ...]:
    """The names trainer.augment_copies swaps: those of the environment the data was played in (its manifest's,
    else the config's); copies asked for where the environment declares none are an error."""
    copies = int(getattr(cfg.trainer, "augment_copies", 0) or 0)
    if copies < 0:
        raise UserError(f"trainer.augment_copies must be >= 0, got {copies}")
    if not copies:
        return ()
    env = str(data.manifest.get("env") or cfg.env.name)
    names = env_interchangeable_names(env)
    if not names:
        raise UserError(
            f"trainer.augment_copies={copies}: environment {env!r} declares no interchangeable names to swap "
            f"(set trainer.augment_copies=0)"
        )
    return names


def fit(tcfg: LocalTrainerConfig, data: Any, workdir: Path, log_fn: Any = None, swap: tuple[str, ...] = ()) -> Any:
    """Train per `tcfg` on `data` (crafter_exp.training.sft.SFTOutcome: the model in memory, metrics, loss curve).
    Writes only intermediate checkpoints to `workdir`, from which a rerun resumes. `swap`: swap_names()."""
    from crafter_exp.training import sft

    return sft.train_sft(tcfg, data, workdir, log_fn=log_fn, progress=bool(tcfg.progress), swap_names=swap)


def checkpoint_manifest(
    tcfg: TrainerConfig,
    p: TrainPlan,
    outcome: Any,
    saved: dict[str, Any],
    untrained: Optional[str],
    play: dict[str, Any],
    mlflow_run_id: Optional[str],
    started: float,
) -> dict[str, Any]:
    """The checkpoint folder's manifest.json (its identity is added when it is written)."""
    return {
        **saved,
        "untrained": untrained,
        "play": play,
        "dataset_digest": p.data.digest,
        "dataset_path": str(Path(p.dataset).resolve()),
        "prompt": p.data.prompt,
        "env": p.data.manifest.get("env"),
        "trainer": dataclasses.asdict(tcfg),
        "metrics": outcome.metrics,
        "mlflow_run_id": mlflow_run_id,
        "created_at": started,
    }


def play_settings(tcfg: LocalTrainerConfig, outcome: Any) -> dict[str, Any]:
    """How hf_local decodes this checkpoint unless told otherwise: temperature (None = greedy), and no reply longer
    than the longest the model was trained on (an untrained model rambles to the limit)."""
    return {"temperature": tcfg.play_temperature, "max_new_tokens": outcome.metrics["max_reply_tokens"]}


def _train_local(cfg: Config, dataset_path: Optional[str | Path], output_dir: Optional[str | Path]) -> TrainResult:
    from crafter_exp.training import sft

    tcfg = cast("LocalTrainerConfig", cfg.trainer)  # every trainer but `openai` is a local one (train())
    p = plan(cfg, dataset_path, output_dir)
    folder, out = p.folder, p.folder.path

    manifest = folder.existing(bool(tcfg.retrain))
    if manifest:
        log.info(
            "[train] %s already holds this checkpoint (identity %s); skipping (trainer.retrain=true to redo)",
            out,
            p.identity,
        )
        return TrainResult(out, manifest.get("metrics", {}), manifest.get("mlflow_run_id"), manifest, skipped=True)

    # intermediate checkpoints, named by the training's identity and kept when interrupted: a rerun resumes from them
    workdir = folder.work
    if tcfg.retrain:
        shutil.rmtree(workdir, ignore_errors=True)
    label = "tiny" if sft.is_tiny(tcfg) else Path(str(tcfg.model)).name
    run_config = {
        "name": cfg.name,
        "dataset": str(p.dataset),
        "dataset_digest": p.data.digest,
        "trainer": dataclasses.asdict(tcfg),
    }
    tags = {"name": cfg.name, "trainer": tcfg.name, "model": str(tcfg.model), "method": tcfg.method}
    with folder.staging() as staged:
        with tracking.stage_run(cfg.tracking, "train", f"train-{label}-{tcfg.method}", run_config, tags) as mlrun:
            mlflow_run_id = mlrun.info.run_id if mlrun else None
            if mlrun:
                _log_dataset(p.data, p.dataset)
            started = time.time()
            outcome = fit(
                tcfg,
                p.data,
                workdir,
                log_fn=(lambda m, step: tracking.log_metrics(m, step=step)) if mlrun else None,
                swap=p.swap_names,
            )
            manifest = _report(tcfg, p, outcome, staged, mlflow_run_id, started)
            shutil.rmtree(workdir, ignore_errors=True)  # the checkpoint is complete: nothing left to resume
    return TrainResult(out, outcome.metrics, mlflow_run_id, manifest)


def _report(
    tcfg: LocalTrainerConfig, p: TrainPlan, outcome: Any, staged: Path, mlflow_run_id: Optional[str], started: float
) -> dict[str, Any]:
    """Save the trained model into the staging folder, publish it, write the manifest last, log to MLflow (inside
    the stage's run when `mlflow_run_id`)."""
    from crafter_exp.training import sft

    saved = sft.save_outcome(outcome, staged, merge_adapter=bool(tcfg.merge_adapter))
    play = play_settings(tcfg, outcome)
    untrained = _save_untrained(outcome, staged, p.data.prompt, saved, play)
    p.folder.publish(staged)
    manifest = p.folder.finish(checkpoint_manifest(tcfg, p, outcome, saved, untrained, play, mlflow_run_id, started))
    if mlflow_run_id:
        import mlflow

        tracking.log_metrics({k: v for k, v in outcome.metrics.items() if not k.startswith("eval_")})
        tracking.log_metrics({f"final_{k}": v for k, v in outcome.metrics.items() if k.startswith("eval_")})
        mlflow.set_tag("checkpoint", str(p.folder.path.resolve()))
        tracking.log_json(manifest, "checkpoint_manifest.json")
        tracking.log_json(outcome.curve, "loss_curve.json")
    return manifest


def _save_untrained(
    outcome: Any, staged: Path, prompt: Optional[dict[str, Any]], saved: dict[str, Any], play: dict[str, Any]
) -> Optional[str]:
    """What `policy_before` plays: the tiny student's initial weights, or the pretrained base model."""
    if outcome.kind == "adapter":
        return saved["base_model"]  # a tiny base was saved as base_model/; a hub base is its id or path
    if outcome.untrained_model is None:
        return outcome.base_model
    untrained = staged / "untrained"
    outcome.untrained_model.save_pretrained(str(untrained))
    outcome.tokenizer.save_pretrained(str(untrained))
    write_json_atomic(
        untrained / MANIFEST, {"kind": "full", "base_model": "tiny", "untrained": True, "prompt": prompt, "play": play}
    )
    return "untrained"


def _log_dataset(data: Any, dataset: Path) -> None:
    """Register the dataset as the run's input, under the filter stage's digest (a sample of rows as its table)."""
    import pandas as pd

    rows = [{"messages": json.dumps(ex.messages)} for ex in data.train[:1000]]
    tracking.log_dataframe_input(
        pd.DataFrame(rows),
        name=f"sft-{data.digest[:12]}",
        source=str(Path(dataset).resolve()),
        context="training",
        digest=data.digest[:36],
    )
    tracking.log_metrics({"dataset_examples": len(data.train) + len(data.eval)})


def run(cfg: Config) -> Any:
    """stage=train."""
    result = train(cfg)
    if isinstance(result, TrainResult):
        for line in summary_lines(result):
            log.info("%s", line)
    return result


def summary_lines(result: TrainResult) -> list[str]:
    """What `stage=train` prints: the checkpoint and its headline metrics."""
    m = result.metrics
    lines = [f"checkpoint: {result.checkpoint}" + (" (already complete: skipped)" if result.skipped else "")]
    lines += [f"  {key}: {m[key]:.4g}" for key in SUMMARY_METRICS if key in m and isinstance(m[key], (int, float))]
    return lines


__all__ = [
    "TrainResult",
    "TrainPlan",
    "train",
    "plan",
    "fit",
    "checkpoint_manifest",
    "summary_lines",
    "run",
    "check_trainer_config",
]
