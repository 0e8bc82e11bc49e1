"""The message layout a policy saw, read off `prompts.build_messages` itself, so the SQL export follows it exactly.

`build_messages` is called with sentinel strings in place of the observations and replies; each message of the
result is then either a constant (the system prompt) or "the observation / reply of the turn `lag` turns back".
The export turns that layout into SQL over the steps table (one expression per message), so exported examples are
the messages the policy was sent — without calling Python once per example. One layout per number of history
turns available (a turn early in an episode has fewer previous turns than the window).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from crafter_exp import prompts
from crafter_exp.config import PromptConfig
from crafter_exp.errors import UserError


def _obs(lag: int) -> str:
    return f"\x00obs:{lag}\x00"


def _reply(lag: int) -> str:
    return f"\x00reply:{lag}\x00"


@dataclass(frozen=True)
class Item:
    """One message of a prompt: a constant message, or the observation / reply of the turn `lag` turns back."""

    kind: str  # "const" | "obs" | "reply"
    lag: int = 0
    message: Optional[dict[str, Any]] = None


@dataclass
class Layout:
    prompt: PromptConfig
    system: Optional[str]
    """Content of the leading system message (None when the prompt has none)."""
    by_history: list[list[Item]] = field(default_factory=list)
    """by_history[L]: the messages after the system message when L previous turns are available (L = 0..history)."""

    @property
    def history(self) -> int:
        return len(self.by_history) - 1


def prompt_config(run_config: Any) -> Optional[PromptConfig]:
    """The `model.prompt` a run was played with (from runs.config), or None when it was not recorded."""
    model = (run_config or {}).get("model") or {}
    raw = model.get("prompt")
    if not isinstance(raw, dict):
        return None
    names = {f.name for f in dataclasses.fields(PromptConfig)}
    return PromptConfig(**{k: v for k, v in raw.items() if k in names})


def system_override(prompt_cfg: PromptConfig, instructions: str, text: Optional[str], mode: str) -> Optional[str]:
    """The system prompt the export writes: the policy's (None), `text` instead of it, or the policy's + `text`."""
    if text is None:
        return None
    if mode == "append":
        return f"{prompts.system_prompt(prompt_cfg, instructions).rstrip()}\n\n{text}"
    return text


_SENTINEL = re.compile(r"\x00(obs|reply):(\d+)\x00")
_ROLE = {"obs": "user", "reply": "assistant"}


def _item(message: dict[str, Any]) -> Item:
    content = message.get("content")
    if not (isinstance(content, str) and "\x00" in content):
        return Item("const", message=dict(message))
    match = _SENTINEL.fullmatch(content)
    if match and message.get("role") == _ROLE[match.group(1)] and set(message) == {"role", "content"}:
        return Item(match.group(1), int(match.group(2)))
    raise UserError(
        "prompts.build_messages lays out observations/replies in a way the filter's SQL export does not follow "
        "(it needs each as the whole content of a user/assistant message)"
    )


def derive_layout(prompt_cfg: PromptConfig, instructions: str, override: Optional[str] = None) -> Layout:
    """Read the message layout off `prompts.build_messages` for every history length 0..prompt.history."""
    layout = Layout(prompt=prompt_cfg, system=None)
    for available in range(0, max(prompt_cfg.history, 0) + 1):
        history = [(_obs(lag), _reply(lag)) for lag in range(available, 0, -1)]
        messages = prompts.build_messages(prompt_cfg, instructions, _obs(0), history, system_override=override)
        items = [_item(m) for m in messages]
        if items and items[0].kind == "const" and items[0].message.get("role") == "system":
            system = items[0].message.get("content")
            items = items[1:]
            if available == 0:
                layout.system = system
            elif system != layout.system:
                raise UserError("the system prompt changes with the history length; the SQL export cannot follow it")
        elif available == 0:
            layout.system = None
        layout.by_history.append(items)
    return layout


def conversation_layout(prompt_cfg: PromptConfig, instructions: str, override: Optional[str] = None) -> Layout:
    """The layout of a whole-episode conversation: [system, (observation, reply) x turns]; checked against
    build_messages with one history turn."""
    one = dataclasses.replace(prompt_cfg, history=1)
    layout = derive_layout(one, instructions, override)
    if [(i.kind, i.lag) for i in layout.by_history[1]] != [("obs", 1), ("reply", 1), ("obs", 0)]:
        raise UserError("multi_turn export needs prompts laid out as [system, user, assistant, ...]")
    return layout
