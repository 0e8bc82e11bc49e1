"""Turn a model's reply into action names. Environment-agnostic: the environment supplies `canonical`.

Accepted, in this order: tool calls (`interact` with `actions: [...]`, or `action: "..."`), `<action>...</action>`
tags, `ACTION: ...` lines, then a bare action name (the whole reply, or its last non-empty line). Reasoning in
`<think>...</think>` is ignored when looking for actions. Nothing valid -> ([], False); the rollout then plays the
environment's fallback (`noop` in Crafter), counts it, and stores the raw reply.

Bad replies (`parse_reply_why` says which, in one line): empty; reasoning only; cut at max_tokens before a
complete action (a cut reply's last line is not read as a bare name or `ACTION:` line: it may be a cut word);
an unknown action; more actions than `max_actions` (the first `max_actions` are played); tool calls whose
arguments are not a JSON object or have no `actions`. Each makes the parse not ok.
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
    return _tool_candidates(tool_calls)[0]


def _tool_candidates(tool_calls: list[dict[str, Any]]) -> tuple[list[str], Optional[str], set[str]]:
    """(candidates, what was wrong with the calls' arguments or None, candidates that were raw non-JSON text)."""
    out: list[str] = []
    raw: set[str] = set()
    problem: Optional[str] = None
    for call in tool_calls:
        args = call.get("arguments", {})
        name = call.get("name") or "tool"
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                out.append(args)  # a bare action name passed as the arguments is still read
                raw.add(args)
                continue
        if not isinstance(args, dict):
            problem = problem or f"the {name} call's arguments are not a JSON object"
            continue
        value = args.get("actions", args.get("action", args.get("command")))
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list) and value:
            out.extend(str(v) for v in value)
        else:
            problem = problem or f"the {name} call has no `actions` argument (got {_short(json.dumps(args))})"
    return out, problem, raw


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _split_many(text: str) -> list[str]:
    # "move_left, do" or one per line: several actions in one tag
    parts = [p.strip().strip("`'\".") for p in re.split(r"[\n,;]", text)]
    return [p for p in parts if p]


def parse_reply_why(
    reply: str,
    tool_calls: Optional[list[dict[str, Any]]],
    canonical: Canonical,
    max_actions: int = 1,
    reasoning: Optional[str] = None,
    truncated: bool = False,
) -> tuple[list[str], bool, Optional[str]]:
    """`parse_reply` plus why the reply could not be played as written: (actions, ok, problem), problem None when
    ok. `reasoning`: the reply's separate reasoning field (tells "reasoning only" from "empty"); `truncated`: the
    reply was cut at max_tokens (finish_reason `length`)."""
    tool_problem: Optional[str] = None
    raw: set[str] = set()
    bare = False
    think = None
    if tool_calls:
        candidates, tool_problem, raw = _tool_candidates(tool_calls)
    else:
        think, body = split_reasoning(reply)
        tags = ACTION_TAG_RE.findall(body)
        if truncated and not tags:
            body = "\n".join(body.splitlines()[:-1])  # the last line of a cut reply may end mid-word
        if tags:
            candidates = [c for t in tags for c in _tag_candidates(t, canonical, max_actions)]
        else:
            lines = ACTION_LINE_RE.findall(body)
            if lines:
                candidates = [c for t in lines for c in _tag_candidates(t, canonical, max_actions)]
            else:
                stripped = body.strip().strip("`'\".")
                last = stripped.splitlines()[-1].strip().strip("`'\".") if stripped else ""
                whole = canonical(stripped) if stripped else None
                candidates = [stripped] if whole else ([last] if last else [])
                bare = True
    chosen = candidates[:max_actions]
    mapped = [canonical(c) for c in chosen]
    actions = [a for a in mapped if a is not None]
    problem: Optional[str] = None
    if not candidates:
        if tool_problem:
            problem = tool_problem
        elif truncated:
            problem = "the reply was cut at max_tokens before a complete action"
        elif think or (reasoning or "").strip():
            problem = "the reply held only reasoning, no action"
        elif not (reply or "").strip():
            problem = "the reply was empty"
        else:
            problem = "no action found in the reply"
    elif len(actions) < len(chosen):
        bad = next(c for c, a in zip(chosen, mapped) if a is None)
        if bad in raw and truncated:
            problem = "the reply was cut at max_tokens inside the tool call's arguments"
        elif bad in raw:
            problem = f"the tool call's arguments are not JSON: {_short(bad)!r}"
        elif bare:
            problem = f"no action found in the reply (its last line {_short(bad)!r} is not an action)"
        else:
            problem = f"{_short(bad)!r} is not a valid action"
    elif len(candidates) > max_actions:
        first = "the first" if max_actions == 1 else f"the first {max_actions}"
        problem = f"{len(candidates)} actions given, at most {max_actions} allowed ({first} played)"
    elif tool_problem:
        problem = tool_problem
    return actions, problem is None and bool(actions), problem


def _tag_candidates(text: str, canonical: Canonical, max_actions: int) -> list[str]:
    """One tag's (or ACTION line's) candidates: several when allowed, or when one is allowed but several are
    given (`move_left, do`: counted as too many, not as one unknown action)."""
    if max_actions > 1:
        return _split_many(text)
    if canonical(text.strip()) is None and len(_split_many(text)) > 1:
        return _split_many(text)
    return [text.strip()]


def parse_reply(
    reply: str,
    tool_calls: Optional[list[dict[str, Any]]],
    canonical: Canonical,
    max_actions: int = 1,
) -> tuple[list[str], bool]:
    """Parse a reply into at most `max_actions` canonical actions; ok is False when none was valid.

    Where several candidates are found, invalid ones (or more than `max_actions`) make the parse not ok but valid
    ones are still played.
    """
    actions, ok, _ = parse_reply_why(reply, tool_calls, canonical, max_actions)
    return actions, ok and bool(actions)
