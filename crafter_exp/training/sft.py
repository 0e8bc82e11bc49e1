"""Supervised fine-tuning with TRL's SFTTrainer (+ PEFT): one code path for the tiny student and for hub models.

Only the model source differs: `trainer.model: tiny` builds a student from a config and trains its tokenizer on the
dataset (`tiny.py`); anything else is a hub id or a local folder loaded with AutoModelForCausalLM. Then the same
steps run: tokenize with per-token roles (`data.py`), wrap in LoRA / QLoRA when asked, train with `RoleSFTTrainer`.

What `RoleSFTTrainer` adds to TRL's trainer, and why:
- the loss setting `loss_on`: `assistant` (mean over reply tokens), `all` (mean over every token), `weighted`
  (mean over reply tokens + prompt_weight x mean over prompt tokens). A randomly initialised student needs the
  prompt term to learn to read observations (feasibility run: assistant-only stayed below random).
  Replies with `"weight": 0` (context: history windows, multi-turn turns not kept) get no loss in any mode.
- a time budget (`max_time_s`): training stops when it runs out, and the learning-rate schedule runs on
  progress = max(step / planned steps, elapsed / budget), so warm-up and cosine decay complete inside the budget.
- cheap metrics: reply-token accuracy and whole-reply exact match (no entropy over the vocabulary each step).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import resource
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from crafter_exp.errors import UserError
from crafter_exp.training import data as data_mod
from crafter_exp.training import tiny

LogFn = Callable[[dict[str, float], int], None]
METHODS = ("lora", "qlora", "full")
LOSS_ON = ("assistant", "all", "weighted")
OWN_SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup")


# ------------------------------------------------------------------------------------------------ validation


def is_tiny(tcfg: Any) -> bool:
    return str(tcfg.model) == "tiny"


def check_local_trainer(tcfg: Any) -> None:
    """Everything that can be checked before loading data or models; raises one clear line."""
    if tcfg.method not in METHODS:
        raise UserError(f"trainer.method must be one of {', '.join(METHODS)}, got {tcfg.method!r}")
    if tcfg.loss_on not in LOSS_ON:
        raise UserError(f"trainer.loss_on must be one of {', '.join(LOSS_ON)}, got {tcfg.loss_on!r}")
    if tcfg.loss_on == "weighted" and tcfg.prompt_weight < 0:
        raise UserError(f"trainer.prompt_weight must be >= 0, got {tcfg.prompt_weight}")
    for name in ("per_device_batch", "grad_accum", "max_length"):
        if getattr(tcfg, name) < 1:
            raise UserError(f"trainer.{name} must be >= 1, got {getattr(tcfg, name)}")
    if tcfg.learning_rate <= 0:
        raise UserError(f"trainer.learning_rate must be > 0, got {tcfg.learning_rate}")
    if not 0 <= tcfg.eval_fraction < 1:
        raise UserError(f"trainer.eval_fraction must be in [0, 1), got {tcfg.eval_fraction}")
    if tcfg.reply_balance and tcfg.packing:
        raise UserError("trainer.reply_balance weights whole examples; it cannot be combined with trainer.packing")
    if tcfg.max_time_s is not None and tcfg.max_time_s <= 0:
        raise UserError(f"trainer.max_time_s must be > 0 or null, got {tcfg.max_time_s}")
    if tcfg.method == "qlora":
        # before any work: QLoRA is 4-bit bitsandbytes kernels, CUDA only
        if not torch.cuda.is_available():
            raise UserError("trainer=local_qlora needs a CUDA GPU (none found); use trainer=local_lora on this machine")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UserError("trainer=local_qlora needs the bitsandbytes package: pip install bitsandbytes")
    if is_tiny(tcfg):
        tiny.check_student_config(tcfg.student)
        if tcfg.method == "qlora":
            raise UserError("trainer.method=qlora needs a pretrained model, not the tiny student")
    else:
        resolve_model_source(str(tcfg.model))


def resolve_model_source(name: str) -> str:
    """A local folder (must exist) or a hub id (its config must be loadable); raises one clear line."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"trainer.model folder has no config.json: {path}")
        return str(path)
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep == "\\" and "\\" in name
    if looks_local:
        raise UserError(f"trainer.model path not found: {name}")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)
    except Exception as e:  # offline, unknown repo, gated: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"trainer.model {name!r} is not a local folder and could not be loaded from the hub: {first}")
    return name


# ------------------------------------------------------------------------------------------------ models


