"""model=openai against a real chat-completions HTTP server on 127.0.0.1 (tests/fake_openai_server.py).

Unit part: the policy alone (requests sent, replies, reasoning, tool calls, tokens, cost, concurrency, each fault,
the start-up probe, the key never in what it produces). End-to-end part: through the rollout stage into DuckDB
and MLflow, the CLI, Ray workers, Ctrl-C + resume, and a canary key absent from every file written.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import project_overrides
from fake_openai_server import FakeOpenAIServer, Reply

from crafter_exp.config import OpenAIModelConfig, PromptConfig, compose_config
from crafter_exp.policies.base import Turn
from crafter_exp.policies.openai_policy import OpenAIPolicy
from crafter_exp.policies.pricing import call_cost, check_prices
from crafter_exp.store.traces import TraceStore

KEY_ENV = "CRAFTER_EXP_TEST_OPENAI_KEY"
CANARY = "test-canary-7f3a9c21e8d04b6f"  # must never appear in anything the program writes
ACTIONS = ["noop", "move_left", "move_right", "do"]


@pytest.fixture
def key(monkeypatch) -> str:
    monkeypatch.setenv(KEY_ENV, CANARY)
    return CANARY


@pytest.fixture
def server(key):
    with FakeOpenAIServer(api_key=key) as srv:
        yield srv


def make_cfg(srv: FakeOpenAIServer, **kw) -> OpenAIModelConfig:
    prompt = kw.pop("prompt", None) or PromptConfig()
    base = dict(
        base_url=srv.base_url,
        model="fake-model",
        api_key_env=KEY_ENV,
        max_retries=2,
        timeout=5.0,
        prices={"fake-model": {"input": 2.0, "output": 8.0}},
    )
    return OpenAIModelConfig(prompt=prompt, **{**base, **kw})


def turn(i: int = 0, history=()) -> Turn:
    return Turn(
        episode=i,
        observation=f"You see a tree. ep {i}",
        actions=ACTIONS,
        instructions="Survive.",
        history=list(history),
    )


@pytest.fixture
def policy_for():
    made: list[OpenAIPolicy] = []

    def make(cfg: OpenAIModelConfig, start: bool = True) -> OpenAIPolicy:
        policy = OpenAIPolicy(cfg, seed=0)
        made.append(policy)
        if start:
            policy.start()
        return policy

    yield make
    for p in made:
        p.close()


def is_probe(body: dict) -> bool:
    return body.get("max_tokens", body.get("max_completion_tokens")) == 1


def chat_bodies(srv: FakeOpenAIServer) -> list[dict]:
    """Request bodies except the start-up probe's."""
    return [r["body"] for r in srv.requests if not is_probe(r["body"])]


# ------------------------------------------------------------------------------------------------- requests


def test_text_mode_request_reply_reasoning_tokens_and_cost(server, policy_for):
    cfg = make_cfg(
        server,
        temperature=0.3,
        top_p=0.9,
        seed=7,
        reasoning_effort="low",
        max_tokens=64,
        extra_body={"top_k": 20},
        prompt=PromptConfig(history=1),
    )
    server.responder = lambda body: Reply(
        content="<think>wood first</think>\n<action>do</action>", prompt_tokens=1000, completion_tokens=500
    )
    policy = policy_for(cfg)
    history = [("old obs 1", "<action>noop</action>"), ("old obs 2", "<action>move_left</action>")]
    [d] = policy.act([turn(0, history)])
    assert d.error is None and d.reply == "<think>wood first</think>\n<action>do</action>"
    assert d.reasoning == "wood first" and d.tool_calls is None
    [call] = d.calls
    assert (call.prompt_tokens, call.completion_tokens, call.retries, call.error) == (1000, 500, 0, None)
    assert call.cost == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    assert call.model == "fake-model" and call.response["choices"][0]["message"]["content"] == d.reply
    assert call.latency_s > 0
    probe, body = server.requests[0]["body"], server.requests[1]["body"]
    assert probe["max_tokens"] == 1  # the start-up probe
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9 and body["seed"] == 7
    assert body["reasoning_effort"] == "low" and body["top_k"] == 20 and body["max_tokens"] == 64
    assert "tools" not in body
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]  # history window of 1
    assert body["messages"][1]["content"] == "old obs 2" and "<action>" in body["messages"][0]["content"]
    assert call.messages == body["messages"]


