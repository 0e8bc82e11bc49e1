"""Environment registry: every environment is a module exposing a `TextEnv` subclass and `check_config(cfg)`.

Stages ask this registry (never a specific environment) for what they need: an instance, its achievements, its
rules text, the metric that says how well a policy plays it.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from crafter_exp.envs.base import Observation, StepResult, TextEnv, prediction_f1
from crafter_exp.errors import UserError
from crafter_exp.registry import Registry

if TYPE_CHECKING:
    from crafter_exp.config import EnvConfig

__all__ = [
    "Observation",
    "StepResult",
    "TextEnv",
    "ENVIRONMENTS",
    "env_class",
    "make_env",
    "check_env_config",
    "env_achievements",
    "env_instructions",
    "env_has_expert",
    "env_primary_metric",
    "held_out_env_config",
    "prediction_f1",
    "env_actions_admissible",
    "env_metrics",
    "env_interchangeable_names",
    "env_slow_steps",
    "also_held_out_env_configs",
]

# env name -> "package:TextEnv subclass"; the package also exposes `check_config(cfg)` and, optionally,
# `held_out_config(cfg)` / `also_held_out_configs(cfg)`. Imported lazily (ALFWorld is an optional extra).
ENVIRONMENTS: Registry[type[TextEnv]] = Registry(
    "env",
    {
        "crafter": "crafter_exp.envs.crafter:CrafterTextEnv",
        "alfworld": "crafter_exp.envs.alfworld:AlfworldTextEnv",
    },
)


def _module(name: str) -> ModuleType:
    return ENVIRONMENTS.module(name)


def env_class(name: str) -> type[TextEnv]:
    """The TextEnv subclass registered as `name`."""
    return ENVIRONMENTS.get(name)


def make_env(cfg: EnvConfig) -> TextEnv:
    """Build the environment for an `env` config (a dataclass from `crafter_exp.config`)."""
    return env_class(cfg.name)(cfg)


def check_env_config(cfg: EnvConfig) -> None:
    """Validate an env config before any work starts (raises ValueError with one clear line)."""
    if cfg.episodes < 0:
        raise UserError(f"env.episodes must be >= 0, got {cfg.episodes}")
    if cfg.max_steps <= 0:
        raise UserError(f"env.max_steps must be > 0, got {cfg.max_steps}")
    if cfg.seed < 0:  # seeds name worlds from 0; the held-out range (eval.seed) lies above the training range
        raise UserError(f"env.seed must be >= 0, got {cfg.seed}")
    _module(cfg.name).check_config(cfg)


def env_achievements(name: str) -> tuple[str, ...]:
    """Every achievement an environment reports (validates filters, defines per-achievement rates)."""
    return tuple(env_class(name).achievements)


def env_instructions(name: str) -> str:
    """The rules text an environment puts in system prompts (the SFT export rebuilds prompts with it)."""
    return env_class(name).instructions


def env_primary_metric(name: str) -> str:
    """The metric that says how well a policy plays this environment (pipeline verdicts, sweep summaries)."""
    return env_class(name).primary_metric


def env_metrics(name: str) -> tuple[str, ...]:
    """The metrics an environment declares (names and family globs, report order): the only ones stages show."""
    return tuple(env_class(name).metrics)


def env_interchangeable_names(name: str) -> tuple[str, ...]:
    """The words training may swap consistently within an example (TextEnv.interchangeable_names)."""
    return tuple(env_class(name).interchangeable_names)


def env_slow_steps(name: str) -> bool:
    """Whether a step costs more than a small model's forward (in-process policies then play in Ray workers)."""
    return bool(env_class(name).slow_steps)


def env_has_expert(name: str) -> bool:
    """Whether the environment has a hand-coded expert (`TextEnv.expert_action` overridden): scripted teachers and
    DAgger's labels need one."""
    return env_class(name).expert_action is not TextEnv.expert_action


def also_held_out_env_configs(cfg: EnvConfig) -> dict[str, EnvConfig]:
    """Further held-out sets an env offers besides `held_out_env_config` (ALFWorld: valid_unseen), by name."""
    more = getattr(_module(cfg.name), "also_held_out_configs", None)
    return more(cfg) if more else {}


def env_actions_admissible(name: str) -> bool:
    """Whether an environment's observations list this turn's admissible commands (policies then rank them)."""
    return bool(env_class(name).actions_admissible)


def held_out_env_config(cfg: EnvConfig) -> EnvConfig:
    """The env config for held-out evaluation: `cfg` itself where new seeds are new worlds (Crafter); an env whose
    worlds are a finite set (ALFWorld's games) swaps in its evaluation set via its module's `held_out_config`."""
    held_out = getattr(_module(cfg.name), "held_out_config", None)
    return held_out(cfg) if held_out else cfg
