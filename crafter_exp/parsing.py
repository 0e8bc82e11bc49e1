"""Turn a model's reply into action names. Environment-agnostic: the environment supplies `canonical`.

Accepted, in this order: tool calls (`interact` with `actions: [...]`, or `action: "..."`), `<action>...</action>`
tags, `ACTION: ...` lines, then a bare action name (the whole reply, or its last non-empty line). Reasoning in
`<think>...</think>` is ignored when looking for actions. Nothing valid -> ([], False); the rollout then plays the
environment's fallback (`noop` in Crafter), counts it, and stores the raw reply.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Optional

THINK_RE = re.compile(r"<think>(.*?)(?:</think>|$)", re.S | re.I)
ACTION_TAG_RE = re.compile(r"<action>(.*?)</action>", re.S | re.I)
ACTION_LINE_RE = re.compile(r"^\s*(?:\*\*)?action(?:\*\*)?\s*[:=]\s*(.+?)\s*$", re.I | re.M)
PREDICTION_RE = re.compile(r"<prediction>(.*?)</prediction>", re.S | re.I)

Canonical = Callable[[str], Optional[str]]


def split_reasoning(reply: str) -> tuple[Optional[str], str]:
    """(reasoning inside <think>, the reply without it)."""
    found = THINK_RE.findall(reply or "")
    reasoning = "\n".join(s.strip() for s in found) if found else None
    return reasoning, THINK_RE.sub("", reply or "").strip()


def _candidates_from_tool_calls(tool_calls: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for call in tool_calls:
        args = call.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                out.append(args)
                continue
        if not isinstance(args, dict):
            continue
        value = args.get("actions", args.get("action", args.get("command")))
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out.extend(str(v) for v in value)
    return out


def _split_many(text: str) -> list[str]:
    # "move_left, do" or one per line: several actions in one tag
    parts = [p.strip().strip("`'\".") for p in re.split(r"[\n,;]", text)]
    return [p for p in parts if p]


def parse_reply(
    reply: str,
    tool_calls: Optional[list[dict[str, Any]]],
    canonical: Canonical,
    max_actions: int = 1,
) -> tuple[list[str], bool]:
    """Parse a reply into at most `max_actions` canonical actions; ok is False when none was valid.

    Where several candidates are found, invalid ones make the parse not ok but valid ones are still played.
    """
    if tool_calls:
        candidates = _candidates_from_tool_calls(tool_calls)
    else:
        _, body = split_reasoning(reply)
        tags = ACTION_TAG_RE.findall(body)
        if tags:
            candidates = [c for t in tags for c in (_split_many(t) if max_actions > 1 else [t.strip()])]
        else:
            lines = ACTION_LINE_RE.findall(body)
            if lines:
                candidates = [c for t in lines for c in (_split_many(t) if max_actions > 1 else [t.strip()])]
            else:
                stripped = body.strip().strip("`'\".")
                last = stripped.splitlines()[-1].strip().strip("`'\".") if stripped else ""
                whole = canonical(stripped) if stripped else None
                candidates = [stripped] if whole else ([last] if last else [])
    actions = [a for a in (canonical(c) for c in candidates[:max_actions]) if a is not None]
    ok = bool(candidates) and len(actions) == len(candidates[:max_actions])
    return actions, ok and bool(actions)
