"""The hand-coded Crafter expert (the scripted teacher): memory -> planner -> rules (see `rules`)."""

from crafter_exp.envs.crafter.expert.rules import CrafterExpert

__all__ = ["CrafterExpert"]
