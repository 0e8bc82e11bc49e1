"""The Hydra app: composition, validation, and bad input failing with one line before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, project_overrides

from crafter_exp.config import (
    AlfworldEnvConfig,
    CrafterEnvConfig,
    HFLocalModelConfig,
    OpenAIModelConfig,
    TinyTrainerConfig,
    compose_config,
)


def cli(*args: str, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crafter_exp", *args], capture_output=True, text=True, cwd=cwd or ROOT, timeout=timeout
    )


def test_default_composition_is_the_offline_pipeline():
    cfg = compose_config()
    assert cfg.stage == "pipeline"
    assert isinstance(cfg.env, CrafterEnvConfig) and cfg.env.difficulty == "normal"
    assert cfg.model.name == "scripted" and cfg.model.prompt.template == "bare"
    assert isinstance(cfg.trainer, TinyTrainerConfig)
    assert cfg.paths.db.endswith("data/traces.duckdb")


@pytest.mark.parametrize(
    "overrides, kind",
    [
        (["env=alfworld"], AlfworldEnvConfig),
        (["model=openai"], OpenAIModelConfig),
        (["model=hf_local", "model.path=/x"], HFLocalModelConfig),
    ],
)
def test_groups_compose_typed_nodes(overrides, kind):
    cfg = compose_config(overrides)
    node = cfg.env if kind is AlfworldEnvConfig else cfg.model
    assert isinstance(node, kind)


def test_misspelt_key_and_wrong_type_fail_at_start():
    with pytest.raises(Exception, match="episodez"):
        compose_config(["env.episodez=3"])
    with pytest.raises(Exception, match="episodes"):
        compose_config(["env.episodes=many"])


def test_help_and_cfg_job_work():
    out = cli("--help")
    assert out.returncode == 0 and "env: alfworld, crafter" in out.stdout and "crafter-exp" in out.stdout
    out = cli("--cfg", "job", "env.episodes=7")
    assert out.returncode == 0 and "episodes: 7" in out.stdout


def _schema_classes() -> list[type]:
    import dataclasses

    import crafter_exp.config as config

    return [v for v in vars(config).values() if isinstance(v, type) and dataclasses.is_dataclass(v)]


@pytest.mark.parametrize("cls", _schema_classes(), ids=lambda c: c.__name__)
def test_every_schema_field_says_what_it_does(cls):
    import dataclasses

    from crafter_exp.options import field_help

    undocumented = [f.name for f in dataclasses.fields(cls) if not field_help(cls, f.name)]
    assert undocumented == []  # metadata={"help": ...}, declared here or in a base the field only re-defaults


def test_options_lists_a_sections_settings_with_composed_values_and_help():
    out = subprocess.run(
        [sys.executable, "-m", "crafter_exp.options", "trainer", "trainer=local_lora", "trainer.lora_r=4"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "trainer: LocalTrainerConfig"
    i = lines.index("trainer.lora_r = 4")
    assert lines[i + 1].strip()  # its help on the next line
    assert "trainer.dataset = None  [not part of the output's identity]" in lines
    from crafter_exp.options import listing

    assert "env.difficulty = 'normal'" in listing("env", [])  # a subclass's own field
    assert "env.data_path = " in listing("env", ["env=alfworld"])


@pytest.mark.parametrize(
    "args, message",
    [(["nosuch"], "unknown config section 'nosuch'"), (["model", "model=nosuch"], "model/nosuch")],
)
def test_options_bad_input_is_one_line(args, message):
    out = subprocess.run(
        [sys.executable, "-m", "crafter_exp.options", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["stage=rollout", "env.episodes=-1"], "env.episodes must be >= 0"),
        (["stage=rollout", "env.max_steps=0"], "env.max_steps must be > 0"),
        (["stage=rollout", "env.seed=-5"], "env.seed must be >= 0"),
        (["stage=nonsense"], "unknown stage"),
        (["stage=rollout", "env=nosuchenv"], "nosuchenv"),
        (["stage=rollout", "ray.num_workers=-1"], "ray.num_workers must be >= 0"),
        (["stage=rollout", "ray.episodes_per_task=0"], "ray.episodes_per_task must be >= 1"),
        (["stage=rollout", "ray.max_task_retries=-5"], "ray.max_task_retries must be >= 0"),
    ],
)
def test_bad_input_is_one_clear_line_and_nonzero_exit(tmp_path, args, message):
    out = cli(*project_overrides(tmp_path), *args, cwd=tmp_path)  # args last: they win (ray.num_workers)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data" / "traces.duckdb").exists()  # nothing written before the check
