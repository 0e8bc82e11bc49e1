"""Export formats as SQL: each example is rendered inside DuckDB, one chunk of episodes per statement.

A *rendering* says how one message becomes a fragment (a JSON object for chat formats, a line of text for the
single-turn prompt); `Layout` (read off prompts.build_messages) says which messages a prompt holds; the statement
joins the fragments of the prompt's messages, the target reply, and the format's wrapper into one line per example.

Per-turn examples (one per kept turn, the prompt the policy saw: system + history window + observation -> reply):
- openai_chat   {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}; replies of the history
                window carry "weight": 0 (OpenAI's per-message training weight: context, not target)
- openai_tools  the same prompt, the target reply as an `interact` tool call ({"actions": [...]}, the actions that
                were executed) with the reasoning as content, plus "tools": [the interact tool]. History turns are
                what the policy was sent: in `action_mode=tools` a turn that called tools is its assistant message
                with those calls plus one `tool` message per call (prompts.build_messages), else the text reply.
                The other formats have no tool messages: they show such a turn as its text reply.
- vertex_gemini {"systemInstruction": {"role": "system", "parts": [{"text": ...}]},
                 "contents": [{"role": "user"|"model", "parts": [{"text": ...}]}, ...]}
- single_turn   {"prompt_data": {"content": "system: ...\\nuser: ..."}, "response_data": {"content": reply}}
                (the AlfWorld workflow's single-turn SFT keys)
Multi-turn (one example per episode: the whole conversation up to its last kept turn): openai_chat (assistant
messages carry "weight": 1 for kept turns, 0 for the others, OpenAI's per-message training weight),
openai_tools (each reply an `interact` tool call with that weight, answered by a tool message
{"role": "tool", "tool_call_id": ..., "content": prompts.tool_result(...)} before the next observation, as the
OpenAI format requires of every call but the last) and vertex_gemini (every model turn trained: Gemini's format
has no per-turn weight).
- parquet (writer.py; the AlfWorld workflow's single- and multi-turn SFT files): train.parquet / val.parquet
  (split by episode), rows {data_source, messages: [{role, content, weight}], prompt_data: {content}, response_data:
  {content}, ability, reward_model: {style, ground_truth = the executed actions}, extra_info: {run_id, seed, turn,
  split, reward}}; train.csv / val.csv (messages as JSON text); raw_trajectories.json (every turn of every
  exported episode, with a `kept` flag).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from crafter_exp import prompts
from crafter_exp.errors import UserError
from crafter_exp.export.layout import Item, Layout
from crafter_exp.filtering.steps import REASONING

if TYPE_CHECKING:
    from crafter_exp.config import PromptConfig

JSONL_FORMATS = ("openai_chat", "openai_tools", "vertex_gemini", "single_turn")


@dataclass(frozen=True)
class Rendering:
    name: str
    user: str
    """SQL: the fragment of an observation (columns of the step row)."""
    reply: str
    """SQL: the fragment of a reply shown in a prompt (as the policy saw it)."""
    target: str
    """SQL: the fragment of the trained reply."""
    turn: str
    """SQL: the fragment of a reply inside a multi-turn conversation (may use `keep`)."""
    const: Callable[[dict[str, Any]], str]
    """Python: the fragment of a constant message (other than the leading system message)."""
    sep: str
    """SQL string literal joining fragments."""


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def J(expr: str) -> str:
    """SQL: `expr` as a JSON value (a quoted, escaped string; `null` for NULL)."""
    return f"coalesce(to_json({expr})::VARCHAR, 'null')"


# Fragments are spelled out with one concat() around to_json of the text: a third faster in DuckDB than
# to_json of a struct, and one allocation per fragment.
CHAT = Rendering(
    name="chat",
    user=f"""concat('{{"role":"user","content":', {J("observation")}, '}}')""",
    # a reply of the history window is context, not a target: weight 0 (else each reply is learned K+1 times)
    reply=f"""concat('{{"role":"assistant","content":', {J("reply_out")}, ',"weight":0}}')""",
    target=f"""concat('{{"role":"assistant","content":', {J("target_out")}, '}}')""",
    turn=(
        f"""concat('{{"role":"assistant","content":', {J("reply_out")}, ',"weight":', """
        """CASE WHEN keep THEN '1' ELSE '0' END, '}')"""
    ),
    const=lambda m: _json({"role": m.get("role"), "content": m.get("content")}),
    sep="','",
)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _compile(text: str, slots: dict[str, str]) -> str:
    """SQL: `text` (the output of a prompts.py function called with sentinel slot names) with each slot replaced by
    its SQL expression — so the SQL writes what the Python function writes, from the function itself."""
    pieces, rest = [], text
    while rest:
        hits = [(rest.find(k), k) for k in slots if k in rest]
        if not hits:
            pieces.append(_lit(rest))
            break
        at, key = min(hits)
        if at:
            pieces.append(_lit(rest[:at]))
        pieces.append(slots[key])
        rest = rest[at + len(key) :]
    return f"concat({', '.join(pieces)})" if len(pieces) > 1 else pieces[0]


def target_out_sql(target: str, template: str) -> str:
    """SQL: the trained reply of a kept turn (`target_out`): the reply as said (`reply_out`), or for `expert` the
    expert's action as the template's reply (prompts.format_reply: what the scripted teacher would have said)."""
    if target == "expert":
        return _compile(prompts.format_reply(template, ["\x00a"]), {"\x00a": "expert_action"})
    return "reply_out"


def call_id_sql(index: str) -> str:
    """SQL: prompts.call_id(turn, index) of the row's turn."""
    return _compile(prompts.call_id("\x00t", "\x00i"), {"\x00t": "turn::VARCHAR", "\x00i": f"({index})::VARCHAR"})