def cpu_has_bf16() -> bool:
    """Native bf16 matrix instructions (AVX512-BF16 or AMX): there, bf16 autocast trains the tiny student ~30 %
    faster with the same learning curve (measured here); without them bf16 is emulated and slower."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def use_bf16(tcfg: Any) -> bool:
    """bf16 mixed precision (weights stay fp32 on CPU; autocast runs the matmuls in bf16)."""
    setting = str(tcfg.bf16).lower()
    if setting == "true":
        return True
    if setting == "false":
        return False
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


@dataclass
class BaseModel:
    model: Any
    tokenizer: Any
    label: str
    """What the checkpoint manifest records as base_model (hub id, absolute path, or `tiny`)."""


def load_base(tcfg: Any, train_examples: list[data_mod.Example], seed: int) -> BaseModel:
    """The model and tokenizer to fine-tune: a fresh tiny student, or a hub / local model."""
    if is_tiny(tcfg):
        tokenizer = tiny.train_tokenizer(
            tiny.message_texts(ex.messages for ex in train_examples), tcfg.student.vocab_size
        )
        model = tiny.build_student(tcfg.student, tokenizer, tcfg.max_length, seed)
        return BaseModel(model, tokenizer, "tiny")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model_source(str(tcfg.model))
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # bf16 weights on a GPU; on a CPU fp32 weights under bf16 autocast (the Trainer's bf16 flag)
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if use_bf16(tcfg) and torch.cuda.is_available() else torch.float32}
    if tcfg.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["dtype"] = torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if tcfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=tcfg.gradient_checkpointing)
    label = str(Path(source).resolve()) if Path(source).exists() else source
    return BaseModel(model, tokenizer, label)


def lora_config(tcfg: Any) -> Any:
    from peft import LoraConfig

    targets = list(tcfg.lora_target_modules)
    return LoraConfig(
        r=tcfg.lora_r,
        lora_alpha=tcfg.lora_alpha,
        lora_dropout=tcfg.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )


# ------------------------------------------------------------------------------------------------ batches + loss


class RoleCollator:
    """Right-pads a batch; `roles` is 1 for learned reply tokens, 0 for prompt tokens, 2 for context replies
    (weight 0: no loss), -1 for padding."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids, roles, mask = [], [], []
        for f in features:
            n = len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_id] * (width - n))
            roles.append(list(f["roles"]) + [-1] * (width - n))
            mask.append([1] * n + [0] * (width - n))
        input_ids = torch.tensor(ids, dtype=torch.long)
        attention_mask = torch.tensor(mask, dtype=torch.long)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": input_ids.masked_fill(attention_mask == 0, -100),
            "roles": torch.tensor(roles, dtype=torch.long),
            "weights": torch.tensor([float(f.get("weight", 1.0)) for f in features]),
        }


def reply_weights(tok: data_mod.Tokenized, power: float) -> list[float]:
    """Per-example reply-loss weights (frequency of the exact reply tokens) ^ -power, normalised to mean 1."""
    if power == 0:
        return [1.0] * len(tok.input_ids)
    from collections import Counter

    keys = [tuple(t for t, r in zip(ids, roles) if r == 1) for ids, roles in zip(tok.input_ids, tok.roles)]
    counts = Counter(keys)
    raw = [counts[k] ** -power for k in keys]
    mean = sum(raw) / len(raw)
    return [w / mean for w in raw]


@dataclass
class LossParts:
    loss: torch.Tensor
    assistant_loss: torch.Tensor
    prompt_loss: torch.Tensor
    correct: int
    assistant_tokens: int
    replies_exact: int
    replies: int


def role_loss(logits: torch.Tensor, input_ids: torch.Tensor, roles: torch.Tensor, loss_on: str, prompt_weight: float,
              weights: Optional[torch.Tensor] = None) -> LossParts:
    """Next-token loss split by the role of the predicted token, combined as `loss_on` says; `weights` (one per
    example) scale the reply part."""
    target = input_ids[:, 1:]
    r = roles[:, 1:]
    logits = logits[:, :-1]
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    ce = ce.view_as(target)
    asst = r == 1
    prm = r == 0
    n_a = asst.sum()
    n_p = prm.sum()
    if weights is not None:
        wa = asst * weights.to(ce.dtype)[:, None]
        a_loss = (ce * wa).sum() / wa.sum().clamp(min=1e-9)
    else:
        a_loss = (ce * asst).sum() / n_a.clamp(min=1)
    p_loss = (ce * prm).sum() / n_p.clamp(min=1)
    if loss_on == "assistant":
        loss = a_loss
    elif loss_on == "all":
        loss = (ce * (asst | prm)).sum() / (n_a + n_p).clamp(min=1)
    else:
        loss = a_loss + prompt_weight * p_loss
    with torch.no_grad():
        hit = torch.zeros_like(asst)
        hit[asst] = logits[asst].argmax(-1) == target[asst]
        wrong_in_reply = (asst & ~hit).any(dim=1)
        has_reply = asst.any(dim=1)
        exact = int((has_reply & ~wrong_in_reply).sum())
    return LossParts(
        loss=loss,
        assistant_loss=a_loss.detach(),
        prompt_loss=p_loss.detach(),
        correct=int(hit.sum()),
        assistant_tokens=int(n_a),
        replies_exact=exact,
        replies=int(has_reply.sum()),
    )


