"""Episodes as MLflow traces (tracking.traces): one trace per episode linked to the rollout's MLflow run, one span
per turn holding the observation, the reply, the parsed actions, the reward and the tokens; read back through the
MLflow client from a real sqlite store, against a real chat-completions server on 127.0.0.1."""

from __future__ import annotations

import mlflow
import pytest
from conftest import project_overrides
from fake_openai_server import FakeOpenAIServer, Reply

from crafter_exp.config import compose_config
from crafter_exp.errors import UserError
from crafter_exp.store.traces import TraceStore

KEY_ENV = "CRAFTER_EXP_TEST_TRACES_KEY"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "test-key-traces")
    with FakeOpenAIServer(api_key="test-key-traces") as srv:
        replies = iter(range(10_000))

        def respond(body):
            i = next(replies)
            return Reply(
                content=f"<think>step {i}</think>\n<action>{['do', 'move_left'][i % 2]}</action>",
                prompt_tokens=100 + i,
                completion_tokens=7,
            )

        srv.responder = respond
        yield srv


def openai_cfg(home, srv, *extra):
    return compose_config(
        project_overrides(home)
        + [
            "model=openai",
            f"model.base_url={srv.base_url}",
            "model.model=fake-model",
            f"model.api_key_env={KEY_ENV}",
            "model.max_retries=1",
            "model.timeout=5",
            "env.episodes=2",
            "env.max_steps=5",
            *extra,
        ]
    )


@pytest.mark.slow
def test_llm_episodes_become_traces_of_the_rollout_run(project, server):
    from crafter_exp.stages.rollout import rollout

    cfg = openai_cfg(project, server)
    result = rollout(cfg)
    assert result.metrics["traced_episodes"] == 2
    mlflow.set_tracking_uri(cfg.tracking.uri)
    client = mlflow.MlflowClient()
    run = client.get_run(result.mlflow_run_id)
    traces = client.search_traces(locations=[run.info.experiment_id], run_id=result.mlflow_run_id)
    assert len(traces) == 2
    store = TraceStore(cfg.paths.db)
    steps = store.query("SELECT * FROM steps ORDER BY seed, turn")
    calls = store.query("SELECT * FROM llm_calls ORDER BY seed, turn")
    for trace in traces:
        assert trace.info.request_metadata["mlflow.sourceRun"] == result.mlflow_run_id
        seed = int(trace.info.tags["seed"])
        assert trace.info.tags["trace_run_id"] == result.run_id
        root = next(s for s in trace.data.spans if s.parent_id is None)
        turns = sorted((s for s in trace.data.spans if s.parent_id == root.span_id), key=lambda s: s.attributes["turn"])
        stored = steps[steps.seed == seed]
        assert len(turns) == len(stored) == 5
        episode = store.query("SELECT * FROM episodes WHERE seed = ?", [seed]).iloc[0]
        assert root.outputs["termination"] == episode.termination == "max_steps"
        assert root.outputs["total_reward"] == pytest.approx(episode.total_reward)
        for span, row in zip(turns, stored.itertuples()):
            assert span.inputs["observation"] == row.observation
            assert span.outputs["reply"] == row.reply and span.outputs["actions"] == list(row.actions)
            assert span.outputs["reward"] == pytest.approx(row.reward)
            call = calls[(calls.seed == seed) & (calls.turn == row.turn)].iloc[0]
            usage = span.attributes["mlflow.chat.tokenUsage"]
            assert usage["input_tokens"] == call.prompt_tokens and usage["output_tokens"] == 7
            assert span.span_type == "LLM" and span.start_time_ns <= span.end_time_ns
    # the replies differ per call, so each span carries its own turn's reply
    assert len({s.outputs["reply"] for t in traces for s in t.data.spans if s.parent_id}) == 10


@pytest.mark.slow
def test_traces_off_and_non_llm_policies_write_none(project, server):
    from crafter_exp.stages.rollout import rollout

    off = rollout(openai_cfg(project, server, "tracking.traces=off", "name=off"))
    scripted = rollout(compose_config(project_overrides(project) + ["env.episodes=2", "env.max_steps=5"]))
    every = rollout(
        compose_config(
            project_overrides(project)
            + ["env.episodes=3", "env.max_steps=5", "tracking.traces=all", "name=all", "tracking.trace_episodes=2"]
        )
    )
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    exp = client.get_run(off.mlflow_run_id).info.experiment_id
    count = lambda r: len(client.search_traces(locations=[exp], run_id=r.mlflow_run_id))  # noqa: E731
    assert "traced_episodes" not in off.metrics and count(off) == 0
    assert scripted.metrics.get("traced_episodes", 0) == 0 and count(scripted) == 0  # `llm`: no model calls
    assert every.metrics["traced_episodes"] == 2 and count(every) == 2  # capped at tracking.trace_episodes
    span = next(
        s for s in client.search_traces(locations=[exp], run_id=every.mlflow_run_id)[0].data.spans if s.parent_id
    )
    assert span.span_type == "CHAIN" and "mlflow.chat.tokenUsage" not in span.attributes


def test_unknown_traces_mode_fails_before_work(project):
    from crafter_exp.stages.rollout import rollout

    with pytest.raises(UserError, match="unknown tracking.traces 'some'"):
        rollout(compose_config(project_overrides(project) + ["tracking.traces=some"]))
    with pytest.raises(UserError, match="tracking.trace_episodes must be >= 0"):
        rollout(compose_config(project_overrides(project) + ["tracking.trace_episodes=-1"]))
    assert not (project / "data" / "traces.duckdb").exists()
