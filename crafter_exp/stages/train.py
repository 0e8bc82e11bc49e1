"""Train stage: fine-tune on the filter stage's dataset and write a checkpoint folder the hf_local policy plays.

`trainer=tiny` (default, offline), `local_lora`, `local_qlora`, `local_full` run `crafter_exp.training.sft`;
`trainer=openai` runs a hosted fine-tuning job (`crafter_exp.training.openai_jobs`).

Inputs and outputs, by default found by experiment name:
- dataset: `trainer.dataset`, else `<paths.datasets>/<name>/` (the folder with manifest.json, or its newest
  subfolder with one);
- checkpoint: `trainer.output_dir`, else `<paths.checkpoints>/<name>/`, holding the weights (or adapter) +
  tokenizer, `untrained/` (the tiny student before training, for before/after comparisons) and `manifest.json`,
  written last: {kind, base_model, untrained, dataset_digest, prompt, env, trainer, metrics, config_hash, ...}.
A rerun whose output folder already has a manifest with the same config hash (trainer settings + dataset digest)
returns it without training (`trainer.retrain=true` forces training).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from crafter_exp import tracking
from crafter_exp.files import write_json_atomic

MANIFEST = "manifest.json"
# trainer settings that do not change the trained weights (a rerun differing only in these resumes)
NOT_IN_HASH = frozenset({"output_dir", "dataset", "retrain", "progress", "logging_steps"})


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
            raise ValueError(f"{self.checkpoint}/{MANIFEST} records no untrained model")
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


def latest_complete(folder: Path) -> Optional[Path]:
    """`folder` when it holds manifest.json, else its newest subfolder that does (None when neither)."""
    if (folder / MANIFEST).is_file():
        return folder
    if not folder.is_dir():
        return None
    subs = [p for p in folder.iterdir() if p.is_dir() and (p / MANIFEST).is_file()]
    return max(subs, key=lambda p: (p / MANIFEST).stat().st_mtime) if subs else None


def resolve_dataset(cfg: Any, dataset_path: Optional[str | Path]) -> Path:
    if dataset_path is not None:
        return Path(dataset_path)
    if cfg.trainer.dataset:
        return Path(cfg.trainer.dataset)
    default = Path(cfg.paths.datasets) / cfg.name
    found = latest_complete(default)
    if found is None:
        raise FileNotFoundError(
            f"no dataset at {default} (run stage=filter name={cfg.name} first, or set trainer.dataset=<path>)"
        )
    return found


def resolve_output(cfg: Any, output_dir: Optional[str | Path]) -> Path:
    if output_dir is not None:
        return Path(output_dir)
    if cfg.trainer.output_dir:
        return Path(cfg.trainer.output_dir)
    return Path(cfg.paths.checkpoints) / cfg.name


def _publish(staged: Path, out: Path) -> None:
    """Move a finished checkpoint from `staged` into `out` (manifest written afterwards, by the caller).

    An existing `out` first loses its manifest (so it reads as incomplete), then its previous checkpoint files;
    nested folders that are complete outputs of their own (a manifest inside) are left alone.
    """
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(out)
        return
    (out / MANIFEST).unlink(missing_ok=True)
    for entry in out.iterdir():
        if entry.is_dir() and (entry / MANIFEST).is_file() and not (staged / entry.name).exists():
            continue
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for entry in staged.iterdir():
        entry.rename(out / entry.name)
    staged.rmdir()


# ------------------------------------------------------------------------------------------------ checks


def check_trainer_config(cfg: Any) -> None:
    """Trainer settings that can be checked before any work (the pipeline calls this before its rollout)."""
    tcfg = cfg.trainer
    if tcfg.name == "openai":
        from crafter_exp.stages.train_openai import check_openai_trainer_config

        check_openai_trainer_config(tcfg)
        return
    from crafter_exp.training.sft import check_local_trainer

    check_local_trainer(tcfg)


def train_config_hash(tcfg: Any, dataset_digest: str) -> str:
    tree = {k: v for k, v in dataclasses.asdict(tcfg).items() if k not in NOT_IN_HASH}
    return tracking.config_hash({"trainer": tree, "dataset": dataset_digest})


# ------------------------------------------------------------------------------------------------ entry points


def train(cfg: Any, dataset_path: Optional[str | Path] = None, output_dir: Optional[str | Path] = None) -> TrainResult:
    """Fine-tune per `cfg.trainer` on the dataset; returns the checkpoint folder, metrics and MLflow run id."""
    if cfg.trainer.name == "openai":
        return _train_openai(cfg, dataset_path, output_dir)
    return _train_local(cfg, dataset_path, output_dir)


def _train_openai(cfg: Any, dataset_path: Optional[str | Path], output_dir: Optional[str | Path]) -> Any:
    """trainer=openai: a hosted fine-tuning job (crafter_exp/stages/train_openai.py; same result interface)."""
    from crafter_exp.stages.train_openai import train_openai

    return train_openai(cfg, Path(dataset_path) if dataset_path else None, Path(output_dir) if output_dir else None)


def _train_local(cfg: Any, dataset_path: Optional[str | Path], output_dir: Optional[str | Path]) -> TrainResult:
    from crafter_exp.training import data as data_mod
    from crafter_exp.training import sft

    tcfg = cfg.trainer
    # every check that needs no data or model, then the data: all before any training work
    check_trainer_config(cfg)
    dataset = resolve_dataset(cfg, dataset_path)
    data = data_mod.load_sft_data(dataset)
    out = resolve_output(cfg, output_dir)
    chash = train_config_hash(tcfg, data.digest)

    existing = out / MANIFEST
    if existing.is_file() and not tcfg.retrain:
        manifest = json.loads(existing.read_text())
        if manifest.get("config_hash") == chash:
            print(f"[train] {out} already holds this checkpoint (config {chash}); skipping (trainer.retrain=true to redo)")
            return TrainResult(out, manifest.get("metrics", {}), manifest.get("mlflow_run_id"), manifest, skipped=True)

    staged = out.parent / f".{out.name}.staging-{os.getpid()}"
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    # intermediate checkpoints, named by the training's hash and kept when interrupted: a rerun resumes from them
    workdir = out.parent / f".{out.name}.trainer-{chash}"
    if tcfg.retrain:
        shutil.rmtree(workdir, ignore_errors=True)
    label = "tiny" if sft.is_tiny(tcfg) else Path(str(tcfg.model)).name
    run_config = {"name": cfg.name, "dataset": str(dataset), "dataset_digest": data.digest,
                  "trainer": dataclasses.asdict(tcfg)}
    tags = {"name": cfg.name, "trainer": tcfg.name, "model": str(tcfg.model), "method": tcfg.method}
    try:
        with tracking.stage_run(cfg.tracking, "train", f"train-{label}-{tcfg.method}", run_config, tags) as mlrun:
            mlflow_run_id = mlrun.info.run_id if mlrun else None
            if mlrun:
                _log_dataset(data, dataset)
            started = time.time()
            outcome = sft.train_sft(
                tcfg, data, workdir,
                log_fn=(lambda m, step: tracking.log_metrics(m, step=step)) if mlrun else None,
                progress=bool(tcfg.progress),
            )
            saved = sft.save_outcome(outcome, staged, merge_adapter=bool(tcfg.merge_adapter))
            # how hf_local decodes this checkpoint unless told otherwise: temperature (None = greedy), and no
            # reply longer than the longest the model was trained on (an untrained model rambles to the limit)
            play = {"temperature": tcfg.play_temperature, "max_new_tokens": outcome.metrics["max_reply_tokens"]}
            untrained = _save_untrained(outcome, staged, data.prompt, saved, play)
            _publish(staged, out)
            manifest = {
                **saved,
                "untrained": untrained,
                "play": play,
                "dataset_digest": data.digest,
                "dataset_path": str(Path(dataset).resolve()),
                "prompt": data.prompt,
                "env": data.manifest.get("env"),
                "trainer": dataclasses.asdict(tcfg),
                "metrics": outcome.metrics,
                "config_hash": chash,
                "mlflow_run_id": mlflow_run_id,
                "created_at": started,
            }
            write_json_atomic(out / MANIFEST, manifest)
            shutil.rmtree(workdir, ignore_errors=True)  # the checkpoint is complete: nothing left to resume
            if mlrun:
                import mlflow

                tracking.log_metrics({k: v for k, v in outcome.metrics.items() if not k.startswith("eval_")})
                tracking.log_metrics({f"final_{k}": v for k, v in outcome.metrics.items() if k.startswith("eval_")})
                mlflow.set_tag("checkpoint", str(out.resolve()))
                tracking.log_json(manifest, "checkpoint_manifest.json")
                tracking.log_json(outcome.curve, "loss_curve.json")
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return TrainResult(out, outcome.metrics, mlflow_run_id, manifest)


def _save_untrained(outcome: Any, staged: Path, prompt: Optional[dict[str, Any]], saved: dict[str, Any],
                    play: dict[str, Any]) -> Optional[str]:
    """What `policy_before` plays: the tiny student's initial weights, or the pretrained base model."""
    if outcome.kind == "adapter":
        return saved["base_model"]  # a tiny base was saved as base_model/; a hub base is its id or path
    if outcome.untrained_model is None:
        return outcome.base_model
    untrained = staged / "untrained"
    outcome.untrained_model.save_pretrained(str(untrained))
    outcome.tokenizer.save_pretrained(str(untrained))
    write_json_atomic(untrained / MANIFEST, {"kind": "full", "base_model": "tiny", "untrained": True, "prompt": prompt,
                                              "play": play})
    return "untrained"


def _log_dataset(data: Any, dataset: Path) -> None:
    """Register the dataset as the run's input, under the filter stage's digest (a sample of rows as its table)."""
    import pandas as pd

    rows = [{"messages": json.dumps(ex.messages)} for ex in data.train[:1000]]
    tracking.log_dataframe_input(pd.DataFrame(rows), name=f"sft-{data.digest[:12]}",
                                 source=str(Path(dataset).resolve()), context="training", digest=data.digest[:36])
    tracking.log_metrics({"dataset_examples": len(data.train) + len(data.eval)})


def run(cfg: Any) -> Any:
    """stage=train."""
    result = train(cfg)
    if isinstance(result, TrainResult):
        m = result.metrics
        print(f"checkpoint: {result.checkpoint}" + (" (already complete: skipped)" if result.skipped else ""))
        for key in ("train_loss", "eval_loss", "eval_reply_accuracy", "trained_tokens", "tokens_per_s", "train_time_s",
                    "steps", "epochs", "peak_memory_mb"):
            if key in m and isinstance(m[key], (int, float)):
                print(f"  {key}: {m[key]:.4g}")
    return result


__all__ = ["TrainResult", "train", "run", "check_trainer_config", "latest_complete"]