class ShuffledLengthBatches(torch.utils.data.Sampler):
    """Indices in batches of similar length, the batches in random order.

    Random batches of Crafter examples are a third padding (lengths 30-85 tokens); sorting each random megabatch of
    `mega` batches by length removes nearly all of it. Unlike transformers' LengthGroupedSampler, the batches are then
    shuffled: its long-to-short runs within each megabatch slowed the student's learning per step here (length
    follows the game's stage, so the order drifted through the game every 50 batches).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, mega: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega = mega
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.mega * self.batch_size
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=self.lengths.__getitem__)
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        full = [b for b in batches if len(b) == self.batch_size]
        partial = [b for b in batches if len(b) < self.batch_size]  # last: the loader's batches stay aligned with ours
        for b in torch.randperm(len(full), generator=g).tolist():
            yield from full[b]
        for b in partial:
            yield from b


# ------------------------------------------------------------------------------------------------ schedule


class ProgressClock:
    """Training progress in [0, 1]: the larger of step progress and time-budget progress."""

    def __init__(self, max_time_s: Optional[float]):
        self.max_time_s = max_time_s
        self.t0: Optional[float] = None
        self.num_steps = 1

    def start(self) -> None:
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return 0.0 if self.t0 is None else time.monotonic() - self.t0

    def progress(self, step: int) -> float:
        p = step / max(self.num_steps, 1)
        if self.max_time_s:
            p = max(p, self.elapsed() / self.max_time_s)
        return min(p, 1.0)


def lr_factor(name: str, progress: float, warmup: float, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at a point of training progress."""
    if name != "constant" and warmup > 0 and progress < warmup:
        return max(progress / warmup, 1e-3)
    if name in ("constant", "constant_with_warmup"):
        return 1.0
    rest = (progress - warmup) / max(1.0 - warmup, 1e-9)
    rest = min(max(rest, 0.0), 1.0)
    if name == "linear":
        decay = 1.0 - rest
    else:
        decay = 0.5 * (1.0 + math.cos(math.pi * rest))
    return min_ratio + (1.0 - min_ratio) * decay


# ------------------------------------------------------------------------------------------------ trainer


def last_complete_checkpoint(workdir: Path) -> Optional[str]:
    """The newest `checkpoint-N` in `workdir` that was saved whole, or None; newer partial ones are deleted.

    transformers writes a checkpoint's weights, optimizer, scheduler and RNG state, then `trainer_state.json`: a
    checkpoint whose trainer state is missing or cut short was interrupted while saving (Ctrl-C, a killed job)."""
    if not workdir.is_dir():
        return None
    found = [(int(p.name.split("-")[1]), p) for p in workdir.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return str(path)
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)
    return None


