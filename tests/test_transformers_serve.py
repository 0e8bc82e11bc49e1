"""model=openai against a real OpenAI-compatible server: `transformers serve` serving the tiny student on CPU.

The server is Hugging Face's own (FastAPI + uvicorn, `pip install "transformers[serving]"`), started once per
session on a free port. Same weights, same chat template, greedy decoding: the served student and `model=hf_local`
must choose the same actions. The loopback fakes (tests/fake_openai_server.py) stay for what a real server cannot
be made to do (injected 429/500, resets).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import project_overrides

from crafter_exp.config import compose_config
from crafter_exp.policies import Turn, make_policy
from crafter_exp.stages.evaluate import evaluate
from crafter_exp.store.traces import TraceStore

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def served_student(tiny_checkpoint, tmp_path_factory):
    """(base_url, model id, checkpoint) of `transformers serve` playing the tiny student; stopped at the end."""
    pytest.importorskip("fastapi", reason='needs the test extra: pip install "transformers[serving]"')
    checkpoint = str(tiny_checkpoint.checkpoint)
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    # offline: no version check, no hub look-up; the model is the local folder
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_UPDATE_CHECK="1", TRANSFORMERS_OFFLINE="1")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "transformers.cli.transformers",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--device",
                "cpu",
                "--dtype",
                "float32",
                checkpoint,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not healthy after 180 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"{base}/v1", checkpoint, tiny_checkpoint.checkpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def served_overrides(served, *extra: str) -> list[str]:
    base_url, model_id, _ = served
    # the tiny student's own settings (its manifest): the bare template and 2 new tokens; greedy is the preset's
    return [
        "model=transformers_serve",
        f"model.base_url={base_url}",
        f"model.model={model_id}",
        "model.prompt.template=bare",
        "model.max_tokens=2",
        *extra,
    ]


def local_overrides(served) -> list[str]:
    # float32 without autocast: the server runs the weights in float32 too (bf16 matmuls could flip near-ties)
    return ["model=hf_local", f"model.path={served[2]}", "model.do_sample=false", "model.dtype=float32"]


def synthetic_turns(n: int) -> tuple[list[Turn], list[str]]:
    """Observations where the student's rule asks for five different actions (Crafter's opening asks for `do`)."""
    import random

    from crafter_exp.training.synthetic import SYSTEM, synthetic_observation

    rng = random.Random(7)
    pairs = [synthetic_observation(rng) for _ in range(n)]
    turns = [Turn(episode=i, observation=o, actions=[], instructions=SYSTEM) for i, (o, _) in enumerate(pairs)]
    return turns, [a for _, a in pairs]


def policies(served, *extra: str):
    served_cfg = compose_config(project_overrides(Path(".")) + served_overrides(served, *extra)).model
    local_cfg = compose_config(project_overrides(Path(".")) + local_overrides(served)).model
    return make_policy(served_cfg, 0), make_policy(local_cfg, 0)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_served_and_local_student_choose_the_same_actions(served_student, stream):
    remote, local = policies(served_student, f"model.stream={str(stream).lower()}")
    turns, rule = synthetic_turns(24)
    remote.start()
    local.start()
    try:
        served = remote.act(turns)
        played = local.act(turns)
    finally:
        remote.close()
        local.close()
    assert [d.error for d in served] == [None] * len(turns)
    assert [d.reply.strip() for d in served] == [d.reply for d in played]
    assert len({d.reply for d in played}) >= 3  # not one reply for everything: the comparison can fail
    assert sum(d.reply == a for d, a in zip(played, rule)) >= len(rule) // 2  # and it is the trained student
    calls = [d.calls[0] for d in served]
    assert {bool(c.response.get("streamed")) for c in calls} == {stream}  # the streamed path really ran
    assert all(c.completion_tokens >= 1 and c.prompt_tokens > 10 for c in calls)
    assert [c.prompt_tokens for c in calls] == [d.calls[0].prompt_tokens for d in played]  # same template


def test_eval_loop_against_the_server_matches_hf_local(project, served_student):
    common = project_overrides(project) + ["eval.episodes=2", "env.max_steps=12", "tracking.enabled=false"]
    served = evaluate(compose_config(common + served_overrides(served_student)))
    local = evaluate(compose_config(common + local_overrides(served_student)))
    assert served.seeds == local.seeds and served.run_id != local.run_id
    store = TraceStore(project / "data" / "traces.duckdb")
    query = "SELECT seed, turn, actions FROM steps WHERE run_id = ? ORDER BY seed, turn"
    a, b = store.query(query, [served.run_id]), store.query(query, [local.run_id])
    assert len(a) == 24 and a.astype(str).equals(b.astype(str))
    calls = store.query(
        "SELECT model, prompt_tokens, completion_tokens, latency_s, error FROM llm_calls WHERE run_id = ?",
        [served.run_id],
    )
    assert len(calls) == 24 and calls.error.isna().all() and (calls.latency_s > 0).all()
    assert set(calls.model) == {served_student[1]} and (calls.completion_tokens >= 1).all()
    episodes = store.episodes([served.run_id])
    assert episodes.cost.isna().all() and (episodes.provider == "transformers").all()  # self-hosted: no price
    assert served.metrics["mean_achievements"] == local.metrics["mean_achievements"]


def test_unknown_model_is_one_line_from_the_servers_own_reply(served_student):
    cfg = compose_config(project_overrides(Path(".")) + served_overrides(served_student, "model.model=no-such-model"))
    policy = make_policy(cfg.model, 0)
    with pytest.raises(ValueError) as err:
        policy.start()
    message = str(err.value)
    assert "\n" not in message and "no-such-model" in message and "HTTP 400" in message
    assert "Server is pinned to" in message  # the server's own words, passed on


def test_bad_request_params_are_one_line_from_the_servers_own_reply(served_student):
    cfg = compose_config(project_overrides(Path(".")) + served_overrides(served_student, "+model.extra_body.bogus=1"))
    policy = make_policy(cfg.model, 0)
    with pytest.raises(ValueError) as err:
        policy.start()
    message = str(err.value)
    assert "\n" not in message and "rejected the request settings" in message and "HTTP 422" in message
    assert "bogus" in message


def test_the_cli_prints_the_servers_refusal_as_one_line(project, served_student):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "crafter_exp",
            "stage=eval",
            "eval.episodes=1",
            *project_overrides(project),
            *served_overrides(served_student, "model.model=no-such-model"),
        ],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("crafter-exp: error:") and "no-such-model" in lines[-1]
    assert "Traceback" not in out.stderr
