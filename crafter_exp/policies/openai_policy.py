"""model=openai: play with any OpenAI-compatible chat-completions endpoint, many episodes' requests in flight.

The runner hands over each episode's turn as soon as that episode is ready (`submit`, a Future per turn; `act` does
a batch at once); the policy sends the requests concurrently (at most `concurrency` in flight) on an asyncio loop it
owns in a background thread — a thread, not `run_until_complete`, so it also works where the caller already runs a
loop (notebooks, async actors) and the runner steps environments while replies are on their way.

Faults: the `openai` client retries 408/409/429/5xx, timeouts and connection errors itself (`max_retries`,
exponential backoff honouring Retry-After). A malformed 200 — a body that isn't a JSON object, or has no
`choices[0].message` — is a server fault too: the transport under the client turns it into a retryable 502
(`_MalformedAsRetryable`), so it gets the client's own retry budget and backoff, exactly as a 5xx does. The
client's retries used up is one failed attempt; a decision makes up to `max_consecutive_errors` attempts in a
row before it gives up with `Decision.error` (the runner then ends the episode `api_error`). Errors that no retry
fixes (400/401/403/404/422) end the decision at once. Every attempt is an `LLMCall`.
With `stream: true` the reply is requested as server-sent chunks and assembled into the same record (the
malformed-200 check leaves streams alone: a stream that breaks midway is one failed attempt).

Secrets: the key is read from `os.environ[cfg.api_key_env]` when the client starts and is scrubbed from every
response body and error text this module produces (providers echo the key they got in 401 messages).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlparse

import openai

try:  # the HTTP library under the openai client: httpx2 in openai 3.x, httpx before (the same API)
    import httpx2
except ImportError:  # pragma: no cover - older openai
    import httpx as httpx2  # type: ignore[no-redef]

from crafter_exp.errors import UserError
from crafter_exp.parsing import split_reasoning
from crafter_exp.policies.base import Decision, LLMCall, Policy, Turn
from crafter_exp.policies.pricing import call_cost, check_prices
from crafter_exp.prompts import build_messages, check_template, interact_tool

if TYPE_CHECKING:
    from crafter_exp.config import OpenAIModelConfig

log = logging.getLogger(__name__)

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
LOCAL_DUMMY_KEY = "no-key-needed"  # local servers (vLLM, Ollama) usually ignore the key, the client wants one
DEFAULT_BASE_URL = "https://api.openai.com/v1"
FATAL_STATUS = {400, 401, 403, 404, 422}  # retrying cannot fix these
REASONING_FIELDS = ("reasoning_content", "reasoning")  # vLLM/DeepSeek; Groq/OpenRouter/newer vLLM
ACTION_MODES = ("text", "tools")
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
ERROR_BODY_CHARS = 200
# httpx's connection pool scans every pooled connection for each request it assigns, so one pool with many
# connections costs O(in-flight) CPU per call (measured: 1.5 ms/call at 8 in flight, 2.7 ms at 64); requests are
# spread round-robin over clients of at most this many connections each.
CONNECTIONS_PER_CLIENT = 8

# HTTP requests sent by the current task: the client's retries happen inside one `create` call, so an httpx
# request hook counting into a per-task (contextvar) counter gives the retry count even when the call fails.
_requests_sent: ContextVar[Optional[list[int]]] = ContextVar("crafter_exp_openai_requests", default=None)


async def _count_request(request: Any) -> None:
    counter = _requests_sent.get()
    if counter is not None:
        counter[0] += 1


class _BadResponse(Exception):
    """A 200 the client accepted but that holds no usable reply (not JSON, no choices)."""


MALFORMED_HEADER = "x-crafter-exp-malformed"  # marks the 502 that stands for a malformed 200


def malformed_reason(content: bytes) -> Optional[str]:
    """Why a chat-completions 200 body holds no usable reply (None when it is usable)."""
    text = content.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return f"response is not JSON: {_one_line(text, ERROR_BODY_CHARS)!r}"
    if not isinstance(data, dict):
        return f"response is not a JSON object: {_one_line(text, ERROR_BODY_CHARS)!r}"
    choices = data.get("choices")
    if (
        not choices
        or not isinstance(choices, list)
        or not isinstance(choices[0], dict)
        or not isinstance(choices[0].get("message"), dict)
    ):
        return "response has no choices"
    return None


class _MalformedAsRetryable(httpx2.AsyncBaseTransport):
    """Turns a malformed chat-completions 200 into a 502 the client retries (budget, backoff) like any 5xx.

    Proxies seen in the wild answer 200 with an HTML error page, and overloaded servers 200 with `choices: []`:
    transient faults that a retry fixes. Below the client, so its own retry loop does the waiting (no second,
    hand-written one) and `max_retries` means the same for every transient fault.
    """

    def __init__(self, inner: httpx2.AsyncBaseTransport):
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        if (
            response.status_code != 200
            or request.method != "POST"
            or not request.url.path.endswith("/chat/completions")
            or response.headers.get("content-type", "").startswith("text/event-stream")
        ):
            return response  # a stream (`stream: true`) is read by its consumer, chunk by chunk
        reason = malformed_reason(await response.aread())  # read once: the client reuses the cached content
        if reason is None:
            return response
        return httpx2.Response(
            502,
            headers={MALFORMED_HEADER: "1", "content-type": "application/json"},
            json={"error": {"message": f"malformed 200 response: {reason}"}},
            request=request,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


def _is_local(base_url: Optional[str]) -> bool:
    return bool(base_url) and (urlparse(base_url).hostname or "") in LOCAL_HOSTS


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text_content(content: Any) -> str:
    """Message content as text (some servers send a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _tool_calls(message: dict[str, Any]) -> Optional[list[dict[str, Any]]]:
    """`[{"name", "arguments": dict}]`; arguments that aren't a JSON object are kept as their raw text."""
    out = []
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function") or {}
        args: Any = fn.get("arguments")
        if isinstance(args, str):
            try:
                parsed = json.loads(args) if args.strip() else {}
                args = parsed if isinstance(parsed, dict) else args
            except json.JSONDecodeError:
                pass
        out.append({"name": fn.get("name"), "arguments": args if args is not None else {}})
    return out or None


def _usage(body: dict[str, Any]) -> tuple[int, int, int, int]:
    """(prompt, completion, reasoning, cached prompt) tokens from the usage block (missing -> 0)."""
    usage = body.get("usage") or {}
    details = usage.get("completion_tokens_details") or {}
    prompt_details = usage.get("prompt_tokens_details") or {}
    as_int = lambda v: int(v) if isinstance(v, (int, float)) else 0  # noqa: E731
    return (
        as_int(usage.get("prompt_tokens")),
        as_int(usage.get("completion_tokens")),
        as_int(details.get("reasoning_tokens", usage.get("reasoning_tokens"))),
        as_int(prompt_details.get("cached_tokens")),
    )


class OpenAIPolicy(Policy):
    """A policy backed by an OpenAI-compatible chat-completions endpoint (`model=openai` and its presets)."""

    decides_per_turn = True

    def __init__(self, cfg: OpenAIModelConfig, seed: int = 0):
        prompt = cfg.prompt
        check_template(prompt.template)
        if prompt.action_mode not in ACTION_MODES:
            raise UserError(f"model.prompt.action_mode must be one of {ACTION_MODES}, got {prompt.action_mode!r}")
        if cfg.max_tokens_param not in TOKEN_PARAMS:
            raise UserError(f"model.max_tokens_param must be one of {TOKEN_PARAMS}, got {cfg.max_tokens_param!r}")
        for name in ("concurrency", "max_consecutive_errors", "max_tokens"):
            if getattr(cfg, name) < 1:
                raise UserError(f"model.{name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.max_retries < 0 or cfg.timeout <= 0:
            raise UserError("model.max_retries must be >= 0 and model.timeout > 0")
        # refused here, not by the endpoint: a server's 400 would end every episode `api_error`
        if cfg.temperature is not None and cfg.temperature < 0:
            raise UserError(f"model.temperature must be >= 0 (or null: not sent), got {cfg.temperature}")
        if cfg.top_p is not None and not 0 < cfg.top_p <= 1:
            raise UserError(f"model.top_p must be in (0, 1] (or null: not sent), got {cfg.top_p}")
        if not cfg.model:
            raise UserError(
                "model.model is not set: give the model name the endpoint serves (for "
                "model=transformers_serve: the checkpoint folder given to `transformers serve`)"
            )
        check_prices(cfg.prices)
        self.cfg = cfg
        self.seed = seed
        self.model_name = cfg.label or cfg.model
        self.provider = cfg.provider
        self._key: Optional[str] = None
        self._client: Optional[openai.AsyncOpenAI] = None
        self._clients: list[openai.AsyncOpenAI] = []
        self._next_client = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._sem: Optional[asyncio.Semaphore] = None

    # --------------------------------------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        return self.cfg.base_url or DEFAULT_BASE_URL

    def _read_key(self) -> str:
        key = os.environ.get(self.cfg.api_key_env)
        if key:
            return key
        if _is_local(self.cfg.base_url):
            return LOCAL_DUMMY_KEY
        raise UserError(
            f"environment variable {self.cfg.api_key_env} is not set: export the API key for {self.base_url} "
            f"in it (model.api_key_env names the variable)"
        )

    def start(self) -> None:
        """Create the client (reading the key) and, unless `probe: false`, make one tiny call to fail fast."""
        if self._client is not None:
            return
        key = self._read_key()
        self._key = key if key != LOCAL_DUMMY_KEY else None
        # one INFO line per request / per retry would flood the console and Hydra's log with many requests in
        # flight; retries are counted in every LLMCall instead
        for name in ("httpx", "httpx2", "openai._base_client"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-policy-loop", daemon=True)
        self._thread.start()
        self._clients = [
            openai.AsyncOpenAI(
                api_key=key,
                base_url=self.cfg.base_url,
                timeout=self.cfg.timeout,
                max_retries=self.cfg.max_retries,
                http_client=openai.DefaultAsyncHttpxClient(
                    event_hooks={"request": [_count_request]},
                    # the client's own connection limits (a transport given here replaces the one they configure)
                    transport=_MalformedAsRetryable(httpx2.AsyncHTTPTransport(limits=openai.DEFAULT_CONNECTION_LIMITS)),
                ),
            )
            for _ in range(-(-self.cfg.concurrency // CONNECTIONS_PER_CLIENT))
        ]
        self._client = self._clients[0]
        if self.cfg.probe:
            try:
                self._run(self._probe())
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        if self._loop is None:
            return
        loop = self._loop
        for client in self._clients if loop.is_running() else []:
            try:
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=5)
            except Exception:  # closing is best effort (e.g. after Ctrl-C)
                pass
        self._clients = []
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not loop.is_running():
            loop.close()
        self._loop = self._thread = self._client = self._sem = None

    def _run(self, coro: Any) -> Any:
        """Run a coroutine on the policy's loop and wait for it (Ctrl-C cancels it and propagates)."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    # ------------------------------------------------------------------------------------------------ acting

    def act(self, turns: list[Turn]) -> list[Decision]:
        if self._client is None:
            self.start()
        return self._run(self._act(turns))

    async def _act(self, turns: list[Turn]) -> list[Decision]:
        return list(await asyncio.gather(*(self._decide(t) for t in turns)))

    def submit(self, turn: Turn) -> concurrent.futures.Future:
        """The turn's request on the policy's loop (at most `concurrency` in flight); the Future holds its Decision."""
        if self._client is None:
            self.start()
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self._decide(turn), self._loop)

    def request(self, turn: Turn) -> dict[str, Any]:
        """The chat-completions arguments for one turn."""
        prompt = self.cfg.prompt
        messages = build_messages(prompt, turn.instructions, turn.observation, turn.history)
        body = self._request_body(messages, self.cfg.max_tokens)
        if prompt.action_mode == "tools":
            body["tools"] = [interact_tool(turn.actions or None, prompt.max_actions_per_turn)]
            body["tool_choice"] = self.cfg.tool_choice
        return body

    def _request_body(self, messages: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
        cfg = self.cfg
        body: dict[str, Any] = {"model": cfg.model, "messages": messages, cfg.max_tokens_param: max_tokens}
        optional = {
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "seed": cfg.seed,
            "reasoning_effort": cfg.reasoning_effort,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        body.update(cfg.extra_body or {})
        return body

    async def _decide(self, turn: Turn) -> Decision:
        body = self.request(turn)
        calls: list[LLMCall] = []
        if self._sem is None:  # made on the loop that uses it
            self._sem = asyncio.Semaphore(self.cfg.concurrency)
        for _ in range(self.cfg.max_consecutive_errors):
            async with self._sem:
                client = self._clients[self._next_client % len(self._clients)]
                self._next_client += 1
                call, message, status = await self._call(client, body)
            calls.append(call)
            if call.error is None:
                break
            if status in FATAL_STATUS:
                break
        if call.error is not None or message is None:
            return Decision(reply="", calls=calls, error=call.error)
        reply = _text_content(message.get("content"))
        finish = ((call.response or {}).get("choices") or [{}])[0].get("finish_reason")
        return Decision(
            reply=reply,
            tool_calls=call.tool_calls,
            reasoning=call.reasoning,
            calls=calls,
            finish_reason=finish if isinstance(finish, str) else None,
        )

    # ------------------------------------------------------------------------------------------------- calls

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key and self._key in text else text

    def _status_error(self, exc: openai.APIStatusError) -> str:
        body = exc.body  # the client already unwraps {"error": {...}}
        if exc.response is not None and exc.response.headers.get(MALFORMED_HEADER) and isinstance(body, dict):
            return self._scrub(_one_line(str(body.get("message"))))  # the server said 200: no "HTTP 502"
        if isinstance(body, dict):
            inner = body.get("error")
            detail = (inner.get("message") if isinstance(inner, dict) else None) or body.get("message")
            detail = detail or json.dumps(body)
        else:
            detail = str(body or exc.message)
        return self._scrub(_one_line(f"HTTP {exc.status_code}: {detail}"))

    async def _call(self, client: Any, body: dict[str, Any]) -> tuple[LLMCall, Optional[dict[str, Any]], Optional[int]]:
        """One chat-completions request (the client's retries included) -> (record, message, HTTP status)."""
        call = LLMCall(messages=body["messages"], model=self.cfg.model)
        counter = [0]
        token = _requests_sent.set(counter)
        status: Optional[int] = None
        message: Optional[dict[str, Any]] = None
        start = time.perf_counter()
        try:
            if self.cfg.stream:
                data = await self._streamed(client, body)
                status = 200
            else:
                # the client's generic POST: its retries, backoff and errors, without the typed `create` path
                # (which walks every message through its param types: half the client CPU per call, measured)
                text = self._scrub(await client.post("/chat/completions", cast_to=str, body=body))
                status = 200
                try:
                    data = json.loads(text)
                except ValueError:
                    raise _BadResponse(f"response is not JSON: {_one_line(text, ERROR_BODY_CHARS)!r}") from None
                if not isinstance(data, dict):
                    raise _BadResponse(f"response is not a JSON object: {_one_line(text, ERROR_BODY_CHARS)!r}")
            call.response = data
            prompt_t, completion_t, reasoning_t, cached_t = _usage(data)
            call.prompt_tokens, call.completion_tokens, call.reasoning_tokens = prompt_t, completion_t, reasoning_t
            call.cost = call_cost(
                self.cfg.prices, (self.cfg.model, data.get("model")), prompt_t, completion_t, cached_t
            )
            choices = data.get("choices")
            if not choices or not isinstance(choices[0], dict) or not isinstance(choices[0].get("message"), dict):
                raise _BadResponse("response has no choices")
            message = choices[0]["message"]
            field_reasoning = next(
                (message[f] for f in REASONING_FIELDS if isinstance(message.get(f), str) and message[f].strip()),
                None,
            )
            call.reasoning = field_reasoning or split_reasoning(_text_content(message.get("content")))[0]
            call.tool_calls = _tool_calls(message)
        except _BadResponse as exc:
            call.error, message = str(exc), None
        except openai.APIStatusError as exc:
            status = exc.status_code
            call.error = self._status_error(exc)
        except openai.APITimeoutError:
            call.error = f"timeout: no response within {self.cfg.timeout:g}s"
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            call.error = self._scrub(_one_line(f"connection error: {type(cause).__name__}: {cause}"))
        finally:
            call.latency_s = time.perf_counter() - start
            call.retries = max(0, counter[0] - 1)
            _requests_sent.reset(token)
        return call, message, status

    async def _streamed(self, client: Any, body: dict[str, Any]) -> dict[str, Any]:
        """One streamed request (server-sent chunks) assembled into the body a plain request returns.

        The client's retries and status errors apply to opening the stream; a stream that breaks or sends a chunk
        that is not JSON afterwards is one failed attempt (_BadResponse), which the policy asks again.
        """
        stream = await client.post(
            "/chat/completions",
            cast_to=object,
            stream=True,
            stream_cls=openai.AsyncStream[object],
            body={**body, "stream": True, "stream_options": {"include_usage": True}},
        )
        content: list[str] = []
        reasoning: dict[str, list[str]] = {}
        tools: dict[int, dict[str, Any]] = {}
        model, usage, finish, seen = None, None, None, False
        try:
            async for chunk in stream:
                if not isinstance(chunk, dict):
                    raise _BadResponse(
                        f"stream chunk is not a JSON object: {_one_line(str(chunk), ERROR_BODY_CHARS)!r}"
                    )
                model, usage = chunk.get("model") or model, chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                        continue
                    seen = True
                    delta = choice.get("delta") or {}
                    content.append(_text_content(delta.get("content")))
                    for name in REASONING_FIELDS:
                        if isinstance(delta.get(name), str):
                            reasoning.setdefault(name, []).append(delta[name])
                    for tc in delta.get("tool_calls") or []:  # a call arrives in pieces, keyed by its index
                        slot = tools.setdefault(
                            tc.get("index", len(tools)), {"type": "function", "function": {"name": "", "arguments": ""}}
                        )
                        slot["id"] = tc.get("id") or slot.get("id")
                        fn = tc.get("function") or {}
                        slot["function"]["name"] += fn.get("name") or ""
                        slot["function"]["arguments"] += fn.get("arguments") or ""
                    finish = choice.get("finish_reason") or finish
        except (_BadResponse, openai.APIStatusError):
            raise
        except (ValueError, openai.APIError) as exc:  # a chunk that isn't JSON, an error event in the stream
            raise _BadResponse(self._scrub(_one_line(f"stream broken: {exc}", ERROR_BODY_CHARS))) from None
        finally:
            await stream.close()
        if not seen:
            raise _BadResponse("stream held no choices")
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(content),
            **{name: "".join(parts) for name, parts in reasoning.items()},
        }
        if tools:
            message["tool_calls"] = [tools[i] for i in sorted(tools)]
        data = {
            "model": model,
            "object": "chat.completion",
            "streamed": True,
            "usage": usage,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }
        return json.loads(self._scrub(json.dumps(data))) if self._key else data

    async def _probe(self) -> None:
        """One 1-token request with the real settings: unreachable, 401, unknown model -> ValueError, one line."""
        body = self._request_body([{"role": "user", "content": "Reply with OK."}], 1)
        client = self._client.with_options(max_retries=min(self.cfg.max_retries, 2))
        call, _, status = await self._call(client, body)
        if call.error is None:
            return
        where = f"model endpoint {self.base_url}"
        if status in (401, 403):
            raise UserError(f"{where} refused the API key in ${self.cfg.api_key_env} ({call.error})")
        if status == 404:
            raise UserError(
                f"model {self.cfg.model!r} not found at {self.base_url} ({call.error}); check model.model and "
                "model.base_url"
            )
        if status in FATAL_STATUS:
            raise UserError(f"{where} rejected the request settings ({call.error})")
        if call.error.startswith(("connection error", "timeout")):
            raise UserError(f"cannot reach {where}: {call.error}")
        # 429 / 5xx / a malformed 200 after retries: the endpoint exists and knows us; episodes retry on their own
        log.warning("probe call to %s failed (%s); starting anyway", self.base_url, call.error)