def _checkpointing_arg(enabled: bool) -> dict[str, bool]:
    """transformers 5 renamed `gradient_checkpointing` to `activation_checkpointing` (the old name warns)."""
    from trl import SFTConfig

    names = {f.name for f in fields(SFTConfig)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def _trainer_class() -> type:
    from trl import SFTTrainer

    class RoleSFTTrainer(SFTTrainer):
        """TRL's SFTTrainer with role-weighted loss, a time-aware schedule and cheap reply metrics."""

        def __init__(self, *args: Any, loss_on: str, prompt_weight: float, clock: ProgressClock,
                     schedule: str, warmup_ratio: float, min_lr_ratio: float, group_by_length: bool, **kwargs: Any):
            self.loss_on = loss_on
            self.group_by_length = group_by_length
            self.prompt_weight = prompt_weight
            self.clock = clock
            self.schedule = schedule
            self.warmup = warmup_ratio
            self.min_lr_ratio = min_lr_ratio
            self.trained_tokens = 0
            self.eval_time_s = 0.0
            self._sums: dict[str, dict[str, float]] = {"train": {}, "eval": {}}
            super().__init__(*args, **kwargs)
            # our loss is a per-micro-batch mean: let Trainer divide it by the accumulation steps
            self.loss_is_scaled_for_ga = False

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            if not self.group_by_length:
                return super()._get_train_sampler(train_dataset)
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return ShuffledLengthBatches(dataset["length"], batch, self.args.seed)

        def _issue_warnings_after_load(self, load_result: Any) -> None:
            # A tied output head (tiny student) is not saved: it *is* the input embedding, which was loaded.
            # transformers reports it as missing when it reloads the best checkpoint; drop that false alarm.
            if not hasattr(load_result, "_replace"):  # not torch's (missing_keys, unexpected_keys) tuple
                return super()._issue_warnings_after_load(load_result)
            params = dict(self.model.named_parameters(remove_duplicate=False))
            missing = set(load_result.missing_keys)
            loaded = {p.data_ptr() for name, p in params.items() if name not in missing}
            really_missing = [k for k in load_result.missing_keys if k not in params or params[k].data_ptr() not in loaded]
            super()._issue_warnings_after_load(load_result._replace(missing_keys=really_missing))

        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if self.schedule not in OWN_SCHEDULES:
                return super().create_scheduler(num_training_steps, optimizer)
            if self.lr_scheduler is None:
                self.clock.num_steps = num_training_steps
                clock, sched, warm, floor = self.clock, self.schedule, self.warmup, self.min_lr_ratio
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                    optimizer or self.optimizer, lambda step: lr_factor(sched, clock.progress(step), warm, floor)
                )
            return self.lr_scheduler

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            mode = "train" if model.training else "eval"
            roles = inputs["roles"]
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            weights = inputs.get("weights") if model.training else None  # eval: the plain reply loss
            parts = role_loss(outputs.logits, inputs["input_ids"], roles, self.loss_on, self.prompt_weight, weights)
            sums = self._sums[mode]
            for key, value in (
                ("assistant_loss", float(parts.assistant_loss) * parts.replies),
                ("prompt_loss", float(parts.prompt_loss) * parts.replies),
                ("n", parts.replies),
                ("correct", parts.correct),
                ("assistant_tokens", parts.assistant_tokens),
                ("exact", parts.replies_exact),
            ):
                sums[key] = sums.get(key, 0.0) + value
            if mode == "train":
                self.trained_tokens += int(inputs["attention_mask"].sum())
            return (parts.loss, outputs) if return_outputs else parts.loss

        def _metrics_from(self, mode: str) -> dict[str, float]:
            s = self._sums[mode]
            n = s.get("n", 0.0)
            if not n:
                return {}
            out = {
                "assistant_loss": s["assistant_loss"] / n,
                "prompt_loss": s["prompt_loss"] / n,
                "reply_token_accuracy": s["correct"] / max(s["assistant_tokens"], 1.0),
                "reply_accuracy": s["exact"] / n,
            }
            self._sums[mode] = {}
            return out

        def log(self, logs: dict[str, float], start_time: Optional[float] = None) -> None:
            mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
            extra = self._metrics_from(mode)
            if mode == "eval":
                extra = {f"eval_{k}": v for k, v in extra.items()}
            else:
                extra["trained_tokens"] = float(self.trained_tokens)
            logs.update(extra)
            # skip TRL's own metric bookkeeping (entropy etc. are not computed here)
            from transformers import Trainer

            Trainer.log(self, logs, start_time)

        def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            t = time.monotonic()
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                self.eval_time_s += time.monotonic() - t

    return RoleSFTTrainer


def _callbacks(clock: ProgressClock, max_time_s: Optional[float], has_eval: bool, log_fn: Optional[LogFn],
               progress: bool, curve: list[dict[str, float]]) -> list[Any]:
    from transformers import TrainerCallback

    from crafter_exp.progress import progress_bar

    class Budget(TrainerCallback):
        """Starts the clock; stops training when the time budget is spent (evaluating + saving that last step)."""

        stopped_by_time = False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            clock.start()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if max_time_s is not None and clock.elapsed() >= max_time_s and not control.should_training_stop:
                control.should_training_stop = True
                Budget.stopped_by_time = True
                if has_eval:
                    control.should_evaluate = True
                    control.should_save = args.save_strategy != "no"

    class Reporter(TrainerCallback):
        """Progress bar (loss, reply accuracy, tokens/s) and the loss curve to MLflow."""

        bar: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if progress:
                self.bar = progress_bar(total=state.max_steps, desc="train", unit="step", dynamic_ncols=True)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args: Any, state: Any, control: Any, logs: Optional[dict[str, Any]] = None, **kw: Any) -> None:
            logs = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if not logs:
                return
            logs["elapsed_s"] = clock.elapsed()
            curve.append({"step": state.global_step, **logs})
            if log_fn is not None:
                log_fn(logs, state.global_step)
            if self.bar is not None and "loss" in logs:
                post = {"loss": f"{logs['loss']:.3f}"}
                if "reply_accuracy" in logs:
                    post["acc"] = f"{logs['reply_accuracy']:.2f}"
                if clock.elapsed() > 0 and "trained_tokens" in logs:
                    post["tok/s"] = f"{logs['trained_tokens'] / clock.elapsed():.0f}"
                self.bar.set_postfix(post, refresh=False)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.close()

    return [Budget(), Reporter()]


