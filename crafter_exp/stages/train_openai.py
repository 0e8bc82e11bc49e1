"""stage=train with trainer=openai: a fine-tuning job on an OpenAI-compatible service, as one MLflow run.

Called by crafter_exp.stages.train for `trainer.name == "openai"`. Reads the filter stage's chat JSONL (dataset
manifest), runs the job (crafter_exp.training.openai_jobs: upload, create, poll, resume, cancel) and writes
`<output_dir>/manifest.json` last: {kind: "openai", fine_tuned_model, base_url, job_id, identity, ...}, so evaluation
can play `model=openai model.model=<fine_tuned_model>` (plus model.base_url / model.api_key_env for other services).
The output folder is `<paths.checkpoints>/<name>/<identity>/` like a local checkpoint's (crafter_exp/paths.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, cast

from crafter_exp import paths, tracking
from crafter_exp.config import OpenAIModelConfig, OpenAITrainerConfig, PromptConfig
from crafter_exp.errors import UserError
from crafter_exp.training.openai_jobs import (
    FineTuneJobError,
    JobResult,
    api_key,
    file_sha256,
    find_training_file,
    find_validation_file,
    job_request,
    run_openai_job,
)

if TYPE_CHECKING:
    from crafter_exp.config import Config

log = logging.getLogger(__name__)


@dataclass
class OpenAITrainResult:
    checkpoint: Path
    """Folder holding manifest.json (kind openai) and the job state file."""
    job: Optional[JobResult]
    """The job as last seen (None when a complete earlier result was reused without contacting the service)."""
    manifest: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: Optional[str] = None
    skipped: bool = False
    """True when a complete result of the same config and data was already there (no request sent)."""

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.get("metrics") or {})

    @property
    def fine_tuned_model(self) -> Optional[str]:
        return self.manifest.get("fine_tuned_model")

    def _model(self, model: str, label: str) -> OpenAIModelConfig:
        prompt = self.manifest.get("prompt")
        return OpenAIModelConfig(
            model=model,
            label=label,
            base_url=self.manifest.get("base_url"),
            api_key_env=self.manifest.get("api_key_env", "OPENAI_API_KEY"),
            prompt=PromptConfig(**prompt) if prompt else PromptConfig(),
        )

    def policy_before(self) -> OpenAIModelConfig:
        """The base model, with the data's prompt (student_before in the pipeline)."""
        return self._model(self.manifest["base_model"], "base")

    def policy_after(self) -> OpenAIModelConfig:
        """The fine-tuned model (student_after in the pipeline)."""
        return self._model(self.manifest["fine_tuned_model"], "fine-tuned")


def check_openai_trainer_config(tcfg: OpenAITrainerConfig) -> None:
    """What can fail before any work: the key's env variable, the hyperparameters style."""
    api_key(tcfg)
    job_request(tcfg, "<file>")


def trainer_hash(tcfg: OpenAITrainerConfig, dataset_digest: str) -> str:
    """The job's identity: what decides the model that comes out (not how we wait for it), and the data."""
    return paths.identity([paths.identity_tree(tcfg), dataset_digest])


