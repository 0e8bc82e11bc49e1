"""Crafter as a text environment: stock worlds and dynamics, reproducible across processes, fast, with
difficulty presets (see `difficulty.py` for the table) and compact/full text observations (`text.py`)."""

from crafter_exp.envs.crafter.actions import ACHIEVEMENTS, ACTIONS, canonical_action
from crafter_exp.envs.crafter.env import CrafterTextEnv, check_config
from crafter_exp.envs.crafter.text import INSTRUCTIONS
from crafter_exp.envs.crafter.view import local_view

__all__ = [
    "ACHIEVEMENTS",
    "ACTIONS",
    "INSTRUCTIONS",
    "CrafterTextEnv",
    "canonical_action",
    "check_config",
    "local_view",
]
