"""The environment interface: everything past this file sees text in, text out, and plain-data step records.

An environment knows nothing of policies, storage, tracking or Ray. Crafter and ALFWorld implement `TextEnv`;
`make_env` (in `envs/__init__.py`) picks one from the `env` config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class Observation:
    """What a text agent sees at one turn."""

    text: str
    """The observation as text (what goes in the prompt)."""
    actions: list[str]
    """Action names valid now (Crafter: the 17 names; ALFWorld: this turn's admissible commands)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Plain data for traces (inventory, vitals, position, task, ...); stored as JSON, never parsed for acting."""


@dataclass
class StepResult:
    """The outcome of one environment step."""

    observation: Observation
    reward: float
    done: bool
    valid: bool = True
    """False when the action was not admissible (counted as invalid; Crafter: never, unknown names are noop)."""
    unlocked: list[str] = field(default_factory=list)
    """Achievements unlocked by this step (first time in the episode)."""
    termination: Optional[str] = None
    """When done: why (`done` = the game ended it, `success`, `death`, `max_steps`, `length`, ...)."""


class TextEnv(ABC):
    """One episode at a time; `reset(seed)` names the world, independently of earlier resets of this object."""

    name: str = "base"
    achievements: tuple[str, ...] = ()
    """Every achievement this environment can report (used to validate filters and to compute rates)."""
    instructions: str = ""
    """Rules of the game for a system prompt (what the actions do, what scores)."""
    primary_metric: str = "mean_achievements"
    """The metric (crafter_exp.metrics) that says how well a policy plays this environment."""
    fallback_action: str = ""
    """Played when a reply holds no valid action ("" = the first valid action)."""

    @abstractmethod
    def reset(self, seed: int) -> Observation:
        """Start the episode named by `seed` (the same seed gives the same episode, in any process)."""

    @abstractmethod
    def step(self, action: str) -> StepResult:
        """Apply one action returned by `canonical_action`. One the game does not admit now (ALFWorld's commands are
        free text) leaves the state unchanged and comes back with `valid=False`."""

    @abstractmethod
    def canonical_action(self, text: str) -> Optional[str]:
        """Map a candidate action string (any case, aliases) to a valid action name, or None."""

    def expert_action(self) -> Optional[str]:
        """The environment's own hand-coded expert's next action (None where there is no expert)."""
        return None

    def episode_info(self) -> dict[str, Any]:
        """Episode-level facts for the trace store once done: `success` (bool|None), `task_type` (str|None)."""
        return {"success": None, "task_type": None}

    def state_change(self, before: Observation, after: Observation, unlocked: list[str]) -> Optional[dict[str, int]]:
        """What changed over one turn, as {quantity: signed amount} (only nonzero ones; {} = nothing changed), the
        truth world-model predictions are scored against (`prediction_f1`). None = this environment does not score
        predictions (the default: they are stored as text only)."""
        return None

    def prediction_quantity(self, name: str) -> Optional[str]:
        """The quantity of `state_change` a name in a prediction means (lower case, `_` for spaces), or None."""
        return None

    def close(self) -> None:
        """Release resources."""


def prediction_f1(predicted: dict[str, int], actual: dict[str, int]) -> float:
    """F1 of a turn's predicted changes against the actual ones, both {quantity: signed amount}.

    A predicted change is right when the same quantity changed by exactly that amount (`wood +1` vs `wood +2` is
    wrong). F1 = 2 * right / (predicted + actual); a correct prediction of no change ({} vs {}) scores 1.
    """
    if not predicted and not actual:
        return 1.0
    right = sum(1 for name, amount in predicted.items() if actual.get(name) == amount)
    return 2.0 * right / (len(predicted) + len(actual))
