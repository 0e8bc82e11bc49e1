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

Modules, one idea each: `checks` (config checks before any work), `models` (what is fine-tuned), `batches` (dataset,
reply weights, collator), `loss`, `sampler`, `schedule`, `trainer` (the SFTTrainer subclass), `callbacks`, `resume`,
`outcome` (result + saving), `run` (`train_sft`, the steps in order). The stage uses the names re-exported here.
"""

from crafter_exp.training.sft.checks import check_local_trainer, is_tiny
from crafter_exp.training.sft.outcome import SFTOutcome, save_outcome
from crafter_exp.training.sft.run import train_sft

__all__ = ["SFTOutcome", "check_local_trainer", "is_tiny", "save_outcome", "train_sft"]