def tool_result_sql(invalid_feedback: bool) -> str:
    """SQL: prompts.tool_result(actions, the turn's reply_problem if `invalid_feedback`) of the row."""
    joined = f"array_to_string(coalesce(actions, [])::VARCHAR[], {_lit(prompts.ACTION_SEP)})"
    played = _compile(
        prompts.PLAYED.format("\x00a"), {"\x00a": f"coalesce(nullif({joined}, ''), {_lit(prompts.NOTHING)})"}
    )
    if not invalid_feedback:
        return played
    invalid = _compile(prompts.INVALID.format("\x00p"), {"\x00p": "reply_problem"})
    return f"CASE WHEN nullif(reply_problem, '') IS NOT NULL THEN concat({invalid}, {played}) ELSE {played} END"


def _arguments_sql(arg: str) -> str:
    """SQL: prompts._arguments_text of a stored call's arguments (JSON): JSON text kept, other text as {}."""
    return (
        f"CASE WHEN {arg} IS NULL OR json_type({arg}) = 'NULL' THEN '{{}}' WHEN json_type({arg}) = 'VARCHAR' "
        f"THEN CASE WHEN json_valid({arg}->>'$') THEN {arg}->>'$' ELSE '{{}}' END ELSE {arg}::VARCHAR END"
    )


def _tool_turn_sql(invalid_feedback: bool) -> str:
    """SQL: a history turn of an `action_mode=tools` run as prompts.build_messages sends it back (`_tool_turn`):
    the assistant message with the reply's tool calls, then one `tool` message per call; a turn without calls is
    its text reply. Context, so weight 0."""
    calls = "range(json_array_length(tool_calls)::BIGINT)"
    call = (
        f"{{'id': {call_id_sql('i')}, 'type': 'function', 'function': {{'name': "
        f"coalesce(nullif(tool_calls->i->>'name', ''), 'interact'), "
        f"'arguments': {_arguments_sql('(tool_calls->i->' + _lit('arguments') + ')')}}}}}"
    )
    assistant = (
        f"to_json({{'role': 'assistant', 'content': nullif(reply_out, ''), "
        f"'tool_calls': list_transform({calls}, lambda i: {call}), 'weight': 0}})::VARCHAR"
    )
    answers = (
        f"array_to_string(list_transform({calls}, lambda i: to_json({{'role': 'tool', 'tool_call_id': "
        f"{call_id_sql('i')}, 'content': {tool_result_sql(invalid_feedback)}}})::VARCHAR), ',')"
    )
    return (
        f"CASE WHEN coalesce(json_array_length(tool_calls), 0) > 0 THEN concat({assistant}, ',', {answers}) "
        f"ELSE {CHAT.reply} END"
    )


TOOLS_COLUMNS = ("tool_calls", "reply_problem")
"""Step columns the openai_tools format reads besides filtering.steps.STEP_COLUMNS."""


