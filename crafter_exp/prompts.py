"""Prompt templates: how an observation becomes chat messages, and what a reply looks like.

Used by LLM policies to build requests, by scripted policies to write their replies in the same format, and by
the filter stage to rebuild the exact messages a policy saw for SFT export — one definition for all three.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

TEMPLATES = ("standard", "world_model", "bare")

FORMAT_INSTRUCTIONS = {
    "standard": (
        "Reply in this format:\n<think>your brief reasoning</think>\n<action>one action name</action>"
    ),
    "world_model": (
        "Reply in this format:\n<think>your brief reasoning</think>\n"
        "<prediction>what you expect to observe next: the changes, as `name +N` / `name -N` separated by commas "
        "(e.g. `wood +1, energy -1`), or `no change`</prediction>\n<action>one action name</action>"
    ),
    "bare": "Reply with one action name only.",
}

TOOLS_INSTRUCTIONS = "Act by calling the `interact` tool with the action names to execute in order."


def check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r} (known: {', '.join(TEMPLATES)})")


def system_prompt(prompt_cfg: Any, instructions: str, override: Optional[str] = None) -> str:
    """The system message: the game's rules plus the reply format (or a user-supplied file/override)."""
    if override is not None:
        return override
    if prompt_cfg.system_prompt_file:
        path = Path(prompt_cfg.system_prompt_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompt.system_prompt_file not found: {path}")
        return path.read_text()
    check_template(prompt_cfg.template)
    if prompt_cfg.template == "bare":
        # small students: the shortest prompt that works (tokens are the budget on a CPU)
        return FORMAT_INSTRUCTIONS["bare"]
    fmt = TOOLS_INSTRUCTIONS if prompt_cfg.action_mode == "tools" else FORMAT_INSTRUCTIONS[prompt_cfg.template]
    return f"{instructions.strip()}\n\n{fmt}"


def build_messages(
    prompt_cfg: Any,
    instructions: str,
    observation: str,
    history: list[tuple[str, str]] = (),
    system_override: Optional[str] = None,
) -> list[dict[str, str]]:
    """[system, (user, assistant) x last `prompt_cfg.history` turns, user] for one decision."""
    messages = [{"role": "system", "content": system_prompt(prompt_cfg, instructions, system_override)}]
    window = list(history)[-prompt_cfg.history :] if prompt_cfg.history > 0 else []
    for obs, reply in window:
        messages.append({"role": "user", "content": obs})
        messages.append({"role": "assistant", "content": reply})
    messages.append({"role": "user", "content": observation})
    return messages


def format_reply(
    template: str, actions: list[str], reasoning: Optional[str] = None, prediction: Optional[str] = None
) -> str:
    """A reply in the template's format (how scripted policies 'speak', so their traces train LLMs)."""
    check_template(template)
    if template == "bare":
        return "\n".join(actions)
    parts = []
    if reasoning:
        parts.append(f"<think>{reasoning}</think>")
    if template == "world_model" and prediction:
        parts.append(f"<prediction>{prediction}</prediction>")
    parts.extend(f"<action>{a}</action>" for a in actions)
    return "\n".join(parts)


def interact_tool(actions: Optional[list[str]], max_actions: int) -> dict[str, Any]:
    """The `interact` tool (OpenAI tools schema) taking 1..max_actions action names."""
    item: dict[str, Any] = {"type": "string"}
    if actions:
        item["enum"] = list(actions)
    return {
        "type": "function",
        "function": {
            "name": "interact",
            "description": "Execute one or more actions in the environment, in order.",
            "parameters": {
                "type": "object",
                "properties": {
                    "actions": {"type": "array", "items": item, "minItems": 1, "maxItems": max_actions}
                },
                "required": ["actions"],
            },
        },
    }
