"""Crafter as a text environment (work in progress: `view.local_view` is final; the env lands next)."""

from crafter_exp.envs.crafter.view import local_view

__all__ = ["local_view"]
