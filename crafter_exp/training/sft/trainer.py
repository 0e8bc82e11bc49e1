"""`RoleSFTTrainer`: TRL's SFTTrainer with the role loss, the progress schedule and cheap reply metrics."""

from __future__ import annotations

import time
from typing import Any, Optional

import torch

from crafter_exp.training.sft.loss import role_loss
from crafter_exp.training.sft.sampler import ShuffledLengthBatches
from crafter_exp.training.sft.schedule import OWN_SCHEDULES, ProgressClock, lr_factor


def forget_tied_missing_keys(model: torch.nn.Module) -> None:
    """A tied output head (the tiny student's) is not saved: it *is* the input embedding. When transformers reloads a
    checkpoint (the best one, or to resume) it reports the head as missing; this drops that false alarm through
    torch's public load_state_dict post-hook (instead of overriding Trainer's private warning method)."""

    def hook(module: torch.nn.Module, incompatible: Any) -> None:
        params = dict(module.named_parameters(remove_duplicate=False))
        missing = set(incompatible.missing_keys)
        loaded = {p.data_ptr() for name, p in params.items() if name not in missing}
        # torch lets the hook edit the reported keys in place
        incompatible.missing_keys[:] = [
            k for k in incompatible.missing_keys if k not in params or params[k].data_ptr() not in loaded
        ]

    model.register_load_state_dict_post_hook(hook)


def trainer_class() -> type:
    from trl import SFTTrainer

    class RoleSFTTrainer(SFTTrainer):
        """TRL's SFTTrainer with role-weighted loss, a time-aware schedule and cheap reply metrics."""

        def __init__(
            self,
            *args: Any,
            loss_on: str,
            prompt_weight: float,
            clock: ProgressClock,
            schedule: str,
            warmup_ratio: float,
            min_lr_ratio: float,
            group_by_length: bool,
            **kwargs: Any,
        ):
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
            # our loss is a per-micro-batch mean: let Trainer divide it by the accumulation steps (a documented
            # Trainer attribute for subclasses that compute their own loss)
            self.loss_is_scaled_for_ga = False
            forget_tied_missing_keys(self.model)

        def get_train_dataloader(self) -> Any:
            # transformers' public hook for the training batches (its sampler hook `_get_train_sampler` is private
            # and changed signature across versions); the loader is built as Trainer builds it, without the
            # worker settings: run.py always loads in the main process (dataloader_num_workers=0)
            if not self.group_by_length:
                return super().get_train_dataloader()
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            loader = torch.utils.data.DataLoader(
                self.train_dataset,
                batch_size=self.args.train_batch_size,
                sampler=ShuffledLengthBatches(self.train_dataset["length"], batch, self.args.seed),
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
                pin_memory=self.args.dataloader_pin_memory,
                drop_last=self.args.dataloader_drop_last,
            )
            return self.accelerator.prepare(loader)

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

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
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
            # TRL adds the metrics its own compute_loss collects; ours replaces it, so TRL has none to add
            super().log(logs, start_time)

        def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            t = time.monotonic()
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                self.eval_time_s += time.monotonic() - t

    return RoleSFTTrainer
