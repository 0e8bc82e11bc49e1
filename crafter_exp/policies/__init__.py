"""Policy registry: `make_policy(model_cfg, seed)` builds the policy named by `model_cfg.name`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from crafter_exp.policies.base import Decision, LLMCall, Policy, Turn
from crafter_exp.registry import Registry

if TYPE_CHECKING:
    from crafter_exp.config import HFLocalModelConfig, ModelConfig, OpenAIModelConfig, ScriptedModelConfig

__all__ = ["Decision", "LLMCall", "Policy", "POLICIES", "Turn", "make_policy", "model_label", "model_provider"]

# model name -> "module:Policy subclass", built as cls(model_cfg, seed); imported lazily (torch, openai)
POLICIES: Registry[Callable[..., Policy]] = Registry(
    "model",
    {
        "scripted": "crafter_exp.policies.scripted:ScriptedPolicy",
        "random": "crafter_exp.policies.scripted:RandomPolicy",
        "openai": "crafter_exp.policies.openai_policy:OpenAIPolicy",
        "hf_local": "crafter_exp.policies.hf_local:HFLocalPolicy",
    },
)


def make_policy(cfg: ModelConfig, seed: int = 0) -> Policy:
    """Build the policy for a `model` config (a dataclass from `crafter_exp.config`)."""
    return POLICIES.get(cfg.name)(cfg, seed)


def model_label(cfg: ModelConfig) -> str:
    """The name traces and reports show for a model config (its `label`, else derived from its settings)."""
    if cfg.label:
        return cfg.label
    if cfg.name == "scripted":
        return f"scripted-eps{cast('ScriptedModelConfig', cfg).epsilon:g}"
    if cfg.name == "openai":
        return str(cast("OpenAIModelConfig", cfg).model).replace("/", "_")
    if cfg.name == "hf_local":
        from pathlib import Path

        path = cast("HFLocalModelConfig", cfg).path
        return Path(path).name if path else "student"
    return cfg.name


def model_provider(cfg: ModelConfig) -> str:
    """Provider label stored with traces (filterable)."""
    return getattr(cfg, "provider", None) or "local"
