"""Environment registry: `make_env(cfg)` builds the environment named by `cfg.name`."""

from __future__ import annotations

from typing import Any

from crafter_exp.envs.base import Observation, StepResult, TextEnv

__all__ = ["Observation", "StepResult", "TextEnv", "make_env", "check_env_config", "env_achievements", "env_instructions"]


def make_env(cfg: Any) -> TextEnv:
    """Build the environment for an `env` config (a dataclass from `crafter_exp.config`)."""
    if cfg.name == "crafter":
        from crafter_exp.envs.crafter import CrafterTextEnv

        return CrafterTextEnv(cfg)
    if cfg.name == "alfworld":
        from crafter_exp.envs.alfworld import AlfworldTextEnv

        return AlfworldTextEnv(cfg)
    raise ValueError(f"unknown env {cfg.name!r} (known: crafter, alfworld)")


def check_env_config(cfg: Any) -> None:
    """Validate an env config before any work starts (raises ValueError with one clear line)."""
    if cfg.episodes < 0:
        raise ValueError(f"env.episodes must be >= 0, got {cfg.episodes}")
    if cfg.max_steps <= 0:
        raise ValueError(f"env.max_steps must be > 0, got {cfg.max_steps}")
    if cfg.name == "crafter":
        from crafter_exp.envs.crafter import check_config

        check_config(cfg)
    elif cfg.name == "alfworld":
        from crafter_exp.envs.alfworld import check_config

        check_config(cfg)
    else:
        raise ValueError(f"unknown env {cfg.name!r} (known: crafter, alfworld)")


def env_achievements(name: str) -> tuple[str, ...]:
    """The achievement names an environment reports, without building one."""
    if name == "crafter":
        from crafter_exp.envs.crafter import ACHIEVEMENTS

        return ACHIEVEMENTS
    if name == "alfworld":
        from crafter_exp.envs.alfworld import ACHIEVEMENTS

        return ACHIEVEMENTS
    raise ValueError(f"unknown env {name!r}")


def env_instructions(name: str) -> str:
    """The rules text an environment puts in system prompts, without building one (used by the SFT export)."""
    if name == "crafter":
        from crafter_exp.envs.crafter import INSTRUCTIONS

        return INSTRUCTIONS
    if name == "alfworld":
        from crafter_exp.envs.alfworld import INSTRUCTIONS

        return INSTRUCTIONS
    raise ValueError(f"unknown env {name!r}")
