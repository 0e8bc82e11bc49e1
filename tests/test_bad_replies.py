"""Bad replies through the whole episode loop: real rollouts (stage rollout, model=openai) against the loopback
chat server (tests/fake_openai_server.py) replying with scripted bad replies, checked in DuckDB and in compare.

One episode per rollout, one request in flight, no probe: reply i of the script answers turn i.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import project_overrides
from fake_openai_server import FakeOpenAIServer, Reply, sequence_responder

from crafter_exp.config import compose_config
from crafter_exp.parsing import parse_reply_why
from crafter_exp.prompts import build_messages
from crafter_exp.store.traces import TraceStore

CRAFTER_ACTIONS = {"noop", "move_left", "move_right", "move_up", "move_down", "do"}


def canonical(text: str):
    return text.strip().lower() if text.strip().lower() in CRAFTER_ACTIONS else None


def tool(arguments, **kw) -> Reply:
    return Reply(tool_calls=[{"name": "interact", "arguments": arguments}], **kw)


def play(home, srv, script, *extra, steps=None, episodes=1):
    """A real rollout of `episodes` x len(script) turns; returns (store, run_id)."""
    from crafter_exp.stages.rollout import rollout

    srv.responder = sequence_responder(script)
    cfg = compose_config(
        project_overrides(home)
        + [
            "model=openai",
            f"model.base_url={srv.base_url}",
            "model.model=fake-model",
            "model.probe=false",
            "model.concurrency=1",
            "model.max_retries=2",
            "model.timeout=5",
            f"env.episodes={episodes}",
            f"env.max_steps={steps or len(script)}",
            "tracking.enabled=false",
        ]
        + list(extra)
    )
    result = rollout(cfg)
    return TraceStore(cfg.paths.db), result.run_id, cfg


def steps_of(store, run_id):
    return store.query(f"SELECT * FROM steps WHERE run_id = '{run_id}' ORDER BY seed, turn")


def problems(steps) -> list:
    return [None if p is None or p != p else p for p in steps.reply_problem]  # NULL reads back as NaN


def episode_of(store, run_id):
    [row] = store.query(f"SELECT * FROM episodes WHERE run_id = '{run_id}'").to_dict("records")
    return row


# ------------------------------------------------------------------------------------------------ parser


@pytest.mark.parametrize(
    "reply, tool_calls, kw, actions, problem",
    [
        ("", None, {}, [], "the reply was empty"),
        ("<think>wood first</think>", None, {}, [], "the reply held only reasoning, no action"),
        ("", None, {"reasoning": "wood first"}, [], "the reply held only reasoning, no action"),
        ("<action>fly</action>", None, {}, [], "'fly' is not a valid action"),
        ("<action>move_left</action><action>do</action>", None, {}, ["move_left"], "2 actions given, at most 1"),
        ("<action>move_left, do</action>", None, {}, ["move_left"], "2 actions given, at most 1"),
        ("<action>do, do, noop</action>", None, {"max_actions": 2}, ["do", "do"], "3 actions given, at most 2"),
        ("<think>a long thought that never", None, {"truncated": True}, [], "cut at max_tokens"),
        ("ACTION: move_le", None, {"truncated": True}, [], "cut at max_tokens"),  # never read as a cut word
        ("do", None, {"truncated": True}, ["do"], None),  # one whole action name, cut right after it (bare template)
        ("<action>do</action>\n<predic", None, {"truncated": True}, ["do"], None),  # the action was complete
        ("I will go left", None, {}, [], "no action found in the reply"),
        ("", [{"name": "interact", "arguments": {}}], {}, [], "has no `actions` argument"),
        ("", [{"name": "interact", "arguments": {"acts": ["do"]}}], {}, [], "has no `actions` argument"),
        ("", [{"name": "interact", "arguments": '{"actions": ["mo'}], {}, [], "arguments are not JSON"),
        ("", [{"name": "interact", "arguments": '{"actions": ["mo'}], {"truncated": True}, [], "cut at max_tokens"),
        ("", [{"name": "interact", "arguments": "[1]"}], {}, [], "arguments are not a JSON object"),
        ("", [{"name": "interact", "arguments": {"actions": ["do", "noop"]}}], {}, ["do"], "2 actions given"),
        ("", [{"name": "interact", "arguments": {"actions": ["do"]}}], {}, ["do"], None),
    ],
)
def test_each_bad_reply_is_named(reply, tool_calls, kw, actions, problem):
    got, ok, why = parse_reply_why(reply, tool_calls, canonical, **kw)
    assert got == actions and ok == (problem is None)
    assert (why is None) if problem is None else (problem in why and "\n" not in why)


# ----------------------------------------------------------------------------------------- through rollouts


@pytest.mark.slow
def test_text_mode_bad_replies_fall_back_and_are_counted(project):
    script = [
        Reply(content="<think>fly away</think>\n<action>fly</action>"),  # unknown action
        Reply(content="<action>move_left</action>\n<action>do</action>"),  # two where one is allowed
        Reply(content=""),  # empty
        Reply(content="<think>I should first consider every", finish_reason="length"),  # cut at max_tokens
        Reply(content="", reasoning="the tree is left"),  # reasoning only
        Reply(content="<action>do</action>"),
        Reply(content="<action>do</action>"),
    ]
    with FakeOpenAIServer() as srv:
        store, run_id, _ = play(project, srv, script)
    steps = steps_of(store, run_id)
    assert [list(a) for a in steps.actions] == [["noop"], ["move_left"], ["noop"], ["noop"], ["noop"], ["do"], ["do"]]
    assert list(steps.parse_ok) == [False] * 5 + [True] * 2
    why = problems(steps)
    assert why[0] == "'fly' is not a valid action"
    assert why[1].startswith("2 actions given, at most 1 allowed")
    assert why[2:5] == [
        "the reply was empty",
        "the reply was cut at max_tokens before a complete action",
        "the reply held only reasoning, no action",
    ]
    assert why[5:] == [None, None]
    assert list(steps.reply)[2] == "" and steps.reasoning.iloc[4] == "the tree is left"  # stored verbatim
    ep = episode_of(store, run_id)
    # repeated: turn 3 and 4 (noop after noop), turn 6 (do after do)
    assert (ep["parse_failures"], ep["invalid_actions"], ep["repeated_actions"]) == (5, 0, 3)
    assert (ep["steps"], ep["turns"], ep["termination"]) == (7, 7, "max_steps")
    # off by default: the agent is not told
    assert not steps.observation.str.contains("invalid").any()


@pytest.mark.slow
def test_several_actions_per_turn_are_capped_and_cut_at_max_steps(project):
    script = [
        Reply(content="<action>move_left, do, noop, do</action>"),  # 4 where 3 are allowed
        Reply(content="<action>do</action>\n<action>do</action>\n<action>move_right</action>"),
    ]  # 3 allowed
    with FakeOpenAIServer() as srv:
        store, run_id, _ = play(project, srv, script, "model.prompt.max_actions_per_turn=3", steps=5)
    steps = steps_of(store, run_id)
    # the first 3 of 4; then 3 valid actions of which only 2 fit before max_steps=5
    assert [list(a) for a in steps.actions] == [["move_left", "do", "noop"], ["do", "do"]]
    assert list(steps.parse_ok) == [False, True] and list(steps.step) == [0, 3]
    assert steps.reply_problem.iloc[0] == "4 actions given, at most 3 allowed (the first 3 played)"
    ep = episode_of(store, run_id)
    assert (ep["steps"], ep["turns"], ep["termination"], ep["parse_failures"]) == (5, 2, "max_steps", 1)
    assert json.loads(ep["action_counts"]) == {"move_left": 1, "do": 3, "noop": 1}


@pytest.mark.slow
def test_tools_mode_bad_calls_and_history_sent_as_tool_call_messages(project):
    script = [
        tool({}),  # missing argument
        tool('{"actions": ["move_le', finish_reason="length"),  # cut inside the arguments
        tool({"actions": ["fly"]}),  # unknown action
        tool({"actions": ["do", "move_left"]}),  # two where one is allowed
        Reply(content=None, reasoning="thinking about trees"),  # reasoning only, no call
        tool({"actions": ["do"]}),
    ]
    with FakeOpenAIServer() as srv:
        store, run_id, _ = play(project, srv, script, "model.prompt.action_mode=tools", "model.prompt.history=2")
        bodies = [r["body"] for r in srv.requests]
    steps = steps_of(store, run_id)
    assert [list(a) for a in steps.actions] == [["noop"], ["noop"], ["noop"], ["do"], ["noop"], ["do"]]
    why = problems(steps)
    assert "has no `actions` argument" in why[0]
    assert why[1] == "the reply was cut at max_tokens inside the tool call's arguments"
    assert why[2] == "'fly' is not a valid action" and why[3].startswith("2 actions given")
    assert why[4] == "the reply held only reasoning, no action" and why[5] is None
    ep = episode_of(store, run_id)
    assert (ep["parse_failures"], ep["repeated_actions"], ep["invalid_actions"]) == (5, 2, 0)

    # turn 4's request: two earlier turns as assistant tool_calls + tool results, never an empty text reply
    messages = bodies[4]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "user", "assistant", "tool", "user"]
    first, second = messages[2], messages[5]
    assert first["tool_calls"][0]["id"] == "call_2_0" and messages[3]["tool_call_id"] == "call_2_0"
    assert json.loads(first["tool_calls"][0]["function"]["arguments"]) == {"actions": ["fly"]}
    assert first["tool_calls"][0]["function"]["name"] == "interact" and first["content"] is None
    assert json.loads(second["tool_calls"][0]["function"]["arguments"]) == {"actions": ["do", "move_left"]}
    assert messages[3]["content"] == "Played: noop." and messages[6]["content"] == "Played: do."
    # turn 2 sees turn 1's cut arguments as {} (not JSON: servers that parse arguments would refuse the request)
    assert bodies[2]["messages"][5]["tool_calls"][0]["function"]["arguments"] == "{}"
    # turn 5 sees turn 4 (no tool call) as the text it was: an assistant message without tool_calls
    assert "tool_calls" not in bodies[5]["messages"][5] and bodies[5]["messages"][5]["role"] == "assistant"
    # the ids stay with their turn as the window moves on (turn 3 is call_3_0 in turns 4 and 5)
    assert bodies[5]["messages"][2]["tool_calls"][0]["id"] == "call_3_0"


def test_text_mode_history_is_unchanged_by_tool_history():
    from crafter_exp.config import PromptConfig

    past = [
        ("obs 0", "<action>do</action>", None, "Played: do."),
        ("obs 1", "", [{"name": "interact", "arguments": {"actions": ["noop"]}}], "Played: noop."),
    ]
    text = build_messages(PromptConfig(history=2), "rules", "obs 2", past)
    assert [(m["role"], m["content"]) for m in text[1:]] == [
        ("user", "obs 0"),
        ("assistant", "<action>do</action>"),
        ("user", "obs 1"),
        ("assistant", ""),
        ("user", "obs 2"),
    ]
    tools = build_messages(PromptConfig(history=2, action_mode="tools"), "rules", "obs 2", past)
    assert [m["role"] for m in tools[1:]] == ["user", "assistant", "user", "assistant", "tool", "user"]
    assert tools[4]["tool_calls"][0]["id"] == "call_1_0" == tools[5]["tool_call_id"]


@pytest.mark.slow
def test_invalid_feedback_tells_the_agent_why_and_is_recorded(project):
    script = [
        Reply(content="<action>fly</action>"),
        Reply(content="<action>do</action>"),
        Reply(content="<action>do</action>"),
    ]
    with FakeOpenAIServer() as srv:
        store, on_id, _ = play(project, srv, script, "model.prompt.invalid_feedback=true")
        sent = [r["body"]["messages"][-1]["content"] for r in srv.requests]
        _, off_id, _ = play(project, srv, script)
        sent_off = [r["body"]["messages"][-1]["content"] for r in srv.requests[3:]]
    assert on_id != off_id  # it changes what is played: its own run
    note = "Your last reply was invalid: 'fly' is not a valid action. Played: noop.\n\n"
    on, off = steps_of(store, on_id), steps_of(store, off_id)
    assert sent[1].startswith(note) and on.observation.iloc[1].startswith(note)  # sent = stored
    assert sent[1][len(note) :] == off.observation.iloc[1] == sent_off[1]  # the env's text follows unchanged
    assert not sent[0].startswith("Your last") and not sent[2].startswith("Your last")  # only after a bad reply
    assert not any(s.startswith("Your last") for s in sent_off)
    runs = store.runs().set_index("run_id")
    assert json.loads(runs.loc[on_id, "config"])["model"]["prompt"]["invalid_feedback"] is True
    assert json.loads(runs.loc[off_id, "config"])["model"]["prompt"]["invalid_feedback"] is False

    # compare reports the counts the store holds, per run
    from crafter_exp.stages.compare import compare

    cfg = compose_config(
        project_overrides(project)
        + ["compare.bootstrap=200", "compare.permutations=199", "compare.figures=false", "tracking.enabled=false"]
    )
    result = compare(cfg, [off_id, on_id], labels=["off", "on"])
    for label in ("off", "on"):
        assert result.value(label, "parse_failure_rate") == pytest.approx(100 / 3)
        assert result.value(label, "repeated_action_rate") == pytest.approx(100 / 3)
        assert result.value(label, "invalid_action_rate") == 0.0


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("alfworld") is None, reason="alfworld not installed")
def test_alfworld_inadmissible_command_is_invalid_and_the_note_says_so(project):
    from crafter_exp.envs.alfworld.data import resolve_data_path

    try:
        resolve_data_path(None)
    except ValueError:
        pytest.skip("no ALFWorld game data")
    script = [Reply(content="<action>open unicorn 1</action>"), Reply(content="<action>look</action>")]
    with FakeOpenAIServer() as srv:
        store, run_id, _ = play(
            project,
            srv,
            script,
            "env=alfworld",
            "env.split=eval_in_distribution",
            "env.seed=72",
            "model.prompt.invalid_feedback=true",
        )
    steps = steps_of(store, run_id)
    assert list(steps.valid) == [False, True] and list(steps.parse_ok) == [True, True]
    assert steps.reply_problem.iloc[0] == "'open unicorn 1' could not be done (not admissible now)"
    assert steps.observation.iloc[1].startswith("Your last reply was invalid: 'open unicorn 1' could not be done")
    ep = episode_of(store, run_id)
    assert (ep["invalid_actions"], ep["parse_failures"]) == (1, 0)


@pytest.mark.slow
def test_transient_malformed_replies_cost_no_episode(project):
    """~25 % of replies are malformed 200s (HTML bodies, no choices): every episode completes."""
    with FakeOpenAIServer() as srv:
        srv.flaky(0.25, seed=3)
        store, run_id, _ = play(
            project,
            srv,
            [Reply(content="<action>do</action>")],
            "model.concurrency=4",
            "model.max_retries=3",
            steps=8,
            episodes=4,
        )
        faults = sum(r["fault"] is not None for r in srv.requests)
    eps = store.query(f"SELECT * FROM episodes WHERE run_id = '{run_id}'")
    assert len(eps) == 4 and set(eps.termination) == {"max_steps"} and set(eps.steps) == {8}
    calls = store.query(f"SELECT * FROM llm_calls WHERE run_id = '{run_id}'")
    assert len(calls) == 4 * 8 and calls.error.isna().all()  # one call per turn: retried inside the client
    assert faults >= 4 and calls.retries.sum() == faults  # each malformed reply was one client retry


def test_the_malformed_check_leaves_streams_and_other_routes_alone():
    """The transport under the client reads only plain chat-completions 200s: a server-sent stream passes unread."""
    import asyncio
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from crafter_exp.policies.openai_policy import _MalformedAsRetryable, httpx2

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            stream = self.path.endswith("/stream/chat/completions")
            data = b'data: {"choices": []}\n\n' if stream else b"<html>502</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream" if stream else "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"

    async def send(path: str):
        transport = _MalformedAsRetryable(httpx2.AsyncHTTPTransport())
        try:
            response = await transport.handle_async_request(httpx2.Request("POST", base + path, content=b"{}"))
            consumed = response.is_stream_consumed
            return response.status_code, consumed, await response.aread()
        finally:
            await transport.aclose()

    try:
        assert asyncio.run(send("/v1/stream/chat/completions")) == (200, False, b'data: {"choices": []}\n\n')
        assert asyncio.run(send("/v1/files"))[:2] == (200, False)  # not a chat completion: not looked at
        status, _, body = asyncio.run(send("/v1/chat/completions"))
        assert status == 502 and b"malformed 200 response: response is not JSON" in body
    finally:
        httpd.shutdown()
        httpd.server_close()
