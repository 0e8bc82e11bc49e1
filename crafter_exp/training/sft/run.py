"""`train_sft`: data -> tokens -> model -> trainer -> metrics, the steps every local trainer runs."""

from __future__ import annotations

import copy
import resource
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from crafter_exp.errors import UserError
from crafter_exp.training import data as data_mod
from crafter_exp.training.sft import batches
from crafter_exp.training.sft.callbacks import LogFn, build_callbacks
from crafter_exp.training.sft.checks import check_local_trainer, is_tiny
from crafter_exp.training.sft.models import load_base, lora_config, use_bf16
from crafter_exp.training.sft.outcome import SFTOutcome
from crafter_exp.training.sft.resume import last_complete_checkpoint
from crafter_exp.training.sft.schedule import OWN_SCHEDULES, ProgressClock
from crafter_exp.training.sft.trainer import trainer_class

if TYPE_CHECKING:
    from crafter_exp.config import LocalTrainerConfig


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _checkpointing_arg(enabled: bool) -> dict[str, bool]:
    """transformers 5 renamed `gradient_checkpointing` to `activation_checkpointing` (the old name warns)."""
    from trl import SFTConfig

    names = {f.name for f in fields(SFTConfig)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def train_sft(
    tcfg: LocalTrainerConfig,
    data: data_mod.SFTData,
    workdir: Path,
    log_fn: Optional[LogFn] = None,
    progress: Optional[bool] = None,
    swap_names: Sequence[str] = (),
) -> SFTOutcome:
    """Fine-tune as `tcfg` says on `data`; intermediate checkpoints go to `workdir` (removed by the caller once the
    model is saved). When `workdir` holds a checkpoint of an interrupted run, training resumes from it (the time
    budget `max_time_s` counts this process's training only). `swap_names`: the names `tcfg.augment_copies` swaps
    (the data's environment's interchangeable names)."""
    from trl import SFTConfig

    progress = bool(tcfg.progress) if progress is None else progress
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-save "Writing model shards" bars; ours is the training bar

    check_local_trainer(tcfg)
    seed = int(tcfg.seed)
    train_ex, eval_ex = data_mod.split_eval(data, tcfg.eval_fraction, tcfg.eval_max_examples, seed)
    n_original = len(train_ex)
    train_ex = data_mod.with_swapped_names(train_ex, swap_names, int(tcfg.augment_copies), seed)
    if len(train_ex) > n_original:
        print(f"[train] {len(train_ex) - n_original} name-swapped copies of {n_original} training examples")
    base = load_base(tcfg, train_ex, seed)
    tokenizer = base.tokenizer

    t_tok = time.monotonic()
    train_tok = data_mod.tokenize_examples(tokenizer, train_ex, tcfg.max_length, progress=progress)
    eval_tok = data_mod.tokenize_examples(tokenizer, eval_ex, tcfg.max_length) if eval_ex else None
    if not train_tok.input_ids:
        raise UserError(f"no training example kept a reply token within max_length={tcfg.max_length}")
    if train_tok.truncated:
        print(
            f"[train] {train_tok.truncated} of {len(train_ex)} examples longer than max_length="
            f"{tcfg.max_length} were truncated ({train_tok.dropped} dropped: no reply token left)"
        )
    if train_tok.split:
        print(
            f"[train] {train_tok.split} examples became one sequence per learned reply (the chat template renders "
            f"earlier replies differently from the last one)"
        )
    if tcfg.packing:
        train_tok = data_mod.pack(train_tok, tcfg.max_length, seed)
    tokenize_s = time.monotonic() - t_tok

    peft_config = lora_config(tcfg) if tcfg.method in ("lora", "qlora") else None
    # the tiny student's random init is part of the checkpoint: the base of its adapter, and "student before"
    untrained_model = copy.deepcopy(base.model) if is_tiny(tcfg) else None

    has_eval = eval_tok is not None and bool(eval_tok.input_ids)
    save_best = bool(tcfg.save_best and has_eval)
    bf16 = use_bf16(tcfg)
    args = SFTConfig(
        output_dir=str(workdir),
        num_train_epochs=float(tcfg.epochs),
        max_steps=int(tcfg.max_steps),
        learning_rate=float(tcfg.learning_rate),
        per_device_train_batch_size=int(tcfg.per_device_batch),
        per_device_eval_batch_size=int(tcfg.per_device_batch),
        gradient_accumulation_steps=int(tcfg.grad_accum),
        warmup_steps=0,
        weight_decay=float(tcfg.weight_decay),
        lr_scheduler_type=tcfg.lr_scheduler if tcfg.lr_scheduler not in OWN_SCHEDULES else "constant",
        max_grad_norm=float(tcfg.max_grad_norm),
        max_length=None,
        packing=False,
        bf16=bf16,
        fp16=False,
        **_checkpointing_arg(bool(tcfg.gradient_checkpointing)),
        logging_steps=int(tcfg.logging_steps),
        eval_strategy="steps" if has_eval else "no",
        eval_steps=int(tcfg.eval_steps),
        # a checkpoint with optimizer state every eval_steps: the best one (save_best) and the latest, from which
        # a rerun resumes when this one is interrupted
        save_strategy="steps",
        save_steps=int(tcfg.eval_steps),
        save_total_limit=1,
        save_only_model=False,
        load_best_model_at_end=save_best,
        metric_for_best_model="eval_assistant_loss" if save_best else None,
        greater_is_better=False if save_best else None,
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    clock = ProgressClock(tcfg.max_time_s)
    curve: list[dict[str, float]] = []
    callbacks = build_callbacks(clock, tcfg.max_time_s, has_eval, log_fn, progress, curve)
    trainer = trainer_class()(
        model=base.model,
        args=args,
        data_collator=batches.RoleCollator(tokenizer.pad_token_id),
        train_dataset=batches.to_dataset(
            train_tok, batches.reply_weights(train_tok, float(tcfg.reply_balance)) if not tcfg.packing else None
        ),
        eval_dataset=batches.to_dataset(eval_tok) if has_eval else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
        loss_on=tcfg.loss_on,
        prompt_weight=float(tcfg.prompt_weight),
        clock=clock,
        schedule=tcfg.lr_scheduler,
        warmup_ratio=float(tcfg.warmup_ratio),
        min_lr_ratio=float(tcfg.min_lr_ratio),
        group_by_length=bool(tcfg.group_by_length and not tcfg.packing),
    )
    from transformers import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)

    last = last_complete_checkpoint(workdir)
    if last:
        print(f"[train] resuming from {last} (an earlier run of this training was interrupted)")
    t0 = time.monotonic()
    result = trainer.train(resume_from_checkpoint=last)
    train_wall = time.monotonic() - t0
    final_eval: dict[str, float] = {}
    if has_eval:
        final_eval = trainer.evaluate()
    model = trainer.model
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    train_losses = [c["loss"] for c in curve if "loss" in c]
    metrics: dict[str, Any] = {
        "train_loss": train_losses[-1] if train_losses else float(result.training_loss),
        "train_loss_first": train_losses[0] if train_losses else float("nan"),
        "train_loss_mean": float(result.training_loss),
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "trained_tokens": int(trainer.trained_tokens),
        "tokens_per_s": trainer.trained_tokens / max(train_wall - _eval_time_during_train(trainer, final_eval), 1e-9),
        "train_time_s": train_wall,
        "eval_time_s": trainer.eval_time_s,
        "tokenize_time_s": tokenize_s,
        "stopped_by_time": bool(callbacks[0].stopped_by_time),
        "peak_memory_mb": peak_memory_mb(),
        "params": n_params,
        "trainable_params": n_trainable,
        "train_examples": len(train_tok.input_ids),
        "swapped_copies": len(train_ex) - n_original,
        "eval_examples": len(eval_tok.input_ids) if has_eval else 0,
        "truncated_examples": train_tok.truncated + (eval_tok.truncated if eval_tok else 0),
        "dropped_examples": train_tok.dropped + (eval_tok.dropped if eval_tok else 0),
        "vocab_size": len(tokenizer),
        "mean_tokens_per_example": train_tok.tokens / max(len(train_tok.input_ids), 1),
        "max_reply_tokens": max((r.count(data_mod.REPLY) for r in train_tok.roles), default=0),
        "split_examples": train_tok.split + (eval_tok.split if eval_tok else 0),
    }
    if save_best and trainer.state.best_metric is not None:
        metrics["best_eval_assistant_loss"] = float(trainer.state.best_metric)
        metrics["best_step"] = int(str(trainer.state.best_model_checkpoint).rsplit("-", 1)[-1])
    for key, value in final_eval.items():
        if key.startswith("eval_") and isinstance(value, (int, float)):
            metrics[key] = float(value)
    if train_tok.dropped or (eval_tok and eval_tok.dropped):
        print(f"[train] dropped {metrics['dropped_examples']} examples with no reply token within max_length")
    return SFTOutcome(
        model=model,
        tokenizer=tokenizer,
        kind="adapter" if peft_config is not None else "full",
        base_model=base.label,
        untrained_model=untrained_model,
        metrics=metrics,
        curve=curve,
    )


def _eval_time_during_train(trainer: Any, final_eval: dict[str, float]) -> float:
    # eval_time_s includes the final evaluate() run after train(); only evaluations inside train() count here
    return max(trainer.eval_time_s - float(final_eval.get("eval_runtime", 0.0)), 0.0)
