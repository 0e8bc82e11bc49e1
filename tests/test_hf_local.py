"""model=hf_local: batched generation from a local checkpoint, prompts from the manifest, played through the runner."""

from __future__ import annotations

import dataclasses
import random
import shutil

import pytest

from crafter_exp import prompts
from crafter_exp.config import HFLocalModelConfig, PromptConfig
from crafter_exp.errors import UserError
from crafter_exp.parsing import parse_reply
from crafter_exp.policies import Turn, make_policy
from crafter_exp.training.synthetic import DIRECTIONS, synthetic_observation

ACTIONS = ["do", "noop", *DIRECTIONS.values()]


def canonical(text: str):
    return text if text in ACTIONS else None


def held_out(n: int, seed: int = 12345) -> list[tuple[str, str]]:
    rng = random.Random(seed)  # the fixture's data used seed 0: these observations are new
    return [synthetic_observation(rng) for _ in range(n)]


def turns_for(pairs: list[tuple[str, str]]) -> list[Turn]:
    return [Turn(episode=i, observation=obs, actions=ACTIONS, instructions="") for i, (obs, _) in enumerate(pairs)]


def accuracy(policy, pairs) -> float:
    decisions = policy.act(turns_for(pairs))
    return sum(d.reply == a for d, (_, a) in zip(decisions, pairs)) / len(pairs)


@pytest.fixture(scope="module")
def after(tiny_checkpoint):
    policy = make_policy(tiny_checkpoint.policy_after(batch_size=16, do_sample=False))
    policy.start()
    return policy


def test_batched_generation_returns_one_parsed_decision_per_turn(after):
    pairs = held_out(40)
    turns = turns_for(pairs)
    decisions = after.act(turns)  # 40 turns, batch_size 16: three generate calls
    assert len(decisions) == len(turns)
    parsed = [parse_reply(d.reply, d.tool_calls, canonical) for d in decisions]
    assert sum(ok for _, ok in parsed) / len(parsed) > 0.9
    call = decisions[0].calls[0]
    assert call.messages == prompts.build_messages(after.prompt, "", pairs[0][0])
    assert call.prompt_tokens > 10 and 1 <= call.completion_tokens <= 2 and call.error is None
    assert decisions[0].error is None


def test_trained_student_beats_its_untrained_self_on_held_out_prompts(tiny_checkpoint, after):
    pairs = held_out(100)
    before = make_policy(tiny_checkpoint.policy_before(batch_size=100, max_new_tokens=4, do_sample=False))
    acc_before, acc_after = accuracy(before, pairs), accuracy(after, pairs)
    assert acc_after > 0.6, acc_after  # the commonest action is ~25 % of the data
    assert acc_before < 0.3 and acc_after > acc_before + 0.3


def test_left_padded_batch_decodes_like_one_at_a_time(after):
    pairs = held_out(12, seed=7)
    texts = [
        after.tokenizer.apply_chat_template(after.messages(t), tokenize=False, add_generation_prompt=True)
        for t in turns_for(pairs)
    ]
    assert len({len(after.tokenizer(t)["input_ids"]) for t in texts}) > 1, "need prompts of different lengths"
    batched = [r for r, *_ in after.generate(texts)]
    single = [after.generate([t])[0][0] for t in texts]
    assert batched == single


def test_prompt_and_decoding_come_from_the_manifest_unless_set(tiny_checkpoint, after):
    assert after.prompt.template == "bare"
    recommended = make_policy(tiny_checkpoint.policy_after())
    assert (recommended.do_sample, recommended.temperature) == (True, 0.7)  # the tiny trainer's play_temperature
    assert recommended.max_new_tokens == 2
    before = make_policy(tiny_checkpoint.policy_before())
    assert (before.do_sample, before.temperature, before.max_new_tokens) == (True, 0.7, 2)
    assert tiny_checkpoint.manifest["prompt"]["template"] == "bare"
    own = make_policy(tiny_checkpoint.policy_after(prompt=PromptConfig(template="standard")))
    assert own.prompt.template == "standard"
    msgs = own.messages(Turn(episode=0, observation="x", actions=ACTIONS, instructions="RULES"))
    assert "RULES" in msgs[0]["content"] and "<action>" in msgs[0]["content"]


def test_sampling_is_seeded_per_episode_whatever_the_batch(tiny_checkpoint):
    pairs = held_out(30, seed=3)
    cfg = tiny_checkpoint.policy_after(do_sample=True, temperature=2.0)
    turns = turns_for(pairs)
    first = [d.reply for d in make_policy(cfg, seed=5).act(turns)]
    # the same episodes in another order and other batches: the same decisions
    regrouped = make_policy(dataclasses.replace(cfg, batch_size=7), seed=5)
    shuffled = list(reversed(turns))
    again = {t.episode: d.reply for t, d in zip(shuffled, regrouped.act(shuffled))}
    assert first == [again[t.episode] for t in turns]
    other_seed = [d.reply for d in make_policy(cfg, seed=6).act(turns)]
    greedy = [d.reply for d in make_policy(tiny_checkpoint.policy_after(do_sample=False)).act(turns)]
    assert first != other_seed and first != greedy  # temperature 2 on 30 decisions: it does sample


def test_plays_crafter_episodes_through_the_runner(tiny_checkpoint):
    from crafter_exp.config import CrafterEnvConfig
    from crafter_exp.runner.play import play_batch

    policy = make_policy(tiny_checkpoint.policy_after())
    env_cfg = CrafterEnvConfig(max_steps=4)
    meta = {"run_id": "t", "env": "crafter", "policy": "hf_local", "model": policy.model_name, "provider": "local"}
    records = play_batch(env_cfg, policy, [0, 1, 2], meta)
    assert [r.episode["seed"] for r in records] == [0, 1, 2]
    assert all(r.episode["steps"] == 4 and r.episode["llm_calls"] == 4 for r in records)
    assert all(isinstance(row["reply"], str) for r in records for row in r.steps)


def test_bad_paths_are_clear_errors(tmp_path, tiny_checkpoint):
    with pytest.raises(ValueError, match="model.path is not set"):
        make_policy(HFLocalModelConfig())
    with pytest.raises(UserError, match="model.path not found"):
        make_policy(HFLocalModelConfig(path="/no/such/checkpoint"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint.checkpoint, broken, ignore=shutil.ignore_patterns("*.safetensors", "untrained"))
    policy = make_policy(HFLocalModelConfig(path=str(broken)))
    with pytest.raises(UserError, match="cannot load checkpoint"):
        policy.start()


def test_label_and_config_round_trip(tiny_checkpoint):
    cfg = tiny_checkpoint.policy_after()
    assert cfg.label == "student_after" and cfg.path == str(tiny_checkpoint.checkpoint)
    assert dataclasses.replace(cfg, batch_size=4).batch_size == 4


def test_decoding_follows_the_manifest_unless_set():
    from crafter_exp.policies.hf_local import resolve_decoding

    recommends = {"play": {"temperature": 0.7}}
    assert resolve_decoding(HFLocalModelConfig(), recommends) == (True, 0.7)
    assert resolve_decoding(HFLocalModelConfig(), {"play": {"temperature": None}}) == (False, 1.0)
    assert resolve_decoding(HFLocalModelConfig(do_sample=False), recommends) == (False, 0.7)
    assert resolve_decoding(HFLocalModelConfig(temperature=1.3), recommends) == (True, 1.3)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        resolve_decoding(HFLocalModelConfig(do_sample=True, temperature=0.0), {})
