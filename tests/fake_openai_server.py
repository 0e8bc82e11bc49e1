"""A real chat-completions HTTP server on 127.0.0.1 for tests and benchmarks: scripted replies, injected faults.

It speaks the OpenAI wire format closely enough for the `openai` client (POST /v1/chat/completions, GET
/v1/models): `choices[0].message` with `content`, `tool_calls` and a reasoning field, `usage` with reasoning
tokens. Replies come from a `responder(body) -> Reply` (default: a fixed rotation of Crafter moves, in the
format the request asks for: an `interact` tool call when tools are offered, else `<think>` + `<action>`).

Faults are queued with `inject(kind, times=...)` and consumed by the next requests, in order:
  429 (with Retry-After), 500, 503, slow (sleeps past the client's timeout), reset (TCP RST, no response),
  non_json (200 with an HTML body), no_choices (200 with `choices: []`), 401, 404 (unknown model).
`fail_after(n, kind)` makes every request after the first n fail with `kind` (an endpoint that goes down).
`flaky(rate, kinds)` makes each later request fail with probability `rate` (seeded), with one of `kinds`.
Bad replies (unknown actions, too many, empty, cut at max_tokens, broken tool arguments, reasoning only) are
plain `Reply`s: `sequence_responder([...])` plays a script of them in order.
Independently of injected faults, a wrong bearer key gives 401 (when `api_key` is set) and a model not in
`models` gives 404, as real endpoints do.

Run standalone (benchmarks): `python tests/fake_openai_server.py --port 8765 --latency 0.1`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

DEFAULT_MOVES = ["move_left", "do", "move_up", "do", "move_right", "noop"]
FAULTS = ("429", "500", "503", "slow", "reset", "non_json", "no_choices", "401", "404")


@dataclass
class Reply:
    """One scripted assistant message."""

    content: Optional[str] = None
    tool_calls: Optional[list[dict[str, Any]]] = None
    """`[{"name": ..., "arguments": {...} or "json text"}]`; ids and wire shape are added by the server."""
    reasoning: Optional[str] = None
    """Sent in `reasoning_field` (a reasoning model's separate field)."""
    reasoning_field: str = "reasoning_content"
    """`reasoning_content` (vLLM, DeepSeek) or `reasoning` (Groq, OpenRouter)."""
    prompt_tokens: Optional[int] = None
    """Usage override; default: a word count of the messages."""
    completion_tokens: Optional[int] = None
    reasoning_tokens: Optional[int] = None
    finish_reason: Optional[str] = None
    """Sent as `choices[0].finish_reason`; default `tool_calls` with tool calls, else `stop` (`length` = cut)."""


@dataclass
class Fault:
    kind: str
    retry_after: Optional[float] = None
    """Seconds sent as `Retry-After` (429/500/503); keeps the client's backoff short in tests."""
    sleep: float = 5.0
    """slow: seconds before answering (set beyond the client's timeout)."""
    not_before: int = 0
    """Index of the first request this fault may hit."""


def _words(text: Any) -> int:
    return len(str(text or "").split())


def rotation_responder(moves: Optional[list[str]] = None) -> Callable[[dict[str, Any]], Reply]:
    """Replies cycling through `moves`, shaped after the request (tool call when tools are offered)."""
    cycle = itertools.cycle(moves or DEFAULT_MOVES)
    lock = threading.Lock()

    def respond(body: dict[str, Any]) -> Reply:
        with lock:
            action = next(cycle)
        if body.get("tools"):
            return Reply(content=None, tool_calls=[{"name": "interact", "arguments": {"actions": [action]}}])
        system = str((body.get("messages") or [{}])[0].get("content", ""))
        if "<prediction>" in system:
            return Reply(
                content=f"<think>Try {action}.</think>\n<prediction>Much the same view.</prediction>\n"
                f"<action>{action}</action>"
            )
        return Reply(content=f"<think>Try {action}.</think>\n<action>{action}</action>")

    return respond


def sequence_responder(replies: list[Reply]) -> Callable[[dict[str, Any]], Reply]:
    """The scripted replies in order, then again from the start (one episode at a time: reply i = turn i)."""
    cycle = itertools.cycle(replies)
    lock = threading.Lock()

    def respond(body: dict[str, Any]) -> Reply:
        with lock:
            return next(cycle)

    return respond


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen backlog: socketserver's 5 drops connections when 64 clients connect at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # resets and clients that gave up (timeouts) break pipes on purpose


class FakeOpenAIServer:
    """Context manager: `with FakeOpenAIServer() as srv: srv.base_url` -> "http://127.0.0.1:PORT/v1"."""

    def __init__(
        self,
        models: tuple[str, ...] = ("fake-model",),
        api_key: Optional[str] = None,
        responder: Optional[Callable[[dict[str, Any]], Reply]] = None,
        latency: float = 0.0,
        port: int = 0,
        record_bodies: bool = True,
    ):
        self.models = set(models)
        self.api_key = api_key
        self.responder = responder or rotation_responder()
        self.latency = latency
        self.record_bodies = record_bodies
        self.requests: list[dict[str, Any]] = []
        """Every chat request received, in order: {body, headers (authorization removed), status, fault}."""
        self.handle_times: list[float] = []
        """Server-side seconds spent per answered request (latency sleeps excluded)."""
        self.in_flight = 0
        self.max_in_flight = 0
        """Most chat requests being answered at the same time (what client-side concurrency achieved)."""
        self._faults: deque[Fault] = deque()
        self._fail_after: Optional[tuple[int, Fault]] = None
        self._flaky: Optional[tuple[float, tuple[str, ...], random.Random]] = None
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._httpd = _QuietServer(("127.0.0.1", port), self._handler_class())
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------------------------------- control

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            args=(0.05,),
            name="fake-openai",
            daemon=True,  # fast shutdown
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def inject(
        self, kind: str, times: int = 1, retry_after: Optional[float] = None, sleep: float = 5.0, after: int = 0
    ) -> None:
        """Queue `times` faults of `kind` for the next requests (skipping the next `after` requests)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r} (known: {', '.join(FAULTS)})")
        with self._lock:
            start = len(self.requests) + after
            self._faults.extend(Fault(kind, retry_after, sleep, start) for _ in range(times))

    def fail_after(self, n: int, kind: str = "500", retry_after: Optional[float] = None) -> None:
        """Answer the first n chat requests (counted from now), then fail every later one with `kind`."""
        with self._lock:
            self._fail_after = (len(self.requests) + n, Fault(kind, retry_after))

    def flaky(self, rate: float, kinds: tuple[str, ...] = ("non_json", "no_choices"), seed: int = 0) -> None:
        """From now on each request fails with probability `rate`, with a kind drawn from `kinds` (seeded)."""
        unknown = [k for k in kinds if k not in FAULTS]
        if unknown or not 0 <= rate <= 1:
            raise ValueError(f"flaky: rate must be in [0, 1] and kinds known, got {rate}, {unknown}")
        with self._lock:
            self._flaky = (rate, tuple(kinds), random.Random(seed))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._fail_after = None
            self._flaky = None

    def _next_fault(self, index: int) -> Optional[Fault]:
        with self._lock:
            if self._faults and index >= self._faults[0].not_before:
                return self._faults.popleft()
            if self._fail_after is not None and index >= self._fail_after[0]:
                return self._fail_after[1]
            if self._flaky is not None:
                rate, kinds, rng = self._flaky
                if rng.random() < rate:
                    return Fault(rng.choice(kinds))
        return None

    # ------------------------------------------------------------------------------------------- replies

    def completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        """The chat.completion JSON for a scripted reply."""
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{next(self._ids)}",
                    "type": "function",
                    "function": {
                        "name": tc["name"],
                        "arguments": tc["arguments"]
                        if isinstance(tc["arguments"], str)
                        else json.dumps(tc["arguments"]),
                    },
                }
                for tc in reply.tool_calls
            ]
        if reply.reasoning is not None:
            message[reply.reasoning_field] = reply.reasoning
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = sum(_words(m.get("content")) for m in body.get("messages", []))
        reasoning = reply.reasoning_tokens if reply.reasoning_tokens is not None else _words(reply.reasoning)
        completion = reply.completion_tokens
        if completion is None:
            completion = _words(reply.content) + sum(_words(json.dumps(t)) for t in reply.tool_calls or []) + reasoning
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop"),
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "completion_tokens_details": {"reasoning_tokens": reasoning},
            },
        }

    # ------------------------------------------------------------------------------------------- handler

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: Any, headers: Optional[dict[str, str]] = None) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, code: str, headers: Optional[dict[str, str]] = None):
                self._send(status, {"error": {"message": message, "type": code, "code": code}}, headers)

            def _reset(self) -> None:
                # SO_LINGER 0 + close = TCP RST: the client sees "connection reset by peer"
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    data = [{"id": m, "object": "model", "owned_by": "fake"} for m in sorted(server.models)]
                    self._send(200, {"object": "list", "data": data})
                else:
                    self._error(404, f"no route {self.path}", "not_found")

            def do_POST(self) -> None:
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._chat()
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _chat(self) -> None:
                t0 = time.perf_counter()
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._error(404, f"no route {self.path}", "not_found")
                    return
                body = json.loads(raw or b"{}")
                headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
                with server._lock:
                    index = len(server.requests)
                    entry = {"body": body if server.record_bodies else None, "headers": headers}
                    server.requests.append(entry)
                fault = server._next_fault(index)
                entry["fault"] = fault.kind if fault else None
                got_key = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
                retry = {"Retry-After": str(fault.retry_after)} if fault and fault.retry_after is not None else {}
                if fault and fault.kind == "reset":
                    self._reset()
                    return
                if fault and fault.kind == "slow":
                    time.sleep(fault.sleep)
                if (server.api_key is not None and got_key != server.api_key) or (fault and fault.kind == "401"):
                    # real providers echo (part of) the key they got: the client must not store it
                    self._error(401, f"Incorrect API key provided: {got_key}.", "invalid_api_key")
                    return
                if body.get("model") not in server.models or (fault and fault.kind == "404"):
                    msg = f"The model `{body.get('model')}` does not exist or you do not have access to it."
                    self._error(404, msg, "model_not_found")
                    return
                if fault and fault.kind == "429":
                    self._error(429, "Rate limit reached, slow down.", "rate_limit_exceeded", retry)
                    return
                if fault and fault.kind in ("500", "503"):
                    self._error(int(fault.kind), "The server had an error.", "server_error", retry)
                    return
                if server.latency:
                    time.sleep(server.latency)
                if fault and fault.kind == "non_json":
                    self._send(200, b"<html><body>502 Bad Gateway</body></html>")
                    return
                if fault and fault.kind == "no_choices":
                    self._send(
                        200,
                        {
                            "id": "chatcmpl-x",
                            "object": "chat.completion",
                            "model": body["model"],
                            "choices": [],
                            "usage": None,
                        },
                    )
                    return
                payload = server.completion(body, server.responder(body))
                entry["status"] = 200
                self._send(200, payload)
                server.handle_times.append(time.perf_counter() - t0 - server.latency)

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--models", default="fake-model", help="comma-separated model names served")
    args = parser.parse_args()
    srv = FakeOpenAIServer(
        models=tuple(args.models.split(",")), latency=args.latency, port=args.port, record_bodies=False
    )
    print(f"serving {srv.base_url}", flush=True)
    try:
        srv._httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
