"""One rule for outputs (crafter_exp/paths.py): what identifies an output, where it lives, how the next stage finds it.

The end-to-end tests run the README's "The stages one by one" block as written (small sizes), and
`stage=eval model=openai model.model=ft:...` after `stage=train trainer=openai` against the loopback servers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY_FAST, project_overrides

from crafter_exp import config as C
from crafter_exp import paths
from crafter_exp.config import compose_config
from crafter_exp.store.traces import TraceStore

SCHEMAS = [
    C.CrafterEnvConfig,
    C.AlfworldEnvConfig,
    C.ScriptedModelConfig,
    C.OpenAIModelConfig,
    C.HFLocalModelConfig,
    C.FilterConfig,
    C.TinyTrainerConfig,
    C.LocalTrainerConfig,
    C.OpenAITrainerConfig,
]


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "-changed"
    if isinstance(value, (list, dict)):
        return [*value, "x"] if isinstance(value, list) else {**value, "x": 1}
    return "changed"  # None


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
def test_marked_fields_leave_the_identity_and_the_others_change_it(schema):
    base = schema()
    before = paths.identity(paths.identity_tree(base))
    for f in dataclasses.fields(schema):
        if dataclasses.is_dataclass(getattr(base, f.name)):
            continue
        other = paths.identity(
            paths.identity_tree(dataclasses.replace(base, **{f.name: _changed(getattr(base, f.name))}))
        )
        if paths.in_identity(schema, f.name):
            assert other != before, f"{schema.__name__}.{f.name} changes the result but not the identity"
        else:
            assert other == before, f"{schema.__name__}.{f.name} is marked identity=False but changes it"


def test_a_subclass_that_only_changes_a_default_keeps_the_mark():
    # TinyTrainerConfig re-declares logging_steps, CrafterEnvConfig episodes (new defaults, no metadata)
    assert not paths.in_identity(C.TinyTrainerConfig, "logging_steps")
    assert not paths.in_identity(C.CrafterEnvConfig, "episodes")
    assert paths.in_identity(C.TinyTrainerConfig, "learning_rate")


def test_progress_only_settings_do_not_change_any_identity():
    from crafter_exp.stages.train import train_config_hash

    quiet = compose_config(
        [
            "trainer.progress=false",
            "rollout.progress=false",
            "trainer.logging_steps=5",
            "filter.threads=1",
            "filter.chunk_steps=10",
            "model.label=x",
        ]
    )
    loud = compose_config(["trainer.progress=true", "rollout.progress=true"])
    assert train_config_hash(quiet.trainer, "d") == train_config_hash(loud.trainer, "d")
    assert paths.identity_tree(quiet.filter) == paths.identity_tree(loud.filter)
    assert paths.identity_tree(quiet.model) == paths.identity_tree(loud.model)
    changed = compose_config(["trainer.learning_rate=0.5"])
    assert train_config_hash(changed.trainer, "d") != train_config_hash(loud.trainer, "d")


def _output(folder: Path, files: dict[str, str], completed_at=None, **manifest) -> Path:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    if completed_at is not False:
        extra = {} if completed_at is None else {"completed_at": completed_at}
        (folder / "manifest.json").write_text(json.dumps({"files": list(files), **extra, **manifest}))
    return folder


def test_newest_complete_output_never_a_partial_or_newer_folder(tmp_path):
    root = tmp_path / "exp"
    assert paths.newest_complete(root) is None
    old = _output(root / "aaaa", {"train.jsonl": "x"}, completed_at=100.0)
    newer = _output(root / "bbbb", {"train.jsonl": "x"}, completed_at=200.0)
    _output(root / "cccc", {"train.jsonl": "x"}, completed_at=False)  # being written: no manifest yet
    gone = _output(root / "dddd", {"train.jsonl": "x"}, completed_at=300.0)
    (gone / "train.jsonl").unlink()  # a listed file is missing: not complete
    (root / ".eeee.staging-1").mkdir()
    os.utime(old, (time.time() + 100, time.time() + 100))  # the newest folder by mtime is not the newest output
    assert paths.newest_complete(root) == newer
    openai = _output(root / "ffff", {}, completed_at=400.0, kind="openai")
    assert paths.newest_complete(root) == openai
    assert paths.newest_complete(root, paths.is_local_checkpoint) == newer


def test_output_folder_skips_only_a_complete_output_of_the_same_identity(tmp_path):
    out = paths.OutputFolder(tmp_path / "o", "id1")
    assert out.existing() is None
    with out.staging() as staged:
        (staged / "weights.bin").write_text("w")
        out.publish(staged)
    assert not staged.exists() and out.existing() is None  # published, but no manifest yet: incomplete
    manifest = out.finish({"files": ["weights.bin"], "n": 1})
    assert manifest["identity"] == "id1" and out.existing() == manifest and out.existing(retrain=True) is None
    assert paths.OutputFolder(out.path, "id2").existing() is None
    out.invalidate()
    assert out.existing() is None and (out.path / "weights.bin").exists()


# ------------------------------------------------------------------------------------ the README, as written

SMALL = [
    "env.episodes=3",
    "env.max_steps=100",
    "eval.episodes=2",
    "trainer.max_steps=30",
    "trainer.student.hidden_size=32",
    "trainer.student.num_layers=1",
    "trainer.student.num_heads=2",
    "trainer.student.intermediate_size=64",
    "trainer.eval_fraction=0",
    "compare.bootstrap=200",
    "compare.permutations=199",
    "compare.figures=false",
    *TINY_FAST,
]


def readme_block(title: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {title}\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("crafter-exp")]


def _cli(project: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "crafter_exp", *args], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_readme_stages_one_by_one_as_written(project):
    lines = readme_block("The stages one by one")
    assert any("stage=eval model=hf_local" in line and "model.path" not in line for line in lines)
    store = TraceStore(project / "data" / "traces.duckdb")
    ran = []
    for line in lines:
        if "model=openai" in line:
            continue  # a paid API (its loopback twin: test_eval_fine_tuned_openai_model_after_train_openai)
        runs = store.runs() if store.path.exists() else None
        if "path/to/train.jsonl" in line:
            line = line.replace(
                "path/to/train.jsonl", f"{paths.newest_complete(project / 'data' / 'datasets' / 'default')}/train.jsonl"
            )
        evals = [] if runs is None else list(runs[runs["stage"] == "eval"]["run_id"])
        rollouts = [] if runs is None else list(runs[runs["stage"] == "rollout"]["run_id"])
        for letter, run in zip("abc", evals):  # placeholders: the runs the earlier lines made
            line = line.replace(f"<run {letter}>", run)
        line = line.replace("<run>", rollouts[-1] if rollouts else "<run>")
        assert not re.search(r"<[^>]*>", line), line
        args = shlex.split(line)[1:]
        short = ["env.max_steps=20"] if args[0] == "stage=eval" else []  # the teacher's data needs the longer episodes
        out = _cli(
            project, [*args, *project_overrides(project), *SMALL, *short, "hydra.run.dir=" + str(project / "hy")]
        )
        assert out.returncode == 0, f"{line}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        ran.append((args[0], out.stdout))
    stages = [s for s, _ in ran]
    assert stages[:2] == ["stage=rollout", "stage=filter"] and "stage=compare" in stages and "stage=export" in stages
    # one rule: the checkpoint lives under its identity, and eval found it without a pasted path
    [checkpoint] = (project / "data" / "checkpoints" / "default").glob("*/manifest.json")
    assert checkpoint.parent.name == json.loads(checkpoint.read_text())["identity"][:8]
    eval_out = next(o for s, o in ran if s == "stage=eval")
    assert f"model.path: {checkpoint.parent}" in eval_out
    runs = store.runs()
    assert set(runs["stage"]) == {"rollout", "eval"} and (runs["stage"] == "eval").sum() == 2
    assert (project / "data" / "reports" / "default" / "compare" / "manifest.json").is_file()


@pytest.mark.slow
def test_eval_fine_tuned_openai_model_after_train_openai(request, project, monkeypatch):
    from fake_ft_server import FakeFineTuningServer, Scenario
    from fake_openai_server import FakeOpenAIServer

    from crafter_exp.__main__ import run_stage
    from crafter_exp.errors import UserError

    key_env = "CRAFTER_EXP_TEST_PATHS_KEY"
    monkeypatch.setenv(key_env, "not-a-real-key")
    ft = FakeFineTuningServer(Scenario()).start()
    request.addfinalizer(ft.stop)
    base = [
        *project_overrides(project),
        "name=ft",
        "env.episodes=2",
        "env.max_steps=20",
        "eval.episodes=2",
        "tracking.enabled=false",
    ]
    run_stage(compose_config([*base, "stage=rollout"]))
    run_stage(compose_config([*base, "stage=filter", "filter.drop_unparsed=false"]))
    trained = run_stage(
        compose_config(
            [
                *base,
                "stage=train",
                "trainer=openai",
                f"trainer.base_url={ft.base_url}",
                f"trainer.api_key_env={key_env}",
                "trainer.poll_interval_s=0.01",
            ]
        )
    )
    model = trained.fine_tuned_model
    assert model.startswith("ft:") and trained.checkpoint.parent == project / "data" / "checkpoints" / "ft"

    with FakeOpenAIServer(models=(model,)) as chat:
        play = [
            *base,
            "stage=eval",
            "model=openai",
            f"model.model={model}",
            f"model.base_url={chat.base_url}",
            f"model.api_key_env={key_env}",
            "model.concurrency=2",
        ]
        # eval seeds 1..2 overlap the training seeds 0..1: one line, exit 2, nothing sent
        overlap = _cli(project, [*play, "eval.seed=1", "hydra.run.dir=" + str(project / "hy")])
        assert overlap.returncode == 2 and overlap.stderr.strip().count("\n") == 0, overlap.stderr
        assert "overlap training seeds [0, 2)" in overlap.stderr and not chat.requests
        # env.seed moved on this command line: the seeds the model was really trained on still count (its lineage)
        with pytest.raises(UserError, match=r"eval seeds \[1, 3\) overlap the seeds .* was trained on \(1 shared"):
            run_stage(compose_config([*play, "env.seed=100", "eval.seed=1"]))
        assert not chat.requests

        result = run_stage(compose_config([*play, "eval.seed=1000"]))
        assert result.seeds == [1000, 1001] and result.new_episodes == 2
        assert chat.requests and {r["body"]["model"] for r in chat.requests} == {model}
    episodes = TraceStore(project / "data" / "traces.duckdb").episodes([result.run_id])
    assert sorted(episodes["seed"]) == [1000, 1001] and set(episodes["model"]) == {model}


def test_filter_reads_the_newest_complete_rollout_not_an_interrupted_one(tmp_path):
    from filter_fixtures import make_episode, register_run

    from crafter_exp.errors import UserError
    from crafter_exp.filtering.select import resolve_runs
    from crafter_exp.stages.rollout import latest_run

    store = TraceStore(tmp_path / "traces.duckdb")
    register_run(store, "done", created="2024-01-01")
    store.append([make_episode("done", s) for s in range(2)])
    store.set_run_field("done", "episodes", 2)
    register_run(store, "cut", created="2024-02-01")  # newer, but stopped after 1 of its 3 episodes
    store.append([make_episode("cut", 0)])
    store.set_run_field("cut", "episodes", 3)
    assert [s.run_id for s in resolve_runs(store, "exp")] == ["done"]
    assert latest_run(store, "exp") == "done"
    store.append([make_episode("cut", s) for s in (1, 2)])  # finished by a rerun
    assert [s.run_id for s in resolve_runs(store, "exp")] == ["cut"]
    register_run(store, "only-cut", name="other")
    store.set_run_field("only-cut", "episodes", 4)
    with pytest.raises(UserError, match=r"no complete rollout run for name 'other': only-cut \(0/4 episodes\)"):
        resolve_runs(store, "other")
