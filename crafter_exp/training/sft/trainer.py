"""`RoleSFTTrainer`: TRL's SFTTrainer with the role loss, the progress schedule and cheap reply metrics."""

from __future__ import annotations

import time
from typing import Any, Optional

import torch

from crafter_exp.training.sft.loss import role_loss
from crafter_exp.training.sft.sampler import ShuffledLengthBatches
from crafter_exp.training.sft.schedule import OWN_SCHEDULES, ProgressClock, lr_factor


def trainer_class() -> type:
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