def train_openai(
    cfg: Config, dataset_path: Optional[Path] = None, output_dir: Optional[Path] = None
) -> OpenAITrainResult:
    tcfg = cast("OpenAITrainerConfig", cfg.trainer)  # train() sends only trainer=openai here
    check_openai_trainer_config(tcfg)
    dataset_file, validation_file, dataset_manifest = None, None, {}
    if not tcfg.cancel and tcfg.job_id is None:
        dataset_dir = Path(dataset_path) if dataset_path else paths.find_dataset(cfg)
        dataset_file = find_training_file(dataset_dir)
        validation_file = find_validation_file(dataset_dir) if tcfg.validation_file else None
        if dataset_dir.is_dir():
            dataset_manifest = json.loads((dataset_dir / "manifest.json").read_text())
    elif not output_dir and (found := _dataset_if_any(cfg, dataset_path)) is not None:
        # resume or cancel: the job's folder is named by the data it was made from, so look the data up if it's there
        dataset_manifest = paths.read_manifest(found) or {}
    digest = str(dataset_manifest.get("digest") or (file_sha256(dataset_file)[:16] if dataset_file else ""))
    config_hash = trainer_hash(tcfg, digest)
    output_dir = Path(output_dir) if output_dir else paths.checkpoint_dir(cfg, config_hash)
    folder = paths.OutputFolder(output_dir, config_hash)

    manifest_path = folder.manifest_path
    done = folder.existing(bool(tcfg.retrain)) if not tcfg.cancel and tcfg.job_id is None else None
    if done and done.get("kind") == "openai" and done.get("fine_tuned_model"):
        log.info(f"train: {manifest_path} is complete ({done['fine_tuned_model']}); nothing to do")
        return OpenAITrainResult(output_dir, None, done, done.get("mlflow_run_id"), skipped=True)

    tags = {"name": cfg.name, "trainer": "openai", "base_model": tcfg.base_model}
    run_config = {
        "trainer": dataclasses.asdict(tcfg),
        "dataset": str(dataset_file),
        "dataset_digest": digest,
        "validation_dataset": str(validation_file) if validation_file else None,
    }
    with tracking.stage_run(cfg.tracking, "train", f"train-{cfg.name}-openai", run_config, tags) as mlrun:
        try:
            job = run_openai_job(
                tcfg,
                dataset_file,
                output_dir,
                dataset_format=dataset_manifest.get("format", "openai_chat"),
                validation_file=validation_file,
            )
        except FineTuneJobError as exc:
            if exc.result is not None:
                _log_job(exc.result)
            raise
        _log_job(job)
        if job.status != "succeeded":  # cancel request: nothing to record as a checkpoint
            return OpenAITrainResult(output_dir, job, {}, mlrun.info.run_id if mlrun else None)
        manifest = {
            "kind": "openai",
            "fine_tuned_model": job.fine_tuned_model,
            "base_model": job.base_model or tcfg.base_model,
            "base_url": tcfg.base_url,
            "api_key_env": tcfg.api_key_env,  # the variable's name; the key itself is never written
            "job_id": job.job_id,
            "training_file": job.training_file,
            "validation_file": job.validation_file,
            "validation_dataset": str(validation_file) if validation_file else None,
            "dataset": str(dataset_file) if dataset_file else None,
            "dataset_digest": digest,
            "prompt": dataset_manifest.get("prompt"),
            "trainer": tracking.redact(dataclasses.asdict(tcfg)),
            "hyperparameters": job.hyperparameters,
            "metrics": {
                "trained_tokens": job.trained_tokens,
                "wall_s": job.wall_s,
                "final_train_loss": next(
                    (m.get("train_loss") for m in reversed(job.metrics) if "train_loss" in m), None
                ),
            },
            "mlflow_run_id": mlrun.info.run_id if mlrun else None,
        }
        manifest = folder.finish(manifest)  # last: marks the checkpoint complete
        tracking.log_json(manifest, "checkpoint_manifest.json")
        log.info(
            f"train: play it with model=openai model.model={job.fine_tuned_model}"
            + (f" model.base_url={tcfg.base_url}" if tcfg.base_url else "")
        )
        return OpenAITrainResult(output_dir, job, manifest, mlrun.info.run_id if mlrun else None)


def _dataset_if_any(cfg: Config, dataset_path: Optional[Path]) -> Optional[Path]:
    try:
        return Path(dataset_path) if dataset_path else paths.find_dataset(cfg)
    except UserError:
        return None


def _log_job(job: JobResult) -> None:
    """Job id, status and model as tags; trained tokens, wall time and the service's loss curve as metrics."""
    if tracking.active_run_id() is None:
        return
    import mlflow

    mlflow.set_tags(
        {
            k: str(v)
            for k, v in (("job_id", job.job_id), ("job_status", job.status), ("fine_tuned_model", job.fine_tuned_model))
            if v
        }
    )
    tracking.log_metrics({"trained_tokens": job.trained_tokens, "job_wall_s": job.wall_s})
    for point in job.metrics:
        step = point.get("step")
        tracking.log_metrics(
            {k: v for k, v in point.items() if k not in ("step", "total_steps")},
            step=step if isinstance(step, int) else None,
        )
    if job.error:
        mlflow.set_tag("job_error", job.error[:5000])