# ------------------------------------------------------------------------------------------------ entry


@dataclass
class SFTOutcome:
    model: Any
    """The trained model (a PeftModel for adapters)."""
    tokenizer: Any
    kind: str
    """`full` or `adapter`."""
    base_model: str
    """What the adapter applies to (hub id, path, or `tiny`)."""
    untrained_model: Any = None
    """The tiny student's initial weights (None for pretrained bases: the base itself is the untrained model)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def to_dataset(tok: data_mod.Tokenized, weights: Optional[list[float]] = None) -> Any:
    from datasets import Dataset

    columns = {"input_ids": tok.input_ids, "roles": tok.roles, "length": [len(x) for x in tok.input_ids]}
    if weights is not None:
        columns["weight"] = weights
    return Dataset.from_dict(columns)


def train_sft(
    tcfg: Any,
    data: data_mod.SFTData,
    workdir: Path,
    log_fn: Optional[LogFn] = None,
    progress: Optional[bool] = None,
) -> SFTOutcome:
    """Fine-tune as `tcfg` says on `data`; intermediate checkpoints go to `workdir` (removed by the caller once the
    model is saved). When `workdir` holds a checkpoint of an interrupted run, training resumes from it (the time
    budget `max_time_s` counts this process's training only)."""
    from trl import SFTConfig

    progress = bool(tcfg.progress) if progress is None else progress
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-save "Writing model shards" bars; ours is the training bar

    check_local_trainer(tcfg)
    seed = int(tcfg.seed)
    train_ex, eval_ex = data_mod.split_eval(data, tcfg.eval_fraction, tcfg.eval_max_examples, seed)
    base = load_base(tcfg, train_ex, seed)
    tokenizer = base.tokenizer

    t_tok = time.monotonic()
    train_tok = data_mod.tokenize_examples(tokenizer, train_ex, tcfg.max_length, progress=progress)
    eval_tok = data_mod.tokenize_examples(tokenizer, eval_ex, tcfg.max_length) if eval_ex else None
    if not train_tok.input_ids:
        raise UserError(f"no training example kept a reply token within max_length={tcfg.max_length}")
    if train_tok.truncated:
        print(f"[train] {train_tok.truncated} of {len(train_ex)} examples longer than max_length="
              f"{tcfg.max_length} were truncated ({train_tok.dropped} dropped: no reply token left)")
    if train_tok.split:
        print(f"[train] {train_tok.split} examples became one sequence per learned reply (the chat template renders "
              f"earlier replies differently from the last one)")
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
    callbacks = _callbacks(clock, tcfg.max_time_s, has_eval, log_fn, progress, curve)
    trainer = _trainer_class()(
        model=base.model,
        args=args,
        data_collator=RoleCollator(tokenizer.pad_token_id),
        train_dataset=to_dataset(train_tok, reply_weights(train_tok, float(tcfg.reply_balance)) if not tcfg.packing else None),
        eval_dataset=to_dataset(eval_tok) if has_eval else None,
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


def save_outcome(outcome: SFTOutcome, folder: Path, merge_adapter: bool = False) -> dict[str, Any]:
    """Write weights (or adapter) + tokenizer into `folder`; returns manifest fields describing what was saved."""
    folder.mkdir(parents=True, exist_ok=True)
    outcome.model.save_pretrained(str(folder))
    outcome.tokenizer.save_pretrained(str(folder))
    info: dict[str, Any] = {"kind": outcome.kind, "base_model": outcome.base_model}
    if outcome.kind == "adapter":
        if outcome.untrained_model is not None:
            outcome.untrained_model.save_pretrained(str(folder / "base_model"))
            outcome.tokenizer.save_pretrained(str(folder / "base_model"))
            info["base_model"] = "base_model"  # relative to the checkpoint folder
        if merge_adapter:
            merged = outcome.model.merge_and_unload()
            merged.save_pretrained(str(folder / "merged"))
            outcome.tokenizer.save_pretrained(str(folder / "merged"))
            info["merged"] = "merged"
    return info
