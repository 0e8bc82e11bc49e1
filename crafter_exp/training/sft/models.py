"""The model to fine-tune: the tiny student or a hub / local model, its precision, and the LoRA config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from crafter_exp.training import data as data_mod
from crafter_exp.training import tiny
from crafter_exp.training.sft.checks import is_tiny, resolve_model_source

if TYPE_CHECKING:
    from crafter_exp.config import LocalTrainerConfig


def cpu_has_bf16() -> bool:
    """Native bf16 matrix instructions (AVX512-BF16 or AMX): there, bf16 autocast trains the tiny student faster with
    the same learning curve (the figure is in conf/trainer/tiny.yaml); without them bf16 is emulated and slower."""
    # torch has no public query for these; its private ones are looked up defensively, so a torch that renames
    # them turns bf16 off (slower, same results) instead of failing
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def use_bf16(tcfg: LocalTrainerConfig) -> bool:
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


def load_base(tcfg: LocalTrainerConfig, train_examples: list[data_mod.Example], seed: int) -> BaseModel:
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
    kwargs: dict[str, Any] = {
        "dtype": torch.bfloat16 if use_bf16(tcfg) and torch.cuda.is_available() else torch.float32
    }
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


def lora_config(tcfg: LocalTrainerConfig) -> Any:
    from peft import LoraConfig

    targets = list(tcfg.lora_target_modules)
    return LoraConfig(
        r=tcfg.lora_r,
        lora_alpha=tcfg.lora_alpha,
        lora_dropout=tcfg.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
