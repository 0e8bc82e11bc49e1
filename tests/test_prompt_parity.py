"""One prompt path: every exported example holds the messages the policy was sent on that turn.

For each prompt template, history window and action mode (and the invalid-reply feedback, reasoning / prediction
stripping), a trace store is written the way the rollout writes it (observations with the invalid-reply note,
replies in the template's format, tool calls, reply problems); each export format is then compared, example by
example, with `prompts.build_messages` called as the policies call it on the same turn's history.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import pytest

from crafter_exp import prompts
from crafter_exp.config import PromptConfig
from crafter_exp.envs import env_instructions
from crafter_exp.parsing import drop_predictions, split_reasoning
from crafter_exp.stages import filter as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from filter_fixtures import build_store, make_episode  # noqa: E402
from test_filter import cfg_for  # noqa: E402

TURNS = 4
SEEDS = (0, 1)


def _actions(t: int) -> list[str]:
    return ["noop", "do"] if t % 3 == 1 else ["move_left"]


def _problem(t: int) -> Optional[str]:
    return "the interact call's arguments are not a JSON object" if t % 3 == 1 else None


def _tool_calls(t: int) -> Optional[list[dict[str, Any]]]:
    if t % 3 == 0:  # one call, arguments as an object (scripted policies, parsed API replies)
        return [{"name": "interact", "arguments": {"actions": _actions(t)}}]
    if t % 3 == 1:  # a call with raw non-JSON arguments and no name, then one with JSON text arguments
        return [{"name": None, "arguments": "noop, do"}, {"name": "interact", "arguments": '{"actions": ["do"]}'}]
    return None  # a text reply in tools mode


def _episodes(prompt: PromptConfig, run_id: str):
    out = []
    for seed in SEEDS:

        def reply(s: int, t: int) -> str:
            text = prompts.format_reply(
                prompt.template, _actions(t), reasoning=f"s{s} t{t}: 'go' \\ \"now\"", prediction="wood +1, energy -1"
            )
            return f"  {text}\n" if t == 2 else text  # outer whitespace is stripped with the reasoning

        def observation(s: int, t: int) -> str:
            obs = f'obs s{s} t{t}\n"tree" 2 steps north\\west\tcafé ✓'
            told = _problem(t - 1) if t and prompt.invalid_feedback else None  # as the rollout shows it
            return prompts.with_note(obs, prompts.invalid_note(told, _actions(t - 1)) if told else None)

        ep = make_episode(run_id, seed, turns=TURNS, reply=reply, observation=observation)
        for t, step in enumerate(ep.steps):
            step.update(
                actions=_actions(t),
                reply_problem=_problem(t),
                tool_calls=_tool_calls(t) if prompt.action_mode == "tools" else None,
            )
        out.append(ep)
    return out


def _reply_out(reply: str, keep_reasoning: bool, keep_predictions: bool) -> str:
    out = reply if keep_reasoning else split_reasoning(reply)[1]
    return out if keep_predictions else drop_predictions(out)


def _policy_prompts(
    prompt: PromptConfig, episodes, *, tool_turns: bool, keep_reasoning: bool = True, keep_predictions: bool = True
):
    """(step, the messages the policy's prompt builder gives for that turn) for every turn, in export order."""
    instructions = env_instructions("crafter")
    if not keep_predictions and prompt.template == "world_model":
        prompt = dataclasses.replace(prompt, template="standard")  # the filter exports these with that prompt
    out = []
    for ep in episodes:
        history: list[tuple[Any, ...]] = []
        for step in ep.steps:
            out.append((step, prompts.build_messages(prompt, instructions, step["observation"], history)))
            reply = _reply_out(step["reply"], keep_reasoning, keep_predictions)
            told = step["reply_problem"] if prompt.invalid_feedback else None
            history.append(
                (step["observation"], reply, step["tool_calls"], prompts.tool_result(step["actions"], told))
                if tool_turns
                else (step["observation"], reply)
            )
    return out


def _context(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(m, weight=0) if m["role"] == "assistant" else m for m in messages]


def _text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _lines(result) -> list[dict]:
    return [json.loads(line) for line in (result.path / "train.jsonl").read_text(encoding="utf-8").splitlines()]


CASES = [
    (template, history, mode, feedback)
    for template in prompts.TEMPLATES
    for history in (0, 2)
    for mode in ("text", "tools")
    for feedback in ((False, True) if history and mode == "tools" else (history == 2,))
]


@pytest.mark.parametrize("template,history,mode,feedback", CASES)
def test_every_format_exports_what_the_policy_was_sent(tmp_path, template, history, mode, feedback):
    prompt = PromptConfig(
        template=template, history=history, action_mode=mode, max_actions_per_turn=2, invalid_feedback=feedback
    )
    home, run_id = tmp_path / "home", "run-parity"
    episodes = _episodes(prompt, run_id)
    build_store(home / "data" / "traces.duckdb", episodes, run_id=run_id, name="exp", prompt=dataclasses.asdict(prompt))
    n = [0]

    def export(*overrides: str):
        n[0] += 1
        cfg = cfg_for(
            home, "filter.step_mode=all", "filter.dedupe=false", *overrides, f"filter.output={tmp_path / str(n[0])}"
        )
        return F.filter_and_export(cfg, progress=False)

    text_turns = _policy_prompts(prompt, episodes, tool_turns=False)
    assert len(text_turns) == len(SEEDS) * TURNS

    # openai_chat, and with reasoning / predictions stripped (history replies stripped the same way)
    # (stripping is checked with a history window: it applies to the history replies and the target alike)
    for keep_reasoning, keep_predictions in ((True, True), (False, True), (True, False))[: 3 if history else 1]:
        got = [
            ex["messages"]
            for ex in _lines(
                export(f"filter.keep_reasoning={keep_reasoning}", f"filter.keep_predictions={keep_predictions}")
            )
        ]
        want = [
            _context(msgs)
            + [{"role": "assistant", "content": _reply_out(step["reply"], keep_reasoning, keep_predictions)}]
            for step, msgs in _policy_prompts(
                prompt, episodes, tool_turns=False, keep_reasoning=keep_reasoning, keep_predictions=keep_predictions
            )
        ]
        assert got == want, (keep_reasoning, keep_predictions)

    # openai_tools: a tools-mode history is sent back as tool-call messages; the target is the executed actions
    for keep_reasoning in (True, False)[: 2 if history else 1]:
        got = _lines(export("filter.format=openai_tools", f"filter.keep_reasoning={keep_reasoning}"))
        tool_turns = _policy_prompts(prompt, episodes, tool_turns=True, keep_reasoning=keep_reasoning)
        assert len(got) == len(tool_turns)
        for ex, (step, msgs) in zip(got, tool_turns):
            assert ex["tools"] == [prompts.interact_tool(None, 2)]
            assert ex["messages"][:-1] == _context(msgs)
            target = ex["messages"][-1]
            call = target["tool_calls"][0]
            assert call["id"] == prompts.call_id(step["turn"], 0) and call["function"]["name"] == "interact"
            assert json.loads(call["function"]["arguments"]) == {"actions": step["actions"]}
            assert target["content"] == (split_reasoning(step["reply"])[0] if keep_reasoning else None)
        if mode == "tools" and history:
            assert any(m["role"] == "tool" for ex in got for m in ex["messages"])

    vertex = _lines(export("filter.format=vertex_gemini"))
    for ex, (step, msgs) in zip(vertex, text_turns, strict=True):
        assert ex["systemInstruction"]["parts"] == [{"text": msgs[0]["content"]}]
        assert ex["contents"] == [
            {"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
            for m in msgs[1:]
        ] + [{"role": "model", "parts": [{"text": step["reply"]}]}]

    single = _lines(export("filter.format=single_turn"))
    assert [(ex["prompt_data"]["content"], ex["response_data"]["content"]) for ex in single] == [
        (_text(msgs), step["reply"]) for step, msgs in text_turns
    ]

    parquet = export("filter.format=parquet")
    rows = [
        row
        for name in ("train", "val")
        if (parquet.path / f"{name}.parquet").exists()
        for row in pd.read_parquet(parquet.path / f"{name}.parquet").to_dict("records")
    ]
    rows.sort(key=lambda row: (row["extra_info"]["seed"], row["extra_info"]["turn"]))
    assert len(rows) == len(text_turns)
    for row, (step, msgs) in zip(rows, text_turns):
        assert [dict(m) for m in row["messages"]] == [
            {"role": m["role"], "content": m["content"], "weight": 0 if m["role"] == "assistant" else None}
            for m in msgs
        ] + [{"role": "assistant", "content": step["reply"], "weight": None}]
        assert row["prompt_data"]["content"] == _text(msgs) and row["response_data"]["content"] == step["reply"]

    # multi-turn: one conversation per episode = the prompt of its last turn with the whole episode as history
    whole = dataclasses.replace(prompt, history=TURNS)
    convo = [msgs for step, msgs in _policy_prompts(whole, episodes, tool_turns=False) if step["turn"] == TURNS - 1]
    got = [ex["messages"] for ex in _lines(export("filter.multi_turn=true"))]
    assert got == [
        [dict(m, weight=1) if m["role"] == "assistant" else m for m in msgs]
        + [{"role": "assistant", "content": ep.steps[-1]["reply"], "weight": 1}]
        for msgs, ep in zip(convo, episodes, strict=True)
    ]


# ------------------------------------------------------------------------- against a real rollout's requests


@pytest.mark.slow
@pytest.mark.parametrize("mode,fmt", [("tools", "openai_tools"), ("text", "openai_chat")])
def test_exported_prompts_are_the_recorded_requests(project, mode, fmt):
    """A rollout against the fake OpenAI server (history 2, invalid-reply feedback), exported: each example's prompt
    is `llm_calls.messages` of the same turn, the messages the policy sent."""
    from conftest import project_overrides
    from fake_openai_server import FakeOpenAIServer, Reply, sequence_responder

    from crafter_exp.config import compose_config
    from crafter_exp.stages.rollout import rollout
    from crafter_exp.store.traces import TraceStore

    def tool(arguments, content=None):
        return Reply(content=content, tool_calls=[{"name": "interact", "arguments": arguments}])

    script = (
        [
            tool({"actions": ["fly"]}, "<think>fly?</think>"),
            tool({"actions": ["do"]}),
            Reply(content="hm"),
            tool('{"actions": ["move_le'),
            tool({"actions": ["do", "noop"]}),
            tool({"actions": ["noop"]}),
        ]
        if mode == "tools"
        else [
            Reply(content="<think>a</think>\n<action>fly</action>"),
            Reply(content="<action>do</action>"),
            Reply(content="I will go left"),
            Reply(content="<think>b</think><action>noop</action>"),
            Reply(content="<action>do</action>"),
        ]
    )
    base = project_overrides(project)
    with FakeOpenAIServer() as srv:
        srv.responder = sequence_responder(script)
        cfg = compose_config(
            base
            + [
                "model=openai",
                f"model.base_url={srv.base_url}",
                "model.model=fake-model",
                "model.probe=false",
                "model.concurrency=1",
                "model.max_retries=0",
                "model.timeout=5",
                "env.episodes=1",
                f"env.max_steps={len(script)}",
                "tracking.enabled=false",
                f"model.prompt.action_mode={mode}",
                "model.prompt.history=2",
                "model.prompt.invalid_feedback=true",
            ]
        )
        run_id = rollout(cfg).run_id
    calls = TraceStore(cfg.paths.db).query(
        f"SELECT turn, messages FROM llm_calls WHERE run_id = '{run_id}' ORDER BY turn, call_index"
    )
    sent = {int(t): json.loads(m) for t, m in zip(calls.turn, calls.messages)}  # the last call of a turn counts
    assert len(sent) == len(script)
    assert any(
        m["content"].startswith("Your last reply was invalid")
        for msgs in sent.values()
        for m in msgs
        if m["role"] == "user"
    )
    fcfg = compose_config(
        base
        + [
            "tracking.enabled=false",
            f"filter.runs=[{run_id}]",
            f"filter.format={fmt}",
            "filter.step_mode=all",
            "filter.drop_unparsed=false",
            "filter.val_fraction=0",
            f"filter.output={project / 'export'}",
        ]
    )
    got = _lines(F.filter_and_export(fcfg, progress=False))
    assert len(got) == len(script)
    for turn, ex in enumerate(got):
        prompt = [{k: v for k, v in m.items() if k != "weight"} for m in ex["messages"][:-1]]
        assert prompt == sent[turn], turn
    if mode == "tools":
        assert any(m["role"] == "tool" for ex in got for m in ex["messages"])


@pytest.mark.parametrize(
    "reply",
    [
        "<think> a </think>\n<action>do</action>",
        "<THINK>x\ny</think> b <think>z",
        "<think>cut at max_tokens\n",
        " \x0b<think></think>do\t",
        "<think>a</think>\n<prediction>wood +1</prediction>\n<action>do</action>",
        "x<prediction>p</prediction><prediction>q</prediction> y",
        "",
        "no think, it's plain  ",
        "café <think>✓</think>",
        "\u00a0<action>do</action>\u00a0",
    ],
)
def test_reply_stripping_is_the_same_in_python_and_in_the_export_sql(reply):
    import duckdb

    from crafter_exp.parsing import drop_predictions_sql, reasoning_sql, strip_reasoning_sql

    got = (
        duckdb.connect()
        .execute(
            f"SELECT {strip_reasoning_sql('$r')}, {reasoning_sql('$r')}, {drop_predictions_sql('$r')}", {"r": reply}
        )
        .fetchone()
    )
    reasoning, stripped = split_reasoning(reply)
    assert got == (stripped, reasoning, drop_predictions(reply))
