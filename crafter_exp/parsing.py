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
from collections.abc import Callable, Sequence
from typing import Any, Optional

# The reply-stripping rules are written once, as patterns both Python's `re` and DuckDB's RE2 read the same way:
# `split_reasoning` / `drop_predictions` apply them here, the `*_sql` functions below compile them for the filter's
# SQL export, so an exported reply is stripped exactly as the policy's own code strips it.
THINK = r"<think>(.*?)(?:</think>|$)"
"""A reasoning block: `<think>...</think>`, or an unterminated `<think>...` (a reply cut at max_tokens)."""
PREDICTION_BLOCK = r"\s*<prediction>.*?</prediction>"
"""A world-model prediction with the whitespace before it (what `filter.keep_predictions=false` drops)."""
EDGE_SPACE = r"^[ \t\n\r\f\v]+|[ \t\n\r\f\v]+$"
"""Outer whitespace (spelled out: `str.strip` and RE2's `\\s` disagree on exotic spaces)."""
THINK_RE = re.compile(THINK, re.S | re.I)
ACTION_TAG_RE = re.compile(r"<action>(.*?)</action>", re.S | re.I)
ACTION_LINE_RE = re.compile(r"^\s*(?:\*\*)?action(?:\*\*)?\s*[:=]\s*(.+?)\s*$", re.I | re.M)
PREDICTION_RE = re.compile(r"<prediction>(.*?)</prediction>", re.S | re.I)
_PREDICTION_BLOCK_RE = re.compile(PREDICTION_BLOCK, re.S | re.I)
_EDGE_SPACE_RE = re.compile(EDGE_SPACE)

Canonical = Callable[[str], Optional[str]]


def _strip(text: str) -> str:
    return _EDGE_SPACE_RE.sub("", text)


def split_reasoning(reply: str) -> tuple[Optional[str], str]:
    """(reasoning inside <think>, the reply without it)."""
    found = THINK_RE.findall(reply or "")
    reasoning = "\n".join(_strip(s) for s in found) if found else None
    return reasoning, _strip(THINK_RE.sub("", reply or ""))


def drop_predictions(reply: str) -> str:
    """The reply without its <prediction> blocks (`filter.keep_predictions=false`)."""
    return _strip(_PREDICTION_BLOCK_RE.sub("", reply or ""))


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def strip_sql(expr: str) -> str:
    """SQL: `expr` without outer whitespace (as the Python side strips)."""
    return f"regexp_replace({expr}, {_sql_text(EDGE_SPACE)}, '', 'g')"


def strip_reasoning_sql(expr: str) -> str:
    """SQL: `split_reasoning(expr)[1]` (the reply without its reasoning)."""
    return strip_sql(f"regexp_replace({expr}, {_sql_text('(?is)' + THINK)}, '', 'g')")


def reasoning_sql(expr: str) -> str:
    """SQL: `split_reasoning(expr)[0]` (the reasoning blocks, each stripped, one per line; NULL when none)."""
    pattern = _sql_text("(?is)" + THINK)
    return (
        f"CASE WHEN regexp_matches({expr}, {pattern}) THEN array_to_string(list_transform("
        f"regexp_extract_all({expr}, {pattern}, 1), lambda x: {strip_sql('x')}), chr(10)) END"
    )


def drop_predictions_sql(expr: str) -> str:
    """SQL: `drop_predictions(expr)`."""
    return strip_sql(f"regexp_replace({expr}, {_sql_text('(?is)' + PREDICTION_BLOCK)}, '', 'g')")


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
        if truncated and not tags and not (len(body.strip().splitlines()) == 1 and canonical(body.strip())):
            # the last line of a cut reply may end mid-word; a reply that is one whole action name (the `bare`
            # template's one-token replies, cut right after it) is kept
            body = "\n".join(body.splitlines()[:-1])
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
_NO_CHANGE_RE = re.compile(
    r"^\W*(?:no(?:thing)?\s+(?:will\s+)?change[sd]?|nothing(?:\s+happens)?|none|unchanged"
    r"|no\s+changes?)\W*$",
    re.I,
)

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


def parse_changes(
    text: Optional[str], quantity: QuantityName, achievements: Sequence[str] = ()
) -> Optional[dict[str, int]]:
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
