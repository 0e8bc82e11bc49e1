"""model.stream=true against a loopback server sending server-sent events: chunks assembled into the record a plain
reply gives; a stream that breaks half-way is a failed attempt, retried, then the decision's error (one line).

(The real server, `transformers serve`, streams in tests/test_transformers_serve.py; this one breaks on demand.)
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from crafter_exp.config import OpenAIModelConfig, PromptConfig
from crafter_exp.policies import Turn, make_policy


def chunk(delta: dict, finish=None, usage=None) -> bytes:
    body = {
        "id": "x",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        body = {**body, "choices": [], "usage": usage}
    return f"data: {json.dumps(body)}\n\n".encode()


GOOD = [
    chunk({"role": "assistant"}),
    chunk({"content": "<think>wood "}),
    chunk({"content": "first</think><action>do</action>", "reasoning_content": "trees give wood"}),
    chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "interact", "arguments": '{"actions": '}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '["do"]}'}}]}, finish="stop"),
    chunk({}, usage={"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}),
    b"data: [DONE]\n\n",
]
BROKEN = [chunk({"role": "assistant"}), chunk({"content": "<action>d"}), b"data: {not json\n\n"]


@pytest.fixture
def sse_server():
    state = {"events": GOOD, "bodies": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            state["bodies"].append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for event in state["events"]:
                self.wfile.write(event)
                self.wfile.flush()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


def policy(url: str):
    cfg = OpenAIModelConfig(
        base_url=url,
        model="m",
        stream=True,
        probe=False,
        max_retries=0,
        timeout=10.0,
        max_consecutive_errors=2,
        prompt=PromptConfig(),
    )
    p = make_policy(cfg, 0)
    p.start()
    return p


TURN = Turn(episode=0, observation="a tree ahead", actions=["noop", "do"], instructions="Play.")


def test_streamed_reply_is_assembled_like_a_plain_one(sse_server):
    p = policy(sse_server["url"])
    try:
        [decision] = p.act([TURN])
    finally:
        p.close()
    assert decision.error is None
    assert decision.reply == "<think>wood first</think><action>do</action>"
    assert decision.reasoning == "trees give wood"  # the reasoning field wins over <think>, as in a plain reply
    assert decision.tool_calls == [{"name": "interact", "arguments": {"actions": ["do"]}}]
    call = decision.calls[0]
    assert (call.prompt_tokens, call.completion_tokens) == (11, 7) and call.response["streamed"] is True
    sent = sse_server["bodies"][0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_a_stream_broken_half_way_is_retried_then_one_line(sse_server):
    sse_server["events"] = BROKEN
    p = policy(sse_server["url"])
    try:
        [decision] = p.act([TURN])
    finally:
        p.close()
    assert len(decision.calls) == 2 and len(sse_server["bodies"]) == 2  # max_consecutive_errors attempts
    assert decision.error.startswith("stream broken:") and "\n" not in decision.error
    assert decision.reply == ""