def test_unset_sampling_fields_are_not_sent_and_token_param_is_configurable(server, policy_for):
    cfg = make_cfg(server, temperature=None, top_p=None, max_tokens_param="max_completion_tokens")
    policy_for(cfg).act([turn()])
    body = server.requests[-1]["body"]
    assert "temperature" not in body and "top_p" not in body and "seed" not in body
    assert "reasoning_effort" not in body and body["max_completion_tokens"] == 512 and "max_tokens" not in body


def test_world_model_template_asks_for_a_prediction(server, policy_for):
    policy = policy_for(make_cfg(server, prompt=PromptConfig(template="world_model")))
    [d] = policy.act([turn()])
    system = server.requests[-1]["body"]["messages"][0]["content"]
    assert "<prediction>" in system and "<prediction>" in d.reply and d.error is None


def test_tools_mode_sends_interact_tool_and_returns_tool_calls(server, policy_for):
    cfg = make_cfg(server, prompt=PromptConfig(action_mode="tools", max_actions_per_turn=3))
    server.responder = lambda body: Reply(
        content=None, tool_calls=[{"name": "interact", "arguments": {"actions": ["move_left", "do"]}}]
    )
    [d] = policy_for(cfg).act([turn()])
    body = server.requests[-1]["body"]
    assert body["tool_choice"] == "required"
    [tool] = body["tools"]
    items = tool["function"]["parameters"]["properties"]["actions"]
    assert tool["function"]["name"] == "interact" and items["items"]["enum"] == ACTIONS and items["maxItems"] == 3
    assert d.reply == "" and d.tool_calls == [{"name": "interact", "arguments": {"actions": ["move_left", "do"]}}]
    assert d.calls[0].tool_calls == d.tool_calls


def test_tool_arguments_that_are_not_json_are_kept_raw(server, policy_for):
    cfg = make_cfg(server, prompt=PromptConfig(action_mode="tools"))
    server.responder = lambda body: Reply(tool_calls=[{"name": "interact", "arguments": "move_left"}])
    [d] = policy_for(cfg).act([turn()])
    assert d.tool_calls == [{"name": "interact", "arguments": "move_left"}] and d.error is None


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_field_and_reasoning_tokens(server, policy_for, field):
    server.responder = lambda body: Reply(
        content="<action>do</action>", reasoning="a tree is near", reasoning_field=field, reasoning_tokens=42
    )
    [d] = policy_for(make_cfg(server)).act([turn()])
    assert d.reasoning == "a tree is near" and d.calls[0].reasoning_tokens == 42 and d.reply == "<action>do</action>"


def test_cost_is_none_for_an_unpriced_model_and_cached_input_is_priced():
    assert call_cost({}, ("m",), 100, 10) is None  # unknown: NULL, never 0
    assert call_cost({"m": {"input": 0.0, "output": 0.0}}, ("m",), 100, 10) == 0.0
    # the name the response reports (a dated snapshot) is looked up second
    assert call_cost({"m-2024": {"input": 1.0, "output": 1.0}}, ("m", "m-2024"), 1_000_000, 0) == 1.0
    cached = call_cost({"m": {"input": 1.0, "cached_input": 0.5, "output": 4.0}}, ("m",), 1000, 100, 400)
    assert cached == pytest.approx((600 * 1.0 + 400 * 0.5 + 100 * 4.0) / 1e6)
    for bad in ({"m": {"input": 1.0}}, {"m": {"input": -1, "output": 1}}, {"m": {"in": 1, "input": 1, "output": 1}}):
        with pytest.raises(ValueError, match="model.prices"):
            check_prices(bad)


def test_concurrency_bounds_requests_in_flight(key, policy_for):
    with FakeOpenAIServer(api_key=key, latency=0.2) as srv:
        policy = policy_for(make_cfg(srv, concurrency=3))
        t0 = time.perf_counter()
        decisions = policy.act([turn(i) for i in range(9)])
        elapsed = time.perf_counter() - t0
        assert [d.error for d in decisions] == [None] * 9
        assert srv.max_in_flight == 3  # bounded, and reached
        assert elapsed < 9 * 0.2  # overlapped, not one at a time
        # decisions come back in turn order whatever order the answers arrive in
        assert [d.calls[0].messages[-1]["content"] for d in decisions] == [f"You see a tree. ep {i}" for i in range(9)]


