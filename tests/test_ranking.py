"""decoding=rank: candidates scored by the model (policies/scoring.py), hf_local choosing among valid actions, and
ALFWorld's own metrics through a short pipeline."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch

from crafter_exp.config import HFLocalModelConfig
from crafter_exp.policies import Turn, make_policy
from crafter_exp.policies.scoring import choose, score_candidates
from crafter_exp.training import tiny
from crafter_exp.training.synthetic import BARE_PROMPT

COMMANDS = [
    "go to cabinet 1",
    "go to cabinet 10",
    "take mug 1 from cabinet 1",
    "look",
    "open fridge 1",
    "move mug 1 to coffeemachine 1",
    "examine cabinet 1",
    "inventory",
]
PROMPTS = [
    "Your task is to: put a mug in coffeemachine. Observation: You arrive at cabinet 1. On the cabinet 1, "
    "you see a mug 1.",
    "Your task is to: cool some apple. Observation: You are in the middle of a room.",
]
STUDENT = SimpleNamespace(
    architecture="llama", hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, tie_embeddings=True
)
has_alfworld = importlib.util.find_spec("alfworld") is not None


def _student(seed: int = 0):
    tok = tiny.train_tokenizer([*COMMANDS, *PROMPTS] * 3, 300)
    tok.padding_side = "left"
    return tiny.build_student(STUDENT, tok, 256, seed).eval(), tok


def _prompt(tok, text: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def _save(model, tok, folder, temperature=None):
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    manifest = {"prompt": BARE_PROMPT, "play": {"temperature": temperature} if temperature else {}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_batched_scores_equal_one_full_pass_per_candidate():
    """Shared prompt cache, left-padded prompts of different lengths, right-padded candidates: the same numbers
    as scoring each prompt + candidate alone."""
    model, tok = _student()
    prompts = [_prompt(tok, p) for p in PROMPTS]
    cands = [[c + "<|end|>" for c in COMMANDS[:5]], [c + "<|end|>" for c in COMMANDS[3:]]]
    scored = score_candidates(model, tok, prompts, cands)
    for prompt, cs, result in zip(prompts, cands, scored):
        assert len(result.logprob) == len(cs)
        for c, got, n in zip(cs, result.logprob, result.tokens):
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            c_ids = tok(c, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([p_ids + c_ids])).logits[0].float(), dim=-1)
            want = sum(logp[len(p_ids) - 1 + k, t].item() for k, t in enumerate(c_ids))
            assert got == pytest.approx(want, abs=1e-3) and n == len(c_ids)
    # chunking by rows changes nothing
    again = score_candidates(model, tok, prompts, cands, max_rows=2)
    assert [x for r in again for x in r.logprob] == pytest.approx([x for r in scored for x in r.logprob], abs=1e-4)


def test_ranking_picks_the_command_a_tiny_model_was_trained_to_prefer(tmp_path):
    """A tiny model trained to answer `take mug 1 from cabinet 1` ranks it first (also against its prefix-sharing
    neighbours), greedy and sampled, through score_candidates and through hf_local with decoding=rank."""
    model, tok = _student(seed=1)
    target = "take mug 1 from cabinet 1"
    prompt = _prompt(tok, PROMPTS[0])
    ids = torch.tensor([tok(prompt + target + "<|end|>", add_special_tokens=False)["input_ids"]])
    before = score_candidates(model, tok, [prompt], [[c + "<|end|>" for c in COMMANDS]])[0].logprob
    assert max(range(len(COMMANDS)), key=lambda i: before[i]) != COMMANDS.index(target)  # not by luck
    labels = ids.clone()
    labels[0, : len(tok(prompt, add_special_tokens=False)["input_ids"])] = -100  # loss on the reply only
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    after = score_candidates(model, tok, [prompt], [[c + "<|end|>" for c in COMMANDS]])[0]
    assert choose(after.values("sum"), sample=False) == COMMANDS.index(target)
    assert choose(after.values("mean"), sample=False) == COMMANDS.index(target)
    gen = torch.Generator().manual_seed(0)
    picks = [choose(after.values(), sample=True, temperature=1.0, generator=gen) for _ in range(50)]
    assert picks.count(COMMANDS.index(target)) >= 45  # the trained command carries nearly all the mass

    folder = _save(model, tok, tmp_path / "ckpt")
    policy = make_policy(HFLocalModelConfig(path=str(folder), decoding="rank", do_sample=False))
    turn = Turn(episode=0, observation=PROMPTS[0], actions=list(reversed(COMMANDS)), instructions="")
    decision = policy.act([turn])[0]
    assert decision.reply == target
    response = decision.calls[0].response
    assert response["decoding"] == "rank" and response["candidates"] == len(COMMANDS)
    assert response["top"][0][0] == target and response["top"][0][2] > 0.5
    assert decision.calls[0].prompt_tokens == len(tok(_prompt(tok, PROMPTS[0]), add_special_tokens=False)["input_ids"])


def test_rank_mode_replies_only_valid_actions_even_untrained(tmp_path):
    """Random weights, sampled: every reply is one of the turn's actions (Crafter's 17 names or any list)."""
    from crafter_exp.envs.crafter.actions import ACTIONS

    model, tok = _student(seed=2)
    folder = _save(model, tok, tmp_path / "untrained", temperature=1.0)
    policy = make_policy(HFLocalModelConfig(path=str(folder), decoding="rank", batch_size=4))
    turns = [
        Turn(
            episode=i,
            observation=PROMPTS[i % 2],
            actions=list(ACTIONS) if i % 2 else COMMANDS[: 2 + i],
            instructions="",
        )
        for i in range(6)
    ]
    decisions = policy.act(turns)
    assert [d.reply in t.actions for d, t in zip(decisions, turns)] == [True] * 6
    assert len({d.reply for d in policy.act(turns * 1)}) >= 2  # sampled, not one fixed reply
    # a turn with no listed action falls back to free text
    assert len(policy.act([Turn(episode=9, observation=PROMPTS[0], actions=[], instructions="")])) == 1


def test_rollout_resolves_auto_decoding_from_the_env():
    from crafter_exp.stages.rollout import for_env

    cfg = HFLocalModelConfig(path="x")
    assert for_env(cfg, "crafter").decoding == "generate" and for_env(cfg, "crafter").in_process is True
    assert for_env(cfg, "alfworld").decoding == "rank" and for_env(cfg, "alfworld").in_process is False
    assert for_env(HFLocalModelConfig(path="x", decoding="rank"), "crafter").decoding == "rank"


def test_envs_declare_only_known_metrics():
    from crafter_exp import metrics as M
    from crafter_exp.envs import ENVIRONMENTS, env_metrics

    for name in ENVIRONMENTS:
        declared = env_metrics(name)
        assert declared, name
        for d in declared:
            assert d in M.METRICS or d.removesuffix("*") in M.FAMILIES, (name, d)
    assert not M.declared("crafter_score", env_metrics("alfworld"))
    assert M.declared("success/pick_and_place_simple", env_metrics("alfworld"))
    assert not M.declared("success_rate", env_metrics("crafter"))


def _alfworld_data() -> bool:
    from crafter_exp.envs.alfworld.data import resolve_data_path

    try:
        resolve_data_path(None)
    except ValueError:
        return False
    return True


needs_alfworld = pytest.mark.skipif(
    not has_alfworld or not _alfworld_data(), reason="needs the alfworld extra and its game data (ALFWORLD_DATA)"
)


@needs_alfworld
@pytest.mark.alfworld
def test_constrained_decoding_never_plays_an_inadmissible_command(tmp_path):
    """An untrained student sampled over ALFWorld's admissible commands: no invalid step, no parse failure."""
    from crafter_exp.config import AlfworldEnvConfig
    from crafter_exp.runner.play import play_batch

    model, tok = _student(seed=3)
    folder = _save(model, tok, tmp_path / "untrained", temperature=1.0)
    policy = make_policy(HFLocalModelConfig(path=str(folder), decoding="rank"))
    env_cfg = AlfworldEnvConfig(split="eval_in_distribution", max_steps=12)
    records = play_batch(
        env_cfg,
        policy,
        [72, 28],
        {"run_id": "t", "env": "alfworld", "policy": "hf_local", "model": "m", "provider": "local"},
    )
    for r in records:
        assert r.episode["steps"] > 0
        assert r.episode["invalid_actions"] == 0 and r.episode["parse_failures"] == 0
        assert all(row["valid"] and row["parse_ok"] for row in r.steps)
        for row in r.steps:  # the played command was listed as admissible in the observation it answered
            assert row["actions"][0] in row["observation"].split("Admissible commands: ")[1].split(", ")


