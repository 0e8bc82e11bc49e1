"""The env / model / trainer registries (crafter_exp/registry.py): one-line errors, every entry imports, lazy."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from crafter_exp.config import RandomModelConfig
from crafter_exp.envs import ENVIRONMENTS, env_class
from crafter_exp.errors import UserError
from crafter_exp.policies import POLICIES, Policy, make_policy
from crafter_exp.registry import Registry
from crafter_exp.stages.train import TRAINER_CHECKS, TRAINERS

ROOT = Path(__file__).resolve().parent.parent
HAS_ALFWORLD = importlib.util.find_spec("alfworld") is not None


def _one_line(exc: pytest.ExceptionInfo[UserError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_unknown_env_is_one_line_listing_the_known():
    with pytest.raises(UserError) as exc:
        env_class("minecraft")
    assert _one_line(exc) == "unknown env 'minecraft' (known: crafter, alfworld)"


def test_unknown_model_is_one_line_listing_the_known():
    with pytest.raises(UserError) as exc:
        make_policy(RandomModelConfig(name="gpt5"))
    assert _one_line(exc) == "unknown model 'gpt5' (known: scripted, random, openai, hf_local)"


def test_unknown_trainer_is_one_line_listing_the_known():
    # the trainer registries have a default (any name but openai trains locally, as before the registry), so an
    # unknown trainer is an error only for a registry without one: the same class, the same message
    strict = Registry("trainer", {"openai": "crafter_exp.stages.train_openai:check_openai_trainer_config"})
    with pytest.raises(UserError) as exc:
        strict.get("deepspeed")
    assert _one_line(exc) == "unknown trainer 'deepspeed' (known: openai)"


def test_trainer_names_other_than_openai_train_locally():
    from crafter_exp.stages import train
    from crafter_exp.training.sft import check_local_trainer

    for name in ("tiny", "local_lora", "local_qlora", "local_full", "my_own_trainer"):
        assert TRAINERS.get(name) is train._train_local
        assert TRAINER_CHECKS.get(name) is check_local_trainer
    assert TRAINERS.get("openai") is train._train_openai


def test_unknown_rl_algorithm_is_one_line_before_any_work():
    from crafter_exp.config import compose_config
    from crafter_exp.stages.rl import ALGORITHMS, check_rl_config

    cfg = compose_config(["stage=rl"])
    cfg.rl.name = "ppo"  # a conf/rl option of one's own naming an algorithm that does not exist
    with pytest.raises(UserError) as exc:
        check_rl_config(cfg)
    assert _one_line(exc) == "unknown rl algorithm 'ppo' (known: grpo, rft, dagger)"
    assert all(callable(ALGORITHMS.get(name)) for name in ALGORITHMS)


def test_names_and_membership():
    assert ENVIRONMENTS.names() == ("crafter", "alfworld")
    assert POLICIES.names() == ("scripted", "random", "openai", "hf_local")
    assert list(ENVIRONMENTS) == ["crafter", "alfworld"] and "crafter" in ENVIRONMENTS and "x" not in ENVIRONMENTS
    assert set(TRAINERS.names()) == set(TRAINER_CHECKS.names()) == {"openai", "local"}


def test_a_default_must_be_an_entry():
    with pytest.raises(ValueError):
        Registry("trainer", {"openai": "x:y"}, default="local")


@pytest.mark.parametrize("name", ENVIRONMENTS.names())
def test_every_env_entry_imports(name):
    if name == "alfworld" and not HAS_ALFWORLD:
        pytest.skip("the alfworld extra is not installed")
    cls = env_class(name)
    assert cls.name == name
    assert callable(ENVIRONMENTS.module(name).check_config)


@pytest.mark.parametrize("name", POLICIES.names())
def test_every_policy_entry_imports(name):
    cls = POLICIES.get(name)
    assert isinstance(cls, type) and issubclass(cls, Policy)


@pytest.mark.parametrize("registry", [TRAINERS, TRAINER_CHECKS], ids=["train", "check"])
def test_every_trainer_entry_imports(registry):
    for name in registry.names():
        assert callable(registry.get(name))


def test_registries_are_lazy():
    """Importing the registries imports none of the heavy or optional packages their entries need."""
    code = (
        "import sys, crafter_exp.policies, crafter_exp.envs, crafter_exp.stages.train\n"
        "heavy = ['torch', 'transformers', 'openai', 'alfworld', 'textworld', 'crafter']\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", (out.stdout, out.stderr)
