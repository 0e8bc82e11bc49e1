"""What can be checked in a local trainer config before any data or model is loaded; one clear line each."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from crafter_exp.errors import UserError
from crafter_exp.training import tiny

if TYPE_CHECKING:
    from crafter_exp.config import LocalTrainerConfig

METHODS = ("lora", "qlora", "full")
LOSS_ON = ("assistant", "all", "weighted")


def is_tiny(tcfg: LocalTrainerConfig) -> bool:
    return str(tcfg.model) == "tiny"


def check_local_trainer(tcfg: LocalTrainerConfig) -> None:
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
        raise UserError(
            f"trainer.model {name!r} is not a local folder and could not be loaded from the hub: {first}"
        ) from None
    return name
