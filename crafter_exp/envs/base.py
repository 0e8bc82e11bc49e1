"""The environment interface: everything past this file sees text in, text out, and plain-data step records.

An environment knows nothing of policies, storage, tracking or Ray. Crafter and ALFWorld implement `TextEnv`;
`make_env` (in `envs/__init__.py`) picks one from the `env` config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from crafter_exp.config import EnvConfig


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


RUN_METRICS: tuple[str, ...] = (
    "invalid_action_rate",
    "parse_failure_rate",
    "repeated_action_rate",
    "expert_agreement",
    "episode_length",
    "tokens_per_episode",
    "cost_per_episode",
)
"""Metrics of how a policy ran rather than what it achieved (valid replies, length, tokens, cost): every env has them."""


class TextEnv(ABC):
    """One episode at a time; `reset(seed)` names the world, independently of earlier resets of this object."""

    name: str = "base"
    achievements: tuple[str, ...] = ()
    """Every achievement this environment can report (used to validate filters and to compute rates)."""
    instructions: str = ""
    """Rules of the game for a system prompt (what the actions do, what scores)."""
    primary_metric: str = "mean_achievements"
    """The metric (crafter_exp.metrics) that says how well a policy plays this environment."""
    metrics: tuple[str, ...] = ()
    """The metrics (names of crafter_exp.metrics, or globs of its per-item families such as `achievement/*`) that
    mean something here, in report order: compare, figures, MLflow and the pipeline's verdict show these only."""
    fallback_action: str = ""
    """Played when a reply holds no valid action ("" = the first valid action)."""
    slow_steps: bool = False
    """A step costs more than a small local model's forward pass (ALFWorld: 0.05-0.09 s): in-process policies then
    play in the rollout's Ray workers by default, so that episodes step in parallel."""
    interchangeable_names: tuple[str, ...] = ()
    """Words naming things whose identity the agent must read from the prompt, not remember (ALFWorld's object
    kinds): training may swap them consistently within an example (`trainer.augment_copies`)."""
    actions_admissible: bool = False
    """True when `Observation.actions` is the game's own list of commands admissible this turn (ALFWorld) rather
    than a fixed action vocabulary (Crafter): a policy able to score candidates then chooses among them by default."""

    def __init__(self, cfg: EnvConfig) -> None:
        """Built from its `env` config section: `cls(cfg)` (crafter_exp.envs.make_env)."""

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
