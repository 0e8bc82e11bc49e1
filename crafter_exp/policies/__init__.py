"""Policy registry: `make_policy(model_cfg, seed)` builds the policy named by `model_cfg.name`."""

from __future__ import annotations

from typing import Any

from crafter_exp.errors import UserError
from crafter_exp.policies.base import Decision, LLMCall, Policy, Turn

__all__ = ["Decision", "LLMCall", "Policy", "Turn", "make_policy", "model_label", "model_provider"]


def make_policy(cfg: Any, seed: int = 0) -> Policy:
    """Build the policy for a `model` config (a dataclass from `crafter_exp.config`)."""
    if cfg.name == "scripted":
        from crafter_exp.policies.scripted import ScriptedPolicy

        return ScriptedPolicy(cfg, seed)
    if cfg.name == "random":
        from crafter_exp.policies.scripted import RandomPolicy

        return RandomPolicy(cfg, seed)
    if cfg.name == "openai":
        from crafter_exp.policies.openai_policy import OpenAIPolicy

        return OpenAIPolicy(cfg, seed)
    if cfg.name == "hf_local":
        from crafter_exp.policies.hf_local import HFLocalPolicy

        return HFLocalPolicy(cfg, seed)
    raise UserError(f"unknown model {cfg.name!r} (known: scripted, random, openai, hf_local)")


def model_label(cfg: Any) -> str:
    """The name traces and reports show for a model config (its `label`, else derived from its settings)."""
    if cfg.label:
        return cfg.label
    if cfg.name == "scripted":
        return f"scripted-eps{cfg.epsilon:g}"
    if cfg.name == "openai":
        return str(cfg.model).replace("/", "_")
    if cfg.name == "hf_local":
        from pathlib import Path

        return Path(cfg.path).name if cfg.path else "student"
    return cfg.name


def model_provider(cfg: Any) -> str:
    """Provider label stored with traces (filterable)."""
    return getattr(cfg, "provider", None) or "local"