@needs_alfworld
@pytest.mark.alfworld
@pytest.mark.slow
def test_short_alfworld_pipeline_reports_only_alfworlds_metrics(project):
    import mlflow
    from conftest import project_overrides

    from crafter_exp.config import compose_config
    from crafter_exp.stages.pipeline import pipeline
    from crafter_exp.store.traces import TraceStore

    cfg = compose_config(
        project_overrides(project)
        + [
            "env=alfworld",
            "env.episodes=1",
            "env.seed=105",
            "env.max_steps=8",
            "model.epsilon=0",
            "eval.episodes=2",
            "eval.seed=1000",
            "trainer.max_steps=4",
            "trainer.max_time_s=null",
            "trainer.student.hidden_size=32",
            "trainer.student.num_layers=1",
            "trainer.student.num_heads=2",
            "trainer.student.intermediate_size=64",
            "trainer.eval_fraction=0",
            "trainer.progress=false",
            "compare.bootstrap=100",
            "compare.permutations=99",
        ]
    )
    assert cfg.trainer.max_length == 384 and cfg.env.also_eval_splits == ["eval_out_of_distribution"]
    out = pipeline(cfg)
    report = (out.compare.report_dir / "report.md").read_text()
    for gone in (
        "crafter_score",
        "progression",
        "achievement_rate",
        "mean_achievements",
        "mean_reward",
        "Per-achievement",
        "Action distribution",
    ):
        assert gone not in report, gone
    for shown in ("success_rate", "invalid_action_rate", "Success rate per task type"):
        assert shown in report, shown
    metrics = set(out.compare.table["metric"])
    assert "success_rate" in metrics and not metrics & {"crafter_score", "progression", "mean_achievements"}
    assert not (out.compare.report_dir / "figures" / "reward_distribution.png").exists()
    assert (
        out.verdict.startswith("fine-tuned student success_rate=") and "on valid_unseen: student_after" in out.verdict
    )

    store = TraceStore(cfg.paths.db)
    unseen = out.also_runs["valid_unseen"]["student_after"]
    config = store.get_run(unseen["run_id"])["config"]
    config = config if isinstance(config, dict) else json.loads(config)
    assert config["env"]["split"] == "eval_out_of_distribution" and config["model"]["decoding"] == "rank"
    calls = store.query("SELECT response FROM llm_calls WHERE run_id = ?", [out.eval_runs["student_after"]])
    assert len(calls) > 0
    for response in calls["response"]:
        assert json.loads(response)["decoding"] == "rank"
    after = store.episodes([out.eval_runs["student_after"]])
    assert (after["invalid_actions"] == 0).all() and (after["parse_failures"] == 0).all()

    client = mlflow.MlflowClient(cfg.tracking.uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    # what rollouts, evaluations, compare and the pipeline log (the filter's dataset statistics are its own)
    logged = {
        k
        for r in runs
        if r.data.tags.get("stage") in ("rollout", "eval", "compare", "pipeline")
        for k in r.data.metrics
    }
    assert any(k.endswith("success_rate") for k in logged)
    assert not [k for k in logged if k.endswith(("crafter_score", "progression", "mean_achievements"))]
    assert "valid_unseen/student_after/success_rate" in logged


def test_env_group_carries_its_own_trainer_and_eval_defaults():
    from crafter_exp.config import compose_config

    crafter, alf = compose_config([]), compose_config(["env=alfworld"])
    assert (crafter.trainer.max_length, crafter.trainer.max_steps, crafter.eval.episodes) == (256, 3800, 20)
    assert (alf.trainer.max_length, alf.trainer.max_steps, alf.eval.episodes, alf.env.episodes) == (384, 2000, 40, 200)
    assert alf.trainer.student == crafter.trainer.student  # the same student
    assert (alf.trainer.augment_copies, crafter.trainer.augment_copies) == (4, 0)
    assert (alf.filter.success_only, alf.filter.target, alf.filter.exclude_actions) == (True, "expert", ["look"])
    assert (crafter.filter.success_only, crafter.filter.target, crafter.filter.exclude_actions) == (False, "reply", [])
    assert (alf.env.show_admissible, alf.env.notes) == (False, True)
    # the command line still wins, and another trainer gets none of the tiny student's ALFWorld settings
    assert compose_config(["env=alfworld", "trainer.max_steps=7"]).trainer.max_steps == 7
    lora = compose_config(["env=alfworld", "trainer=local_lora"]).trainer
    assert (lora.max_length, lora.augment_copies) == (2048, 0)


@needs_alfworld
def test_alfworld_offers_valid_unseen_beside_its_eval_split():
    from crafter_exp.config import AlfworldEnvConfig
    from crafter_exp.envs import also_held_out_env_configs, check_env_config

    more = also_held_out_env_configs(AlfworldEnvConfig())
    assert list(more) == ["valid_unseen"] and more["valid_unseen"].split == "eval_out_of_distribution"
    assert also_held_out_env_configs(AlfworldEnvConfig(also_eval_splits=[])) == {}
    with pytest.raises(ValueError, match="also_eval_splits='nope' unknown"):
        check_env_config(AlfworldEnvConfig(also_eval_splits=["nope"]))
