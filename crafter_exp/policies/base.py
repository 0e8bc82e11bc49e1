"""The policy interface: a policy decides for many episodes at once (so LLM policies can batch or overlap calls).

Policies see observation text and action names only; they know nothing of Crafter, storage or Ray.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class Turn:
    """One episode's request for a decision."""

    episode: int
    """Key of the episode (its seed) — stable across the episode, unique within a batch."""
    observation: str
    """Current observation text."""
    actions: list[str]
    """Valid action names now."""
    instructions: str
    """The environment's rules (for a system prompt)."""
    history: list[tuple] = field(default_factory=list)
    """Earlier turns of this episode, oldest first (the policy keeps its own window): (observation, reply) or, from
    the runner, (observation, reply, tool_calls, tool_result) — see `prompts.build_messages`."""
    expert_action: Optional[str] = None
    """The environment's expert suggestion; filled only when the policy sets `needs_expert`."""


@dataclass
class LLMCall:
    """One request to a model, as recorded in the `llm_calls` table."""

    messages: list[dict[str, Any]]
    response: Optional[dict[str, Any]] = None
    """The raw response body (JSON-able), or None when the call failed."""
    reasoning: Optional[str] = None
    tool_calls: Optional[list[dict[str, Any]]] = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    latency_s: float = 0.0
    retries: int = 0
    error: Optional[str] = None
    cost: Optional[float] = None
    """USD; None when the model has no price in the table (unknown, not zero)."""
    model: Optional[str] = None
    """Model name sent (the `llm_calls.model` column)."""


@dataclass
class Decision:
    """A policy's answer for one Turn."""

    reply: str
    """The reply text as produced (stored verbatim; parsed by the rollout with the environment's action names)."""
    tool_calls: Optional[list[dict[str, Any]]] = None
    """Tool calls of the reply, as `[{"name": ..., "arguments": {...}}]`."""
    reasoning: Optional[str] = None
    """Reasoning text (a reasoning model's field or the reply's <think>)."""
    calls: list[LLMCall] = field(default_factory=list)
    """Model requests made for this decision (empty for scripted policies)."""
    error: Optional[str] = None
    """Set when no reply could be had (API failures after retries): the rollout may end the episode `api_error`."""
    finish_reason: Optional[str] = None
    """Why generation stopped, where the model says (`stop`, `tool_calls`, `length` = cut at max_tokens)."""


class Policy(ABC):
    """Decides actions for a batch of turns from different episodes."""

    in_process: bool = False
    """Play in the driver process, not in Ray workers: a policy that batches a forward pass over episodes is its own
    parallelism (CPU workers would only split the cores it uses)."""
    decides_per_turn: bool = False
    """Offers `submit` (one turn, a Future back): the runner then lets each episode move on as soon as its own reply
    arrives instead of waiting for the slowest reply of the batch (API policies)."""
    needs_expert: bool = False
    """Ask the environment for its expert's action each turn (scripted teachers)."""
    model_name: str = "policy"
    """Model label stored with traces."""
    provider: str = "local"
    """Provider label stored with traces."""

    def start(self) -> None:
        """Fail fast before any episode (probe an endpoint, load a checkpoint). Raises with one clear line."""

    def reset(self, episode: int) -> None:
        """A new episode with this key starts (policies with memory clear it)."""

    @abstractmethod
    def act(self, turns: list[Turn]) -> list[Decision]:
        """One decision per turn, in order."""

    def submit(self, turn: Turn) -> Future:
        """Start deciding one turn in the background; a Future of its Decision. Only where `decides_per_turn`."""
        raise NotImplementedError(f"{type(self).__name__} decides in batches (act)")

    def close(self) -> None:
        """Release resources."""