def tools_rendering(prompt: PromptConfig) -> Rendering:
    """openai_tools: the target is an `interact` call of the executed actions (reasoning as content); history turns
    are what the policy was sent (tool-call messages in `action_mode=tools`, text replies otherwise)."""
    feedback = bool(getattr(prompt, "invalid_feedback", False))
    target_call = (
        f"'tool_calls': [{{'id': {call_id_sql('0')}, 'type': 'function', 'function': {{'name': 'interact', "
        "'arguments': to_json({'actions': coalesce(actions, [])::VARCHAR[]})::VARCHAR}}]"
    )
    content = "'content': CASE WHEN $keep_reasoning THEN " + REASONING + " END"
    return Rendering(
        name="tools",
        user=CHAT.user,
        reply=_tool_turn_sql(feedback) if getattr(prompt, "action_mode", "text") == "tools" else CHAT.reply,
        target=f"to_json({{'role': 'assistant', {content}, {target_call}}})::VARCHAR",
        # multi-turn: the tool call with its weight, then the call's answer unless it is the conversation's last turn
        turn=(
            f"to_json({{'role': 'assistant', {content}, {target_call}, "
            "'weight': CASE WHEN keep THEN 1 ELSE 0 END})::VARCHAR || CASE WHEN turn < last_kept THEN ',' || "
            f"to_json({{'role': 'tool', 'tool_call_id': {call_id_sql('0')}, "
            f"'content': {tool_result_sql(feedback)}}})::VARCHAR ELSE '' END"
        ),
        const=CHAT.const,
        sep="','",
    )


VERTEX = Rendering(
    name="vertex",
    user=f"""concat('{{"role":"user","parts":[{{"text":', {J("observation")}, '}}]}}')""",
    reply=f"""concat('{{"role":"model","parts":[{{"text":', {J("reply_out")}, '}}]}}')""",
    target=f"""concat('{{"role":"model","parts":[{{"text":', {J("target_out")}, '}}]}}')""",
    turn=f"""concat('{{"role":"model","parts":[{{"text":', {J("reply_out")}, '}}]}}')""",
    const=lambda m: _json(
        {"role": "model" if m.get("role") == "assistant" else "user", "parts": [{"text": m.get("content") or ""}]}
    ),
    sep="','",
)

TEXT = Rendering(
    name="text",
    user="concat('user: ', observation)",
    reply="concat('assistant: ', reply_out)",
    target="target_out",
    turn="concat('assistant: ', reply_out)",
    const=lambda m: f"{m.get('role')}: {m.get('content') or ''}",
    sep="chr(10)",
)


