"""trainer=openai against a real HTTP server on 127.0.0.1 (tests/fake_ft_server.py) speaking the job API."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import pytest
from fake_ft_server import FakeFineTuningServer, Scenario

from crafter_exp.config import OpenAITrainerConfig
from crafter_exp.errors import UserError
from crafter_exp.training.openai_jobs import (
    FineTuneJobError,
    cancel_openai_job,
    find_training_file,
    find_validation_file,
    read_state,
    run_openai_job,
    validate_chat_jsonl,
)

CANARY = "test-canary-7c1d0e5f9a8b4c3d2e1f0a9b8c7d6e5f"
KEY_ENV = "CRAFTER_EXP_TEST_FT_KEY"


def _example(i: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You play Crafter."},
            {"role": "user", "content": f"Observation {i}: tree to your north."},
            {"role": "assistant", "content": "<action>move_up</action>"},
        ]
    }


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "train.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(_example(i)) + "\n" for i in range(12)))
    return path


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, CANARY)
    return CANARY


def serve(request: pytest.FixtureRequest, **scenario) -> FakeFineTuningServer:
    server = FakeFineTuningServer(Scenario(**scenario)).start()
    request.addfinalizer(server.stop)
    return server


def tcfg(server: FakeFineTuningServer, **kw) -> OpenAITrainerConfig:
    base = dict(
        base_url=server.base_url,
        api_key_env=KEY_ENV,
        base_model="gpt-4o-mini-2024-07-18",
        poll_interval_s=0.01,
        poll_max_interval_s=0.05,
        max_retries=3,
        request_timeout_s=10.0,
    )
    return OpenAITrainerConfig(**{**base, **kw})


def assert_no_canary(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), f"API key written to {path}"


# ------------------------------------------------------------------------------------------------- paths


def test_success_returns_ft_model_and_sends_file_and_hyperparameters(request, tmp_path, dataset, key, capsys):
    server = serve(request, running_polls=1)
    cfg = tcfg(server, epochs=3, batch_size=4, learning_rate_multiplier=0.5, suffix="crafter")
    out = tmp_path / "ckpt"

    result = run_openai_job(cfg, dataset, out)

    assert result.status == "succeeded"
    assert result.fine_tuned_model == "ft:gpt-4o-mini-2024-07-18:org-fake:crafter:0001"
    assert result.trained_tokens == 12345 and not result.resumed
    ((file_id, f),) = server.files.items()
    assert f["content"] == dataset.read_bytes() and f["purpose"] == "fine-tune" and f["filename"] == "train.jsonl"
    sent = server.jobs[result.job_id]["request"]
    assert sent["training_file"] == file_id and sent["model"] == "gpt-4o-mini-2024-07-18"
    assert sent["suffix"] == "crafter" and "hyperparameters" not in sent
    assert sent["method"] == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 0.5}},
    }
    assert all(r.headers["authorization"] == f"Bearer {CANARY}" for r in server.requests)
    assert result.metrics and result.metrics[-1]["step"] == 1
    printed = capsys.readouterr().out
    assert "running -> succeeded" in printed and "New fine-tuned model created" in printed
    assert read_state(out)["status"] == "succeeded"
    assert_no_canary(tmp_path)


def test_legacy_hyperparameters_and_vendor_fields(request, tmp_path, dataset, key):
    server = serve(request)
    cfg = tcfg(
        server,
        epochs=1,
        batch_size=4,
        hyperparameters_style="legacy",
        extra_hyperparameters={"training_type": "sft"},
        extra_body={"upload_to_wasabi": True},
    )
    result = run_openai_job(cfg, dataset, tmp_path / "ckpt")
    sent = server.jobs[result.job_id]["request"]
    assert sent["hyperparameters"] == {"n_epochs": 1, "batch_size": 4, "training_type": "sft"}
    assert sent["upload_to_wasabi"] is True and "method" not in sent


def test_failed_job_raises_with_service_message(request, tmp_path, dataset, key):
    server = serve(request, outcome="failure", failure_message="Training file has 3 examples; need 10.")
    with pytest.raises(FineTuneJobError, match=r"ftjob-0001 failed: Training file has 3 examples; need 10\."):
        run_openai_job(tcfg(server), dataset, tmp_path / "ckpt")
    assert read_state(tmp_path / "ckpt")["status"] == "failed"
    # a rerun after a failure makes a new job (not an endless replay of the failed one)
    server.scenario.outcome = "success"
    assert run_openai_job(tcfg(server), dataset, tmp_path / "ckpt").job_id == "ftjob-0002"


def test_slow_job_polls_several_times_with_backoff(request, tmp_path, dataset, key, capsys, monkeypatch):
    import crafter_exp.training.openai_jobs as jobs

    server = serve(request, running_polls=6, total_steps=6)
    sleeps: list[float] = []
    monkeypatch.setattr(jobs.time, "sleep", sleeps.append)
    monkeypatch.setattr(jobs, "EVENTS_PAGE", 2)  # new events span several pages: walked back with `after`
    result = run_openai_job(tcfg(server, poll_backoff=2.0), dataset, tmp_path / "ckpt")
    # 0.01 s after each status change (queued, running), doubles while running, capped at poll_max_interval_s
    assert sleeps == pytest.approx([0.01, 0.01, 0.02, 0.04, 0.05, 0.05, 0.05])
    assert result.status == "succeeded"
    assert server.count("GET", r"/v1/fine_tuning/jobs/ftjob-0001") >= 8  # validating, queued, 6 x running, done
    assert [m["step"] for m in result.metrics] == [1, 2, 3, 4, 5, 6]
    out = capsys.readouterr().out
    assert out.count("-> running") == 1  # a status change is printed once, not at every poll
    assert out.count("[info] Fine-tuning job started") == 1 and out.count("[info] Validating training file") == 1
    assert out.index("Validating training file") < out.index("Files validated") < out.index("Fine-tuning job started")


def test_unreachable_service_is_one_clear_error(tmp_path, dataset, key):
    cfg = OpenAITrainerConfig(
        base_url="http://127.0.0.1:9/v1", api_key_env=KEY_ENV, max_retries=0, request_timeout_s=2.0
    )
    with pytest.raises(FineTuneJobError, match=r"service error at http://127.0.0.1:9/v1: Connection error"):
        run_openai_job(cfg, dataset, tmp_path / "ckpt")


def test_429s_are_retried_honouring_retry_after(request, tmp_path, dataset, key):
    server = serve(request, rate_limit_first=3, retry_after_s=0.3)
    start = time.monotonic()
    result = run_openai_job(tcfg(server, max_retries=4), dataset, tmp_path / "ckpt")
    assert result.status == "succeeded"
    assert sum(r.status == 429 for r in server.requests) == 3
    assert time.monotonic() - start >= 0.85  # three waits of Retry-After 0.3 s (the client's own backoff is shorter)
    assert len(server.jobs) == 1 and len(server.files) == 1


def test_too_many_429s_is_a_clear_error(request, tmp_path, dataset, key):
    server = serve(request, rate_limit_first=100, retry_after_s=0.01)
    with pytest.raises(FineTuneJobError, match=r"HTTP 429.*Rate limit reached"):
        run_openai_job(tcfg(server, max_retries=1), dataset, tmp_path / "ckpt")


def test_resume_from_job_id_creates_nothing(request, tmp_path, dataset, key):
    server = serve(request, running_polls=2)
    first = run_openai_job(tcfg(server, wait=False), dataset, tmp_path / "a")
    assert first.status not in ("succeeded", "failed")
    uploads, creates = server.count("POST", "/v1/files"), server.count("POST", "/v1/fine_tuning/jobs")

    result = run_openai_job(tcfg(server, job_id=first.job_id), None, tmp_path / "b")

    assert result.resumed and result.status == "succeeded" and result.job_id == first.job_id
    assert server.count("POST", "/v1/files") == uploads and server.count("POST", "/v1/fine_tuning/jobs") == creates


def test_interrupt_then_rerun_resumes_from_state_file(request, tmp_path, dataset, key, monkeypatch):
    server = serve(request, running_polls=3)
    out = tmp_path / "ckpt"
    import crafter_exp.training.openai_jobs as jobs

    real_sleep = time.sleep
    polls = {"n": 0}

    def interrupting_sleep(s: float) -> None:  # Ctrl-C while polling, after the job exists
        polls["n"] += 1
        if polls["n"] == 2:
            raise KeyboardInterrupt
        real_sleep(s)

    monkeypatch.setattr(jobs.time, "sleep", interrupting_sleep)
    with pytest.raises(KeyboardInterrupt):
        run_openai_job(tcfg(server), dataset, out)
    monkeypatch.setattr(jobs.time, "sleep", real_sleep)
    state = read_state(out)
    assert state["job_id"] == "ftjob-0001" and server.jobs["ftjob-0001"]["status"] != "succeeded"
    assert not list(out.glob(".*.tmp"))

    result = run_openai_job(tcfg(server), dataset, out)

    assert result.resumed and result.job_id == "ftjob-0001" and result.status == "succeeded"
    assert len(server.jobs) == 1 and len(server.files) == 1
    # a changed request is a different job: not resumed, and the old one is named in the output
    changed = run_openai_job(tcfg(server, epochs=2), dataset, out)
    assert changed.job_id == "ftjob-0002" and not changed.resumed
    assert_no_canary(tmp_path)


def test_interrupt_between_upload_and_create_reuses_the_file(request, tmp_path, dataset, key, monkeypatch):
    server = serve(request)
    out = tmp_path / "ckpt"
    from openai.resources.fine_tuning.jobs.jobs import Jobs

    real_create = Jobs.create
    monkeypatch.setattr(Jobs, "create", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_openai_job(tcfg(server), dataset, out)
    monkeypatch.setattr(Jobs, "create", real_create)
    assert len(server.files) == 1 and not server.jobs

    result = run_openai_job(tcfg(server), dataset, out)
    assert result.status == "succeeded" and len(server.files) == 1 and result.training_file == "file-0001"


def test_cancel(request, tmp_path, dataset, key, capsys):
    server = serve(request, running_polls=50)
    out = tmp_path / "ckpt"
    created = run_openai_job(tcfg(server, wait=False), dataset, out)

    result = run_openai_job(tcfg(server, job_id=created.job_id, cancel=True), None, out)

    assert result.status == "cancelled" and server.jobs[created.job_id]["status"] == "cancelled"
    assert server.count("POST", rf"/v1/fine_tuning/jobs/{created.job_id}/cancel") == 1
    assert read_state(out)["status"] == "cancelled"
    # cancelling again reports, does not fail; cancel without a job id uses the state file
    again = cancel_openai_job(tcfg(server, cancel=True), out)
    assert again.status == "cancelled" and "already cancelled" in capsys.readouterr().out
    assert server.count("POST", r"/v1/fine_tuning/jobs/.*/cancel") == 1


def test_cancel_while_polling_from_another_process_is_reported(request, tmp_path, dataset, key):
    server = serve(request, running_polls=1000)
    cfg = tcfg(server)

    def cancel_soon() -> None:
        while not server.jobs:
            time.sleep(0.01)
        time.sleep(0.1)
        cancel_openai_job(tcfg(server, job_id="ftjob-0001", cancel=True), None, log=lambda _: None)

    threading.Thread(target=cancel_soon, daemon=True).start()
    with pytest.raises(FineTuneJobError, match="ftjob-0001 cancelled"):
        run_openai_job(cfg, dataset, tmp_path / "ckpt")


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_key_is_one_clear_line(request, tmp_path, dataset, monkeypatch):
    server = serve(request)
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ValueError, match=f"environment variable {KEY_ENV} is not set") as info:
        run_openai_job(tcfg(server), dataset, tmp_path / "ckpt")
    assert "\n" not in str(info.value) and not server.requests


def test_broken_dataset_line_is_named_before_any_request(request, tmp_path, dataset, key):
    server = serve(request)
    lines = dataset.read_text().splitlines()
    lines[4] = '{"messages": [{"role": "user", "content": "hi"}]}'  # no assistant turn
    lines[7] = "{not json"
    dataset.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train\.jsonl:5: no assistant message"):
        run_openai_job(tcfg(server), dataset, tmp_path / "ckpt")
    dataset.write_text("")
    with pytest.raises(ValueError, match="empty dataset"):
        validate_chat_jsonl(dataset)
    assert not server.requests


def test_service_error_message_is_scrubbed_of_the_key(request, tmp_path, dataset, key, monkeypatch):
    server = serve(request)
    monkeypatch.setattr(
        server,
        "_create_job",
        lambda body: (
            400,
            {
                "error": {
                    "message": f"Incorrect API key provided: {CANARY}",
                    "type": "invalid_request_error",
                    "code": "bad",
                }
            },
        ),
    )
    with pytest.raises(FineTuneJobError) as info:
        run_openai_job(tcfg(server), dataset, tmp_path / "ckpt")
    assert CANARY not in str(info.value) and "Incorrect API key provided: ***" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert_no_canary(tmp_path)


def test_find_training_file_from_manifest(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"format": "openai_chat", "files": ["train.jsonl", "val.jsonl"]}))
    assert find_training_file(d) == d / "train.jsonl"
    assert find_validation_file(d) == d / "val.jsonl"
    (d / "manifest.json").write_text(json.dumps({"format": "openai_chat", "files": ["train.jsonl"]}))
    assert find_validation_file(d) is None
    (d / "manifest.json").write_text(json.dumps({"format": "parquet", "files": ["train.parquet"]}))
    with pytest.raises(ValueError, match="filter.format=openai_chat"):
        find_training_file(d)
    with pytest.raises(UserError, match="run stage=filter first"):
        find_training_file(tmp_path / "missing")


# --------------------------------------------------------------------------------------- the train stage


def _dataset_folder(home: Path, name: str) -> Path:
    folder = home / "data" / "datasets" / name
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(_example(i)) + "\n" for i in range(12)))
    (folder / "val.jsonl").write_text(json.dumps(_example(99)) + "\n")
    manifest = {
        "format": "openai_chat",
        "files": ["train.jsonl", "val.jsonl"],
        "examples": 12,
        "digest": "d1g3st",
        "prompt": {
            "template": "standard",
            "history": 0,
            "system_prompt_file": None,
            "action_mode": "text",
            "max_actions_per_turn": 1,
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.slow
def test_train_stage_writes_openai_checkpoint_manifest_and_mlflow_run(request, project, key):
    import mlflow
    from conftest import project_overrides

    from crafter_exp.config import compose_config
    from crafter_exp.stages.train_openai import train_openai

    server = serve(request, running_polls=2)
    _dataset_folder(project, "exp")
    cfg = compose_config(
        project_overrides(project)
        + [
            "name=exp",
            "trainer=openai",
            f"trainer.base_url={server.base_url}",
            f"trainer.api_key_env={KEY_ENV}",
            "trainer.poll_interval_s=0.01",
            "trainer.poll_max_interval_s=0.02",
            "trainer.epochs=2",
        ]
    )

    out = train_openai(cfg)

    assert out.checkpoint.parent == project / "data" / "checkpoints" / "exp"  # <name>/<identity>, as trainer=tiny
    manifest = json.loads((out.checkpoint / "manifest.json").read_text())
    assert manifest["kind"] == "openai" and manifest["fine_tuned_model"].startswith("ft:gpt-4o-mini")
    assert manifest["job_id"] == "ftjob-0001" and manifest["base_url"] == server.base_url
    assert manifest["prompt"]["template"] == "standard" and manifest["dataset_digest"] == "d1g3st"
    assert server.files["file-0001"]["filename"] == "train.jsonl"  # the train split, not val
    # the val split is the job's validation file
    assert server.files["file-0002"]["filename"] == "val.jsonl"
    assert server.jobs["ftjob-0001"]["request"]["validation_file"] == "file-0002"
    assert manifest["validation_file"] == "file-0002"
    after = out.policy_after()
    assert after.model == manifest["fine_tuned_model"] and after.base_url == server.base_url
    assert out.policy_before().model == "gpt-4o-mini-2024-07-18"

    run = mlflow.MlflowClient(tracking_uri=cfg.tracking.uri).get_run(out.mlflow_run_id)
    assert run.data.tags["job_id"] == "ftjob-0001" and run.data.tags["job_status"] == "succeeded"
    assert run.data.tags["fine_tuned_model"] == manifest["fine_tuned_model"]
    assert run.data.metrics["trained_tokens"] == 12345 and "train_loss" in run.data.metrics

    # same config again: the complete checkpoint is reused, nothing sent
    n = len(server.requests)
    again = train_openai(cfg)
    assert again.job is None and again.fine_tuned_model == manifest["fine_tuned_model"] and len(server.requests) == n
    # retrain: a new job, even though the state file records a succeeded one
    renewed = train_openai(dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, retrain=True)))
    assert renewed.job.job_id == "ftjob-0002" and not renewed.skipped and len(server.files) == 2  # files reused
    assert server.jobs["ftjob-0002"]["request"]["validation_file"] == "file-0002"

    # a failed job: raised with the service's message, recorded in MLflow, the complete checkpoint left untouched
    server.scenario.outcome = "failure"
    with pytest.raises(FineTuneJobError, match="failed: Training file has 3 examples"):
        train_openai(dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, epochs=5)))
    kept = json.loads((out.checkpoint / "manifest.json").read_text())
    assert kept["job_id"] == "ftjob-0002"
    failed = mlflow.MlflowClient(tracking_uri=cfg.tracking.uri).search_runs(
        [run.info.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    assert failed.info.status == "FAILED" and failed.data.tags["job_status"] == "failed"
    assert "Training file has 3 examples" in failed.data.tags["job_error"]
    assert_no_canary(project)


@pytest.mark.slow
def test_cli_train_openai_success_and_missing_key(request, project, key):
    """`crafter-exp stage=train trainer=openai` end to end: exit 0 with the model id; a missing key exits 2 with
    one line, before any request."""
    import subprocess
    import sys

    from conftest import ROOT, project_overrides

    server = serve(request)
    _dataset_folder(project, "exp")
    args = [
        sys.executable,
        "-m",
        "crafter_exp",
        "stage=train",
        "name=exp",
        "trainer=openai",
        f"trainer.base_url={server.base_url}",
        f"trainer.api_key_env={KEY_ENV}",
        "trainer.poll_interval_s=0.01",
        "tracking.enabled=false",
        *project_overrides(project),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    ok = subprocess.run(args, capture_output=True, text=True, cwd=project, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "model=openai model.model=ft:gpt-4o-mini-2024-07-18:org-fake" in ok.stdout

    n = len(server.requests)
    env.pop(KEY_ENV)
    missing = subprocess.run(args, capture_output=True, text=True, cwd=project, env=env, timeout=120)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert f"environment variable {KEY_ENV} is not set" in missing.stderr and len(server.requests) == n
    assert_no_canary(project)


def test_export_val_split_becomes_the_jobs_validation_file(request, tmp_path, key):
    """filter.val_fraction on a JSONL export writes val.jsonl (by episode); the job gets it as validation_file."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from filter_fixtures import build_store, make_episode
    from test_filter import cfg_for

    from crafter_exp.stages import filter as F

    home = tmp_path / "home"
    build_store(
        home / "data" / "traces.duckdb",
        [make_episode("run-v", s, turns=3) for s in range(10)],
        run_id="run-v",
        name="exp",
    )
    out = F.filter_and_export(
        cfg_for(home, "filter.val_fraction=0.2", f"filter.output={tmp_path / 'ds'}"), progress=False
    ).path
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == ["train.jsonl", "val.jsonl"]
    assert manifest["splits"] == {"train": {"examples": 24, "episodes": 8}, "val": {"examples": 6, "episodes": 2}}
    server = serve(request)
    result = run_openai_job(
        tcfg(server), find_training_file(out), tmp_path / "ckpt", validation_file=find_validation_file(out)
    )
    sent = server.jobs[result.job_id]["request"]
    assert server.files[sent["training_file"]]["content"] == (out / "train.jsonl").read_bytes()
    assert server.files[sent["validation_file"]]["content"] == (out / "val.jsonl").read_bytes()
    assert read_state(tmp_path / "ckpt")["validation_file"] == sent["validation_file"]
    # a broken validation line is named before any request
    (out / "val.jsonl").write_text("{broken\n")
    n = len(server.requests)
    with pytest.raises(ValueError, match=r"val\.jsonl:1"):
        run_openai_job(
            tcfg(server), find_training_file(out), tmp_path / "ckpt2", validation_file=find_validation_file(out)
        )
    assert len(server.requests) == n
