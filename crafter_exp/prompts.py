"""Prompt templates: how an observation becomes chat messages, and what a reply looks like.

Used by LLM policies to build requests, by scripted policies to write their replies in the same format, and by
the filter stage to rebuild the exact messages a policy saw for SFT export — one definition for all three.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from crafter_exp.errors import UserError

if TYPE_CHECKING:
    from crafter_exp.config import PromptConfig

TEMPLATES = ("standard", "world_model", "bare")

FORMAT_INSTRUCTIONS = {
    "standard": ("Reply in this format:\n<think>your brief reasoning</think>\n<action>one action name</action>"),
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
        raise UserError(f"unknown prompt template {template!r} (known: {', '.join(TEMPLATES)})")


def system_prompt(prompt_cfg: PromptConfig, instructions: str, override: Optional[str] = None) -> str:
    """The system message: the game's rules plus the reply format (or a user-supplied file/override)."""
    if override is not None:
        return override
    if prompt_cfg.system_prompt_file:
        path = Path(prompt_cfg.system_prompt_file)
        if not path.is_file():
            raise UserError(f"prompt.system_prompt_file not found: {path}")
        return path.read_text()
    check_template(prompt_cfg.template)
    if prompt_cfg.template == "bare":
        # small students: the shortest prompt that works (tokens are the budget on a CPU)
        return FORMAT_INSTRUCTIONS["bare"]
    fmt = TOOLS_INSTRUCTIONS if prompt_cfg.action_mode == "tools" else FORMAT_INSTRUCTIONS[prompt_cfg.template]
    return f"{instructions.strip()}\n\n{fmt}"


def build_messages(
    prompt_cfg: PromptConfig,
    instructions: str,
    observation: str,
    history: Sequence[tuple[Any, ...]] = (),
    system_override: Optional[str] = None,
) -> list[dict[str, Any]]:
    """[system, (user, assistant) x last `prompt_cfg.history` turns, user] for one decision.

    History items are `(observation, reply)` or `(observation, reply, tool_calls, tool_result)`. In
    `action_mode=tools` a turn that called tools is sent back as it happened: the assistant message with its
    `tool_calls`, then one `tool` message per call with `tool_result` (text content alone would show the model
    empty replies). Call ids are numbered by turn, so a turn's messages stay the same as the window moves on
    (prompt caching).
    """
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system_prompt(prompt_cfg, instructions, system_override)}
    ]
    past = list(history)
    window = past[-prompt_cfg.history :] if prompt_cfg.history > 0 else []
    first = len(past) - len(window)
    for k, item in enumerate(window):
        obs, reply = item[0], item[1]
        calls = item[2] if len(item) > 2 else None
        messages.append({"role": "user", "content": obs})
        if calls and prompt_cfg.action_mode == "tools":
            messages.extend(_tool_turn(first + k, reply, calls, item[3] if len(item) > 3 else None))
        else:
            messages.append({"role": "assistant", "content": reply})
    messages.append({"role": "user", "content": observation})
    return messages


def call_id(turn: int | str, index: int | str) -> str:
    """The id of a turn's `index`-th tool call (the export's SQL builds the same ids: see export/formats.py)."""
    return f"call_{turn}_{index}"


def _tool_turn(turn: int, reply: str, calls: list[dict[str, Any]], result: Optional[str]) -> list[dict[str, Any]]:
    ids = [call_id(turn, i) for i in range(len(calls))]
    assistant = {
        "role": "assistant",
        "content": reply or None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": call.get("name") or "interact",
                    "arguments": _arguments_text(call.get("arguments")),
                },
            }
            for call_id, call in zip(ids, calls)
        ],
    }
    return [assistant] + [{"role": "tool", "tool_call_id": i, "content": result or ""} for i in ids]


def _arguments_text(arguments: Any) -> str:
    """A past call's arguments as the wire format wants them: JSON text. Text that is not JSON (a reply cut inside
    its arguments) is sent as {}: servers that render tool calls through a chat template (vLLM) parse the
    arguments and refuse the whole request otherwise; the tool result says what was played."""
    if isinstance(arguments, str):
        try:
            json.loads(arguments)
            return arguments
        except ValueError:
            return "{}"
    # compact, as DuckDB writes JSON: the export renders the same text from the stored call
    return json.dumps(arguments if arguments is not None else {}, separators=(",", ":"), ensure_ascii=False)


def invalid_note(problem: str, played: list[str]) -> str:
    """What `prompt.invalid_feedback` puts before the next observation: the last reply was invalid, and why.

    BALROG found weak models otherwise repeat an invalid action turn after turn (its
    `feedback_on_invalid_action`); the note is part of the observation text, so traces and SFT exports keep it.
    """
    return f"Your last reply was invalid: {problem}. Played: {', '.join(played) or 'nothing'}."


def with_note(observation: str, note: Optional[str]) -> str:
    return f"{note}\n\n{observation}" if note else observation


# The `tool` message's text in pieces, so that the export's SQL writes it from the same definition.
PLAYED = "Played: {}."
"""What was done: the actions played, joined by ACTION_SEP, or NOTHING."""
ACTION_SEP = ", "
NOTHING = "nothing"
INVALID = "Invalid: {}. "
"""Before PLAYED when the reply was invalid and `prompt.invalid_feedback` is on."""


def tool_result(played: list[str], problem: Optional[str]) -> str:
    """The `tool` message answering an earlier turn's `interact` call in the history window (what was done)."""
    done = PLAYED.format(ACTION_SEP.join(played) or NOTHING)
    return INVALID.format(problem) + done if problem else done


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
                "properties": {"actions": {"type": "array", "items": item, "minItems": 1, "maxItems": max_actions}},
                "required": ["actions"],
            },
        },
    }