class Statement:
    """Builds the SQL pieces of one export for one layout; collects the constants as named parameters."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.params: dict[str, Any] = {}
        self.renderings: dict[str, Rendering] = {}

    def const(self, value: str) -> str:
        name = f"c{len(self.params)}"
        self.params[name] = value
        return f"${name}"

    def use(self, r: Rendering) -> None:
        self.renderings[r.name] = r

    def fragment_columns(self) -> str:
        """SELECT-list entries: u_<r>, a_<r> per rendering, and their lags 1..history."""
        cols = []
        for r in self.renderings.values():
            cols += [f"{r.user} AS u_{r.name}", f"{r.reply} AS a_{r.name}"]
        return ", ".join(cols)

    def lag_columns(self) -> str:
        cols = []
        for r in self.renderings.values():
            for lag in range(1, self.layout.history + 1):
                for kind in ("u", "a"):
                    cols.append(
                        f"lag({kind}_{r.name}, {lag}) OVER (PARTITION BY run_id, seed ORDER BY turn)"
                        f" AS {kind}_{r.name}_{lag}"
                    )
        return "".join(", " + c for c in cols)

    def _item(self, r: Rendering, item: Item) -> str:
        if item.kind == "const":
            return self.const(r.const(item.message))
        kind = "u" if item.kind == "obs" else "a"
        return f"{kind}_{r.name}" + (f"_{item.lag}" if item.lag else "")

    def prompt_parts(self, r: Rendering, with_system: Optional[Callable[[str], str]] = None) -> str:
        """SQL: the prompt's fragments joined by the rendering's separator (NULL-free), chosen by history length."""

        def parts(items: list[Item]) -> str:
            pieces = []
            if with_system is not None and self.layout.system is not None:
                pieces.append(self.const(with_system(self.layout.system)))
            pieces += [self._item(r, i) for i in items]
            return f"concat_ws({r.sep}, {', '.join(pieces)})"

        return self._by_history(parts)

    def joined(
        self, r: Rendering, head: list[str], tail: list[str], with_system: Optional[Callable[[str], str]] = None
    ) -> str:
        """SQL: concat(*head, the prompt's fragments and tail[0] separated by the rendering's separator, *tail[1:])
        — a whole example in one allocation (a nested concat would copy every example once more)."""

        def parts(items: list[Item]) -> str:
            pieces = []
            if with_system is not None and self.layout.system is not None:
                pieces.append(self.const(with_system(self.layout.system)))
            pieces += [self._item(r, i) for i in items] + [tail[0]]
            spaced = [x for piece in pieces for x in (piece, r.sep)][:-1]
            return f"concat({', '.join(head + spaced + tail[1:])})"

        return self._by_history(parts)

    def _by_history(self, render: Callable[[list[Item]], str]) -> str:
        if self.layout.history == 0:
            return render(self.layout.by_history[0])
        cases = " ".join(f"WHEN {n} THEN {render(items)}" for n, items in enumerate(self.layout.by_history))
        return f"(CASE least(pos, {self.layout.history}) {cases} END)"


def system_chat(text: str) -> str:
    return _json({"role": "system", "content": text})


def system_text(text: str) -> str:
    return f"system: {text}"


def per_turn_line(fmt: str, st: Statement, tools_json: Optional[str] = None, end: str = "''") -> str:
    """SQL: one JSONL line per kept turn (columns of the `h` relation), followed by `end` (SQL, e.g. chr(10))."""
    if fmt == "openai_chat":
        st.use(CHAT)
        return st.joined(CHAT, ["""'{"messages":['"""], [CHAT.target, "']}'", end], system_chat)
    if fmt == "openai_tools":
        r = tools_rendering(st.layout.prompt)
        st.use(r)
        tools = st.const(tools_json or "[]")
        return st.joined(r, ["""'{"messages":['"""], [r.target, """'],"tools":'""", tools, "'}'", end], system_chat)
    if fmt == "vertex_gemini":
        st.use(VERTEX)
        return st.joined(VERTEX, ["'{'", _vertex_system(st), """'"contents":['"""], [VERTEX.target, "']}'", end])
    if fmt == "single_turn":
        st.use(TEXT)
        return (
            f"""concat('{{"prompt_data":{{"content":', {J(st.prompt_parts(TEXT, system_text))}, """
            f"""'}},"response_data":{{"content":', {J(TEXT.target)}, '}}}}', {end})"""
        )
    raise UserError(f"format {fmt!r} is not a JSONL format")


def _vertex_system(st: Statement) -> str:
    if st.layout.system is None:
        return "''"
    sys = _json({"role": "system", "parts": [{"text": st.layout.system}]})
    return st.const(f'"systemInstruction":{sys},')


def multi_turn_line(fmt: str, st: Statement, end: str = "''", tools_json: Optional[str] = None) -> str:
    """SQL aggregate (GROUP BY episode, rows up to the last kept turn): one JSONL line per episode."""
    if fmt == "openai_chat":
        st.use(CHAT)
        head = st.const(system_chat(st.layout.system) + ",") if st.layout.system is not None else "''"
        body = f"string_agg(concat(u_chat, ',', {CHAT.turn}), ',' ORDER BY turn)"
        return f"""concat('{{"messages":[', {head}, {body}, ']}}', {end})"""
    if fmt == "openai_tools":
        r = tools_rendering(st.layout.prompt)
        st.use(r)
        head = st.const(system_chat(st.layout.system) + ",") if st.layout.system is not None else "''"
        tools = st.const(tools_json or "[]")
        body = f"string_agg(concat(u_tools, ',', {r.turn}), ',' ORDER BY turn)"
        return f"""concat('{{"messages":[', {head}, {body}, '],"tools":', {tools}, '}}', {end})"""
    if fmt == "vertex_gemini":
        st.use(VERTEX)
        body = f"string_agg(concat(u_vertex, ',', {VERTEX.turn}), ',' ORDER BY turn)"
        return f"""concat('{{', {_vertex_system(st)}, '"contents":[', {body}, ']}}', {end})"""
    raise UserError(f"format {fmt!r} has no multi-turn form")