# --------------------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", ["429", "500", "503", "slow", "reset"])
def test_transient_faults_are_retried_by_the_client(server, policy_for, kind):
    policy = policy_for(make_cfg(server, timeout=0.5))
    server.inject(kind, retry_after=0.05, sleep=1.0)
    [d] = policy.act([turn()])
    assert d.error is None and "<action>" in d.reply
    [call] = d.calls
    assert call.retries == 1 and call.error is None
    assert [r["fault"] for r in server.requests[-2:]] == [kind, None]


def test_retry_after_is_honoured(server, policy_for):
    policy = policy_for(make_cfg(server))
    server.inject("429", retry_after=0.6)
    [d] = policy.act([turn()])
    assert d.error is None and d.calls[0].retries == 1 and d.calls[0].latency_s >= 0.6


@pytest.mark.parametrize("kind", ["non_json", "no_choices"])
def test_malformed_200_is_retried_by_the_client_like_a_5xx(server, policy_for, kind):
    policy = policy_for(make_cfg(server))
    server.inject(kind)
    [d] = policy.act([turn()])
    assert d.error is None and "<action>" in d.reply
    [call] = d.calls  # one attempt: the retry happened inside the client, as for a 503
    assert call.retries == 1 and call.error is None and call.response["choices"]
    # the client's own retry loop sent it (it numbers its retries), not a re-ask of ours
    assert [r["fault"] for r in server.requests[-2:]] == [kind, None]
    assert server.requests[-1]["headers"].get("x-stainless-retry-count") == "1"


@pytest.mark.parametrize(
    "kind, message", [("non_json", "response is not JSON: '<html>"), ("no_choices", "response has no choices")]
)
def test_persistent_malformed_200_uses_the_5xx_budget_then_gives_up(server, policy_for, kind, message):
    policy = policy_for(make_cfg(server, max_retries=1, max_consecutive_errors=2))
    server.fail_after(0, kind)
    [d] = policy.act([turn()])
    assert d.error.startswith(f"malformed 200 response: {message}") and d.reply == ""
    assert len(d.calls) == 2 and all(c.retries == 1 for c in d.calls)
    assert len(chat_bodies(server)) == 2 * 2  # (max_retries + 1) x max_consecutive_errors, as for a 503


def test_persistent_failure_gives_up_with_an_error(server, policy_for):
    policy = policy_for(make_cfg(server, max_retries=1, max_consecutive_errors=3))
    server.fail_after(0, "503", retry_after=0.01)
    [d] = policy.act([turn()])
    assert d.error.startswith("HTTP 503") and d.reply == ""
    assert len(d.calls) == 3 and all(c.retries == 1 and c.error for c in d.calls)
    assert len(chat_bodies(server)) == 3 * 2


def test_fatal_status_is_not_retried_and_the_echoed_key_is_scrubbed(server, policy_for):
    policy = policy_for(make_cfg(server, max_consecutive_errors=3))
    server.inject("401")
    [d] = policy.act([turn()])
    assert d.error.startswith("HTTP 401") and len(d.calls) == 1 and d.calls[0].retries == 0
    # the fake server echoes the key it got, as real providers do; nothing the policy returns may hold it
    assert CANARY not in json.dumps([vars(c) for c in d.calls], default=str) and CANARY not in d.error


def test_one_failing_turn_does_not_fail_the_others(server, policy_for):
    policy = policy_for(make_cfg(server, max_consecutive_errors=1, concurrency=1))
    server.inject("401")  # the first of the three requests (a fault no retry fixes)
    decisions = policy.act([turn(0), turn(1), turn(2)])
    assert [d.error is not None for d in decisions] == [True, False, False]


# ---------------------------------------------------------------------------------------------------- probe


def test_probe_rejects_a_wrong_key_in_one_line_without_the_key(key, monkeypatch):
    with FakeOpenAIServer(api_key="test-the-right-one-123456") as srv:
        with pytest.raises(ValueError) as err:
            OpenAIPolicy(make_cfg(srv)).start()
    text = str(err.value)
    assert "refused the API key" in text and KEY_ENV in text and "\n" not in text and CANARY not in text


