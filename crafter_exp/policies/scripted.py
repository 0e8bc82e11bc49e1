"""Offline policies that need no model: the scripted teacher (the env's expert + epsilon) and uniform random.

Both are environment-agnostic: the teacher plays `turn.expert_action` (the environment's own hand-coded expert,
asked for by `needs_expert`), replacing it with a uniformly random valid action with probability `epsilon`, so
the traces mix good and bad decisions for the filter stage. Each episode draws from its own rng seeded by
(policy seed, episode key): an episode's actions do not depend on which other episodes share its batch.
Replies are written in the prompt template's format, so teacher traces train LLMs in the format they will use.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Optional

from crafter_exp import prompts
from crafter_exp.errors import UserError
from crafter_exp.policies.base import Decision, Policy, Turn

if TYPE_CHECKING:
    from crafter_exp.config import ModelConfig, ScriptedModelConfig


class _PerEpisodeRng(Policy):
    """Per-episode random streams, seeded from (policy seed, episode key, stream name)."""

    streams: tuple[str, ...] = ("pick",)

    def __init__(self, cfg: ModelConfig, seed: int = 0):
        prompts.check_template(cfg.prompt.template)
        self.cfg = cfg
        self.seed = int(seed)
        self._rngs: dict[int, dict[str, random.Random]] = {}
        if cfg.label:
            self.model_name = cfg.label

    def reset(self, episode: int) -> None:
        # a str seed is hashed with SHA-512: the same stream in every process (unlike hash() of a str)
        self._rngs[episode] = {name: random.Random(f"{name}:{self.seed}:{episode}") for name in self.streams}

    def _rng(self, episode: int, stream: str = "pick") -> random.Random:
        if episode not in self._rngs:
            self.reset(episode)
        return self._rngs[episode][stream]

    def _reply(self, action: str) -> Decision:
        reply = prompts.format_reply(self.cfg.prompt.template, [action])
        tool_calls: Optional[list[dict[str, Any]]] = None
        if self.cfg.prompt.action_mode == "tools":
            tool_calls = [{"name": "interact", "arguments": {"actions": [action]}}]
        return Decision(reply=reply, tool_calls=tool_calls)

    def close(self) -> None:
        self._rngs.clear()


class ScriptedPolicy(_PerEpisodeRng):
    """The environment's expert, with probability `cfg.epsilon` replaced by a uniformly random valid action.

    The random action comes from the same per-episode stream as `RandomPolicy`'s (drawn every turn, used or
    not), so epsilon=1 plays exactly the random policy's episodes and epsilon=0 exactly the expert's.
    """

    needs_expert = True
    model_name = "scripted"
    provider = "local"
    streams = ("pick", "explore")

    cfg: ScriptedModelConfig

    def __init__(self, cfg: ScriptedModelConfig, seed: int = 0):
        if not 0.0 <= cfg.epsilon <= 1.0:
            raise UserError(f"model.epsilon must be in [0, 1], got {cfg.epsilon}")
        super().__init__(cfg, seed)

    def act(self, turns: list[Turn]) -> list[Decision]:
        decisions = []
        for turn in turns:
            pick = self._rng(turn.episode, "pick").choice(turn.actions)
            explore = self._rng(turn.episode, "explore").random() < self.cfg.epsilon
            if not explore and turn.expert_action is None:
                raise RuntimeError("the scripted policy needs an environment with an expert (expert_action is None)")
            decisions.append(self._reply(pick if explore or turn.expert_action is None else turn.expert_action))
        return decisions


class RandomPolicy(_PerEpisodeRng):
    """Uniform over the valid actions of each turn."""

    model_name = "random"
    provider = "local"

    def act(self, turns: list[Turn]) -> list[Decision]:
        return [self._reply(self._rng(t.episode).choice(t.actions)) for t in turns]
