"""ALFWorld (text household tasks) as a `TextEnv`; the `alfworld` package is an optional extra, imported lazily."""

from crafter_exp.envs.alfworld.env import AlfworldTextEnv, also_held_out_configs, check_config, held_out_config
from crafter_exp.envs.alfworld.text import ACHIEVEMENTS, INSTRUCTIONS, TASK_TYPES

__all__ = [
    "AlfworldTextEnv",
    "ACHIEVEMENTS",
    "INSTRUCTIONS",
    "TASK_TYPES",
    "check_config",
    "held_out_config",
    "also_held_out_configs",
]