def test_probe_rejects_an_unknown_model(server):
    with pytest.raises(ValueError, match="model 'gpt-nope' not found"):
        OpenAIPolicy(make_cfg(server, model="gpt-nope")).start()


def test_probe_rejects_an_unreachable_endpoint_fast(key):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = OpenAIModelConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key_env=KEY_ENV, max_retries=5)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="cannot reach model endpoint"):
        OpenAIPolicy(cfg).start()
    assert time.perf_counter() - t0 < 10  # the probe caps retries at 2, not the run's 5


def test_missing_key_variable(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    remote = OpenAIModelConfig(base_url="https://api.example.com/v1", api_key_env=KEY_ENV, probe=False)
    with pytest.raises(ValueError, match=f"environment variable {KEY_ENV} is not set"):
        OpenAIPolicy(remote).start()
    with FakeOpenAIServer() as srv:  # a local server: a dummy key is fine
        policy = OpenAIPolicy(make_cfg(srv))
        policy.start()
        assert policy.act([turn()])[0].error is None
        policy.close()


def test_bad_settings_fail_with_one_line(server):
    for kw, match in [
        (dict(concurrency=0), "concurrency"),
        (dict(max_tokens_param="n"), "max_tokens_param"),
        (dict(prompt=PromptConfig(action_mode="voice")), "action_mode"),
        (dict(prompt=PromptConfig(template="fancy")), "template"),
        (dict(temperature=-1.0), "temperature must be >= 0"),
        (dict(top_p=0.0), r"top_p must be in"),
        (dict(top_p=1.5), r"top_p must be in"),
    ]:
        with pytest.raises(ValueError, match=match):
            OpenAIPolicy(make_cfg(server, **kw))


def test_close_stops_the_loop_thread(server):
    policy = OpenAIPolicy(make_cfg(server))
    policy.start()
    thread = policy._thread
    policy.close()
    assert not thread.is_alive()
    policy.close()  # twice is fine


# ------------------------------------------------------------------------------------- end to end (rollout)

PRICES = "+model.prices.fake-model={input:2.0,output:8.0}"  # Hydra: + adds a key to a config dict


def rollout_cfg(home, srv, *extra, workers=0, priced=True):
    return compose_config(
        project_overrides(home, workers)
        + [
            "model=openai",
            f"model.base_url={srv.base_url}",
            "model.model=fake-model",
            f"model.api_key_env={KEY_ENV}",
            "model.max_retries=2",
            "model.timeout=2",
            "env.episodes=2",
            "env.max_steps=4",
            "tracking.enabled=false",
        ]
        + ([PRICES] if priced else [])
        + list(extra)
    )


def cli_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    env.update(extra)
    return env


def cli(home, *args, env=None, timeout=120, **popen):
    return subprocess.run(
        [sys.executable, "-m", "crafter_exp", *args],
        cwd=home,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode, template", [("text", "standard"), ("text", "world_model"), ("tools", "standard")])
def test_rollout_stores_replies_tokens_and_cost(project, server, mode, template):
    from crafter_exp.stages.rollout import rollout

    if mode == "tools":
        server.responder = lambda body: Reply(
            tool_calls=[{"name": "interact", "arguments": {"actions": ["do"]}}],
            reasoning="trees give wood",
            prompt_tokens=300,
            completion_tokens=20,
        )
    else:
        server.responder = lambda body: Reply(
            content="<think>trees give wood</think>\n"
            + ("<prediction>wood +1</prediction>\n" if template == "world_model" else "")
            + "<action>do</action>",
            prompt_tokens=300,
            completion_tokens=20,
        )
    cfg = rollout_cfg(project, server, f"model.prompt.action_mode={mode}", f"model.prompt.template={template}")
    result = rollout(cfg)
    assert result.new_episodes == 2
    store = TraceStore(cfg.paths.db)
    eps = store.query("SELECT * FROM episodes ORDER BY seed")
    assert list(eps.termination) == ["max_steps", "max_steps"] and list(eps.steps) == [4, 4]
    assert list(eps.prompt_tokens) == [4 * 300] * 2 and list(eps.completion_tokens) == [4 * 20] * 2
    assert list(eps.llm_calls) == [4, 4] and list(eps.provider) == ["openai"] * 2
    assert eps.cost.tolist() == pytest.approx([4 * (300 * 2.0 + 20 * 8.0) / 1e6] * 2)
    calls = store.query("SELECT * FROM llm_calls ORDER BY seed, turn")
    assert len(calls) == 8 and set(calls.model) == {"fake-model"} and set(calls.reasoning) == {"trees give wood"}
    assert calls.cost.sum() == pytest.approx(eps.cost.sum()) and calls.error.isna().all()
    sent = json.loads(calls.messages.iloc[0])
    assert sent[0]["role"] == "system" and ("<prediction>" in sent[0]["content"]) == (template == "world_model")
    assert json.loads(calls.response.iloc[0])["usage"]["prompt_tokens"] == 300
    steps = store.query("SELECT * FROM steps ORDER BY seed, turn")
    assert steps.parse_ok.all() and all(list(a) == ["do"] for a in steps.actions)
    assert steps.reasoning.eq("trees give wood").all()
    if mode == "tools":
        assert json.loads(steps.tool_calls.iloc[0]) == [{"name": "interact", "arguments": {"actions": ["do"]}}]
        assert json.loads(calls.tool_calls.iloc[0])[0]["name"] == "interact"


@pytest.mark.slow
def test_rollout_survives_every_fault_and_unpriced_model_costs_null(project, server):
    from crafter_exp.stages.rollout import rollout

    cfg = rollout_cfg(project, server, "model.timeout=0.5", "env.episodes=3", priced=False)
    for kind in ("429", "500", "503", "slow", "reset", "non_json", "no_choices"):
        server.inject(kind, retry_after=0.02, sleep=1.0, after=1)  # after the start-up probe
    result = rollout(cfg)
    store = TraceStore(cfg.paths.db)
    eps = store.query("SELECT * FROM episodes ORDER BY seed")
    assert result.new_episodes == 3 and set(eps.termination) == {"max_steps"}
    assert eps.cost.isna().all()  # model not in the price table: unknown, not 0
    calls = store.query("SELECT * FROM llm_calls")
    # 429, 500, 503, slow (timeout), reset and the two malformed 200s: all retried inside the client, each one
    # request more (three in a row on one turn use up max_retries=2: that turn's call fails and is asked again)
    assert (calls.retries + 1).sum() == 3 * 4 + 7
    last = calls.sort_values("call_index").groupby(["seed", "turn"]).tail(1)
    assert last.error.isna().all() and len(last) == 3 * 4  # every turn ended with an answer
    assert calls.cost.isna().all()


@pytest.mark.slow
def test_api_error_episode_is_stored_and_the_run_finishes(project, server):
    from crafter_exp.stages.rollout import rollout

    cfg = rollout_cfg(
        project,
        server,
        "model.concurrency=1",
        "ray.episodes_per_task=1",
        "model.max_retries=1",
        "model.max_consecutive_errors=2",
        "env.episodes=3",
    )
    server.fail_after(1 + 4 + 2, "500", retry_after=0.01)  # probe, seed 0 (4 turns), 2 turns of seed 1, then down
    result = rollout(cfg)
    store = TraceStore(cfg.paths.db)
    eps = store.query("SELECT seed, termination, turns, llm_calls FROM episodes ORDER BY seed")
    assert list(eps.termination) == ["max_steps", "api_error", "api_error"]
    assert list(eps.turns) == [4, 3, 1] and result.new_episodes == 3
    calls = store.query("SELECT * FROM llm_calls WHERE seed = 1 AND turn = 2 ORDER BY call_index")
    assert list(calls.retries) == [1, 1] and calls.error.str.startswith("HTTP 500").all()
    assert store.query("SELECT info FROM steps WHERE seed = 2")["info"].str.contains("HTTP 500").all()
    # resume: api_error episodes are stored episodes; nothing is replayed
    server.clear_faults()
    assert rollout(cfg).new_episodes == 0


@pytest.mark.slow
def test_rollout_with_ray_workers(project, ray_local):
    from crafter_exp.stages.rollout import rollout

    # Ray's workers inherit the environment of the process that started Ray (maybe before this test set a key):
    # a local endpoint without a key exercises the dummy-key path there
    with FakeOpenAIServer() as srv:
        cfg = rollout_cfg(project, srv, "env.episodes=4", "model.concurrency=2", "ray.episodes_per_task=2", workers=2)
        result = rollout(cfg)
        eps = TraceStore(cfg.paths.db).query("SELECT seed, termination, llm_calls FROM episodes ORDER BY seed")
        assert result.new_episodes == 4 and list(eps.seed) == [0, 1, 2, 3]
        assert set(eps.termination) == {"max_steps"} and set(eps.llm_calls) == {4}
        assert sum(is_probe(r["body"]) for r in srv.requests) == 1 + 2  # the driver first, then each worker


@pytest.mark.slow
def test_cli_probe_fails_fast_with_one_line(project, key):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Ray workers (the default): the driver probes before any actor starts
    out = cli(
        project,
        "stage=rollout",
        "model=openai",
        f"model.base_url=http://127.0.0.1:{port}/v1",
        "env.episodes=2",
        *project_overrides(project, workers=2),
        "tracking.enabled=false",
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("crafter-exp: error: cannot reach model endpoint") and len(lines) == 1, out.stderr
    assert not (project / "data/traces.duckdb").exists()  # the probe runs before anything is written


def test_pipeline_with_an_unreachable_teacher_fails_before_its_mlflow_run(project, key):
    """The pipeline's parent run opens after the probe: one line, exit 2, and no FAILED run left in MLflow."""
    import mlflow

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = cli(project, "model=openai", f"model.base_url=http://127.0.0.1:{port}/v1", *project_overrides(project))
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("crafter-exp: error: cannot reach model endpoint")
    mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert runs.empty, runs[["status", "tags.mlflow.runName"]]


@pytest.mark.slow
def test_ctrl_c_keeps_finished_episodes_resume_plays_the_rest_and_no_file_holds_the_key(project, key):
    """One CLI run (MLflow on) interrupted with SIGINT, resumed in-process; then a canary key grep over all files."""
    from crafter_exp.stages.rollout import rollout

    with FakeOpenAIServer(api_key=CANARY, latency=0.05) as srv:
        args = [
            "model=openai",
            f"model.base_url={srv.base_url}",
            "model.model=fake-model",
            f"model.api_key_env={KEY_ENV}",
            "model.concurrency=1",
            "ray.episodes_per_task=1",
            "env.episodes=4",
            "env.max_steps=8",
            "rollout.run_id=ctrlc",
            *project_overrides(project),
        ]
        proc = subprocess.Popen(
            [sys.executable, "-m", "crafter_exp", "stage=rollout", *args],
            cwd=project,
            env=cli_env(**{KEY_ENV: CANARY}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 90
        while len(srv.requests) < 1 + 8 + 3 and time.monotonic() < deadline:  # probe, seed 0, part of seed 1
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
        statuses = mlflow.search_runs(search_all_experiments=True).status
        assert list(statuses) == ["KILLED"]  # stopped by the user, not a crash (resumable)
        store = TraceStore(project / "data/traces.duckdb")
        kept = store.query("SELECT seed, steps FROM episodes WHERE run_id = 'ctrlc' ORDER BY seed")
        assert 1 <= len(kept) < 4 and set(kept.steps) == {8}
        n_steps = store.query("SELECT count(*) AS n FROM steps WHERE run_id = 'ctrlc'").n[0]
        assert n_steps == 8 * len(kept)  # whole episodes only
        # resume (the same config, in-process); the first new call gets a 401 that echoes the key it got
        before = len(srv.requests)
        srv.inject("401", after=1)
        result = rollout(compose_config([*args, "tracking.enabled=false"]))  # the CLI run covered MLflow
        missing = 4 - len(kept)
        assert result.new_episodes == missing
        assert len(srv.requests) - before == 1 + 1 + 8 * (missing - 1)  # probe, the 401, the other missing seeds
    eps = store.query("SELECT seed, termination FROM episodes WHERE run_id = 'ctrlc' ORDER BY seed")
    assert list(eps.seed) == [0, 1, 2, 3] and list(eps.termination).count("api_error") == 1
    errors = store.query("SELECT error FROM llm_calls WHERE error IS NOT NULL").error
    assert list(errors) == ["HTTP 401: Incorrect API key provided: ***."]
    written = [p for p in project.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in written) and any(".hydra" in p.parts for p in written)
    assert [str(p) for p in written if CANARY.encode() in p.read_bytes()] == []
    assert CANARY not in out + err
