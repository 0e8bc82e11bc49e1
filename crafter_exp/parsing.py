"""Turn a model's reply into action names. Environment-agnostic: the environment supplies `canonical`.

Accepted, in this order: tool calls (`interact` with `actions: [...]`, or `action: "..."`), `<action>...</action>`
tags, `ACTION: ...` lines, then a bare action name (the whole reply, or its last non-empty line). Reasoning in
`<think>...</think>` is ignored when looking for actions. Nothing valid -> ([], False); the rollout then plays the
environment's fallback (`noop` in Crafter), counts it, and stores the raw reply.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Optional, Sequence

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


# ------------------------------------------------------------------------------------- world-model predictions
#
# A prediction is scored when it names changes as `name +N` / `name -N` items (also `+N name`, `name: +N`), with
# `unlock <achievement>` as shorthand for `<achievement> +1`, or says there is no change ("no change", "nothing",
# "none"). Names are the environment's (`TextEnv.prediction_quantity` maps them); other words are free text.

_AMOUNT = r"[+\-\u2212]\s?\d+"
_WORDS = r"[a-z][a-z0-9_]*(?:[ \t-]+[a-z][a-z0-9_]*){0,3}"
_NAME_AMOUNT_RE = re.compile(rf"({_WORDS})[ \t]*[:=]?[ \t]*({_AMOUNT})\b", re.I)
_AMOUNT_NAME_RE = re.compile(rf"({_AMOUNT})[ \t]+({_WORDS})", re.I)
_UNLOCK_RE = re.compile(rf"\bunlock(?:s|ed|ing)?\b[ \t]*:?[ \t]*({_WORDS})", re.I)
_NO_CHANGE_RE = re.compile(r"^\W*(?:no(?:thing)?\s+(?:will\s+)?change[sd]?|nothing(?:\s+happens)?|none|unchanged"
                           r"|no\s+changes?)\W*$", re.I)

QuantityName = Callable[[str], Optional[str]]


def parse_prediction(reply: Optional[str]) -> Optional[str]:
    """The text of the reply's `<prediction>...</prediction>` (outside `<think>`, several joined by newlines,
    stripped); None when the reply holds none or only an empty one."""
    _, body = split_reasoning(reply or "")
    found = [p.strip() for p in PREDICTION_RE.findall(body)]
    text = "\n".join(p for p in found if p)
    return text or None


def _name(words: str, quantity: QuantityName, side: str) -> Optional[str]:
    """The environment's quantity named by the words next to the amount, which sit on `side` ("end": `I expect
    wood +1`; "start": `+1 wood from the tree`): the longest run of them that is a name (`iron pickaxe` before
    `pickaxe`)."""
    parts = re.split(r"[ \t-]+", words.strip())
    for n in range(len(parts), 0, -1):
        chunk = parts[-n:] if side == "end" else parts[:n]
        name = quantity("_".join(chunk).lower())
        if name is not None:
            return name
    return None


def parse_changes(text: Optional[str], quantity: QuantityName,
                  achievements: Sequence[str] = ()) -> Optional[dict[str, int]]:
    """A prediction's claimed changes, {quantity: signed amount} ({} = "no change"); None when it names none in
    the scored form (free text only). A quantity named twice keeps the sum of its amounts."""
    if not text or not text.strip():
        return None
    if _NO_CHANGE_RE.match(text.strip()):
        return {}
    out: dict[str, int] = {}
    used: list[tuple[int, int]] = []  # spans of amounts already read (`wood +1 stone -1`: -1 is stone's)

    def add(name: Optional[str], amount: str) -> None:
        if name is not None:
            value = int(re.sub(r"\s", "", amount).replace("\u2212", "-"))
            out[name] = out.get(name, 0) + value

    for m in _NAME_AMOUNT_RE.finditer(text):
        name = _name(m.group(1), quantity, "end")
        if name is not None:
            add(name, m.group(2))
            used.append(m.span(2))
    for m in _AMOUNT_NAME_RE.finditer(text):
        if any(a <= m.start(1) < b for a, b in used):
            continue
        add(_name(m.group(2), quantity, "start"), m.group(1))
    known = set(achievements)
    for m in _UNLOCK_RE.finditer(text):
        name = _name(m.group(1), quantity, "start")
        if name in known and name not in out:
            out[name] = 1
    if not out:
        # "no change" inside a longer text still says so, when nothing else was claimed
        return {} if re.search(r"\bno\s+changes?\b|\bnothing\s+(?:will\s+)?changes?\b", text, re.I) else None
    return {k: v for k, v in out.items() if v != 0}  # `wood +1, wood -1` nets to no change
