"""Per-message `weight` from export to loss: the filter stage marks context replies weight 0 (history windows,
multi_turn); the local trainers put loss on exactly the weight-1 replies' tokens, in JSONL and parquet, also with a
chat template that draws earlier replies differently from the last (Qwen3-style), and a student trained on data
whose context replies are all `noop` does not learn to say `noop`.

Real parts: a real DuckDB trace store, the real filter stage, real tokenizers (the tiny student's, trained on the
data), the real train stage with TRL's trainer.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pandas as pd
import pytest

from crafter_exp.export.validate import validate_path
from crafter_exp.stages import filter as F
from crafter_exp.training import data as data_mod
from crafter_exp.training import tiny

sys.path.insert(0, str(Path(__file__).resolve().parent))
from filter_fixtures import build_store, make_episode  # noqa: E402
from test_filter import cfg_for  # noqa: E402

PROMPT = {
    "template": "standard",
    "history": 2,
    "system_prompt_file": None,
    "action_mode": "text",
    "max_actions_per_turn": 1,
}


def reply_text(seed: int, turn: int) -> str:
    return f"<think>s{seed} t{turn} plan</think>\n<action>{'do' if turn % 2 else 'move_left'}</action>"


def episodes(n: int = 5):
    # odd seeds unlock an achievement at turn 2: step_mode=achievement keeps that turn only
    return [
        make_episode("run-w", s, turns=4 + s % 2, unlock={2: ["collect_wood"]} if s % 2 else {}, reply=reply_text)
        for s in range(n)
    ]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("weights_home")
    build_store(home / "data" / "traces.duckdb", episodes(), run_id="run-w", name="exp", prompt=PROMPT)
    return home


def export(home: Path, out: Path, *overrides: str):
    return F.filter_and_export(cfg_for(home, *overrides, f"filter.output={out}"), progress=False)


def tokenizer_for(examples: list[data_mod.Example]):
    return tiny.train_tokenizer(tiny.message_texts(ex.messages for ex in examples), 400)


def spans(tok, ids: list[int], roles: list[int], role: int) -> list[str]:
    """The decoded runs of tokens with `role`, in order."""
    out, run = [], []
    for t, r in zip(ids + [None], roles + [None]):
        if r == role:
            run.append(t)
        elif run:
            out.append(tok.decode(run))
            run = []
    return out


def learned_and_context(ex: data_mod.Example) -> tuple[list[str], list[str]]:
    """What the rows say: the contents of weight-1 and of weight-0 assistant messages."""
    targets = set(ex.target_indices())
    msgs = ex.messages
    learned = [m["content"] for i, m in enumerate(msgs) if m["role"] == "assistant" and i in targets]
    context = [m["content"] for i, m in enumerate(msgs) if m["role"] == "assistant" and i not in targets]
    return learned, context


def check_mask(data: data_mod.SFTData) -> int:
    """Tokenize every example with the tiny student's tokenizer; the loss mask must cover exactly the weight-1
    replies (each followed by the end token), and the weight-0 ones must be context (no loss)."""
    examples = data.train + data.eval
    tok = tokenizer_for(examples)
    out = data_mod.tokenize_examples(tok, examples, 4096)
    assert len(out.input_ids) == len(examples) and out.split == 0
    n_context = 0
    for ex, ids, roles in zip(examples, out.input_ids, out.roles):
        learned, context = learned_and_context(ex)
        assert spans(tok, ids, roles, data_mod.REPLY) == [c + tiny.END for c in learned]
        assert spans(tok, ids, roles, data_mod.CONTEXT) == [c + tiny.END for c in context]
        n_context += len(context)
    return n_context


# ------------------------------------------------------------------------------------------- export -> mask


def test_history_window_export_trains_only_the_target_reply(home, tmp_path):
    result = export(home, tmp_path / "h")
    data = data_mod.load_sft_data(result.path)
    # every turn is an example; its history replies (up to 2) are context
    assert len(data.train) == result.examples == sum(4 + s % 2 for s in range(5))
    assert all(len(learned_and_context(ex)[0]) == 1 for ex in data.train)
    assert check_mask(data) == sum(min(t, 2) for s in range(5) for t in range(4 + s % 2))


def test_multi_turn_export_trains_only_the_kept_turns(home, tmp_path):
    result = export(home, tmp_path / "m", "filter.multi_turn=true", "filter.step_mode=achievement")
    data = data_mod.load_sft_data(result.path)
    assert len(data.train) == 2  # seeds 1 and 3, conversations up to turn 2
    for ex in data.train:
        learned, context = learned_and_context(ex)
        assert len(learned) == 1 and "t2 plan" in learned[0] and len(context) == 2
    assert check_mask(data) == 4


@pytest.mark.parametrize("multi", [False, True])
def test_parquet_export_carries_weights_to_the_mask(home, tmp_path, multi):
    extra = ["filter.multi_turn=true", "filter.step_mode=achievement"] if multi else []
    result = export(home, tmp_path / "p", "filter.format=parquet", "filter.val_fraction=0.3", *extra)
    frames = [pd.read_parquet(result.path / f) for f in result.files if f.endswith(".parquet")]
    weights = [m["weight"] for df in frames for row in df["messages"] for m in row if m["role"] == "assistant"]
    assert 0 in weights and (1 in weights if multi else None in weights)
    data = data_mod.load_sft_data(result.path)
    assert len(data.train) + len(data.eval) == result.examples
    assert check_mask(data) == (4 if multi else sum(min(t, 2) for s in range(5) for t in range(4 + s % 2)))
    assert validate_path(result.path, cfg_for(home).filter).error_count == 0


def test_multi_turn_openai_tools_export(home, tmp_path):
    result = export(
        home, tmp_path / "t", "filter.format=openai_tools", "filter.multi_turn=true", "filter.step_mode=achievement"
    )
    rows = [json.loads(x) for x in (result.path / "train.jsonl").read_text().splitlines()]
    assert len(rows) == result.examples == 2
    msgs = rows[0]["messages"]
    assert rows[0]["tools"][0]["function"]["name"] == "interact"
    # system, then per turn: observation, tool call, its answer (none after the last turn)
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant", "tool"] * 2 + ["user", "assistant"]
    calls = [m for m in msgs if m["role"] == "assistant"]
    assert [m["weight"] for m in calls] == [0, 0, 1]
    assert [m["content"] for m in calls] == ["s1 t0 plan", "s1 t1 plan", "s1 t2 plan"]
    assert all(json.loads(m["tool_calls"][0]["function"]["arguments"]) == {"actions": ["do"]} for m in calls)
    answers = [m for m in msgs if m["role"] == "tool"]
    assert [a["tool_call_id"] for a in answers] == [c["tool_calls"][0]["id"] for c in calls[:2]]
    assert answers[0]["content"] == "Played: do."
    assert validate_path(result.path, cfg_for(home).filter).error_count == 0
    # the trainer reads it: the tiny template draws the reasoning of each call; only the last call is learned
    data = data_mod.load_sft_data(result.path)
    assert [len(x) for x in learned_and_context(data.train[0])] == [1, 2]
    assert check_mask(data) == 4


@pytest.mark.parametrize(
    "extra", [[], ["filter.multi_turn=true", "filter.step_mode=achievement"]], ids=["history2", "multi_turn"]
)
def test_train_stage_feeds_the_trainer_exactly_the_weight_one_replies(home, tmp_path, monkeypatch, extra):
    """Through the train stage: what it hands TRL's trainer has loss roles on the weight-1 replies only."""
    from conftest import TINY_FAST, project_overrides

    from crafter_exp.config import compose_config
    from crafter_exp.stages.train import train
    from crafter_exp.training.sft import batches

    result = export(home, tmp_path / "ds", *extra)
    fed = []
    real = batches.to_dataset
    monkeypatch.setattr(batches, "to_dataset", lambda tok, *a, **k: fed.append(tok) or real(tok, *a, **k))
    cfg = compose_config(
        project_overrides(tmp_path)
        + TINY_FAST
        + [
            "tracking.enabled=false",
            "trainer.max_steps=1",
            "trainer.eval_fraction=0",
            "trainer.max_length=4096",
            f"trainer.dataset={result.path}",
            f"trainer.output_dir={tmp_path / 'ckpt'}",
        ]
    )
    ckpt = train(cfg).checkpoint
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ckpt))
    data = data_mod.load_sft_data(result.path)
    (given,) = fed
    assert len(given.input_ids) == len(data.train)
    want = sorted(tuple(c + tiny.END for c in learned_and_context(ex)[0]) for ex in data.train)
    got = sorted(tuple(spans(tok, ids, roles, data_mod.REPLY)) for ids, roles in zip(given.input_ids, given.roles))
    assert got == want
    context = sorted(tuple(c + tiny.END for c in learned_and_context(ex)[1]) for ex in data.train)
    assert sorted(tuple(spans(tok, i, r, data_mod.CONTEXT)) for i, r in zip(given.input_ids, given.roles)) == context


def test_context_replies_get_no_loss_in_any_mode():
    import torch

    from crafter_exp.training.sft.loss import role_loss

    torch.manual_seed(0)
    logits = torch.randn(1, 6, 7)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with_context = torch.tensor([[0, 0, 2, 2, 1, 1]])
    without = torch.tensor([[0, 0, -1, -1, 1, 1]])  # the same tokens as padding: no loss at all
    for mode in ("assistant", "all", "weighted"):
        a = role_loss(logits, ids, with_context, mode, 0.5)
        b = role_loss(logits, ids, without, mode, 0.5)
        assert torch.isclose(a.loss, b.loss), mode
        assert a.assistant_tokens == 2


# ------------------------------------------------------------------------------------------- weights read


def test_weights_are_read_strictly():
    row = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "x", "weight": 0},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "y", "weight": 1.0},
        ]
    }
    ex = data_mod.row_to_example(row)
    assert ex.targets == (3,) and all("weight" not in m for m in ex.messages)
    bad = json.loads(json.dumps(row))
    bad["messages"][3]["weight"] = 0.5
    with pytest.raises(ValueError, match="weight must be 0 or 1"):
        data_mod.row_to_example(bad)
    bad["messages"][3]["weight"] = 0
    with pytest.raises(ValueError, match="every assistant message has weight 0"):
        data_mod.row_to_example(bad)
    # Vertex rows have no weights: every model turn is learned
    vertex = {
        "contents": [
            {"role": "user", "parts": [{"text": "a"}]},
            {"role": "model", "parts": [{"text": "x"}]},
            {"role": "user", "parts": [{"text": "b"}]},
            {"role": "model", "parts": [{"text": "y"}]},
        ]
    }
    assert data_mod.row_to_example(vertex).targets == (1, 3)


# ------------------------------------------------------------------------------------------- Qwen3-style template

# Like Qwen3's template: a reply before the last user message is drawn without its <think> block, so rendering a
# conversation prefix that ends with a reply (drawn with it) is not a prefix of the whole conversation.
DROPS_EARLIER_THINK = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "{%- set c = m['content'] -%}"
    "{%- if loop.index0 < ns.last_user and '</think>' in c -%}{%- set c = c.split('</think>')[-1].lstrip() -%}"
    "{%- endif -%}"
    "<|assistant|>{{ c }}<|end|>"
    "{%- elif m['role'] == 'system' -%}"
    "{%- else -%}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def conversation_row(weights: list[int]) -> dict:
    msgs = []
    for t, w in enumerate(weights):
        msgs += [
            {"role": "user", "content": f"obs {t}"},
            {"role": "assistant", "content": f"<think>plan {t}</think> act{t}", "weight": w},
        ]
    return {"messages": msgs}


def conversation(weights: list[int]) -> data_mod.Example:
    return data_mod.row_to_example(conversation_row(weights))


def test_template_drawing_earlier_replies_differently_gives_one_sequence_per_learned_reply():
    ex = conversation([1, 0, 1])
    tok = tokenizer_for([ex])
    tok.chat_template = DROPS_EARLIER_THINK
    out = data_mod.tokenize_examples(tok, [ex], 4096)
    assert out.split == 1 and len(out.input_ids) == 2  # replies 0 and 2 are learned, reply 1 is context
    for (ids, roles), (turn, i) in zip(zip(out.input_ids, out.roles), [(0, 1), (2, 5)]):
        # each sequence is what the model sees when it generates that reply, then the reply with its <think>
        prompt = tok.apply_chat_template(ex.messages[:i], add_generation_prompt=True, tokenize=False)
        assert tok.decode(ids) == prompt + f"<think>plan {turn}</think> act{turn}<|end|>"
        assert spans(tok, ids, roles, data_mod.REPLY) == [f"<think>plan {turn}</think> act{turn}<|end|>"]
        # earlier replies are drawn as history (no <think>) and get no loss; at most the next role header joins them
        context = spans(tok, ids, roles, data_mod.CONTEXT)
        assert [c.removesuffix("<|user|>") for c in context] == [f"act{k}<|end|>" for k in range(turn)]
    # the same data with a template that draws every reply alike stays one sequence
    tok.chat_template = tiny.CHAT_TEMPLATE
    assert data_mod.tokenize_examples(tok, [ex], 4096).split == 0


def test_real_qwen3_template_both_ways(monkeypatch):
    """Qwen3's own template (as TRL ships it): with TRL's patched training template one sequence whose markers
    give each message its role; without it (an unknown template) one sequence per learned reply."""
    import os

    import trl

    qwen3 = Path(os.path.dirname(trl.__file__), "chat_templates", "qwen3.jinja").read_text()
    ex = conversation([1, 0, 1])
    tok = tokenizer_for([ex])
    tok.chat_template = qwen3
    reply = "<think>\nplan {0}\n</think>\n\n act{0}<|im_end|>\n"
    patched = data_mod.tokenize_examples(tok, [ex], 4096)
    assert patched.split == 0 and len(patched.input_ids) == 1
    ids, roles = patched.input_ids[0], patched.roles[0]
    assert spans(tok, ids, roles, data_mod.REPLY) == [reply.format(0), reply.format(2)]
    assert spans(tok, ids, roles, data_mod.CONTEXT) == [reply.format(1)]
    monkeypatch.setattr(data_mod, "training_chat_template", lambda tokenizer: None)
    split = data_mod.tokenize_examples(tok, [ex], 4096)
    assert split.split == 1 and len(split.input_ids) == 2
    assert [spans(tok, i, r, data_mod.REPLY) for i, r in zip(split.input_ids, split.roles)] == [
        [reply.format(0)],
        [reply.format(2)],
    ]
    # in the second sequence the earlier replies are history: Qwen3 drew them without <think>, and no loss
    context = spans(tok, split.input_ids[1], split.roles[1], data_mod.CONTEXT)
    assert [c.split("<|im_end|>")[0] for c in context] == [" act0", " act1"]


def test_train_stage_on_a_qwen3_style_template(tmp_path, tiny_checkpoint):
    """Today such data is refused ("does not render conversation prefixes consistently"); now it trains."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_checkpoint.checkpoint, base, ignore=shutil.ignore_patterns("untrained", "manifest.json"))
    config = json.loads((base / "tokenizer_config.json").read_text())
    config["chat_template"] = DROPS_EARLIER_THINK
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    (base / "chat_template.jinja").unlink(missing_ok=True)
    ds = tmp_path / "ds.jsonl"
    ds.write_text(json.dumps(conversation_row([0, 1, 1])) + "\n" * 1)
    ds.write_text(ds.read_text() * 8)
    from conftest import TINY_FAST, project_overrides

    from crafter_exp.config import compose_config
    from crafter_exp.stages.train import train

    cfg = compose_config(
        project_overrides(tmp_path)
        + TINY_FAST
        + [
            "tracking.enabled=false",
            "trainer=local_full",
            f"trainer.model={base}",
            "trainer.max_steps=2",
            "trainer.eval_fraction=0",
            f"trainer.dataset={ds}",
            f"trainer.output_dir={tmp_path / 'out'}",
        ]
    )
    result = train(cfg)
    assert result.metrics["split_examples"] == 8 and result.metrics["train_examples"] == 16
    assert result.metrics["steps"] == 2


# ------------------------------------------------------------------------------------------- the noop case


@pytest.mark.slow
def test_student_does_not_learn_weight_zero_noop_replies(tmp_path):
    """Two-turn conversations whose first reply is always `noop` (weight 0) and whose second is the teacher's
    (weight 1). Trained on them, the student must not answer a first observation with `noop`: today's code learns
    every assistant message and does (the issue measured 100 % noop over 600 steps of play)."""
    from conftest import TINY_FAST, project_overrides

    from crafter_exp.config import compose_config
    from crafter_exp.stages.train import train
    from crafter_exp.training.synthetic import BARE_PROMPT, synthetic_observation

    rng = random.Random(0)
    obs = {(s, t): synthetic_observation(rng) for s in range(120) for t in range(2)}
    eps = [
        make_episode(
            "run-n",
            s,
            turns=2,
            unlock={1: ["collect_wood"]},
            observation=lambda s, t: obs[(s, t)][0],
            reply=lambda s, t: "noop" if t == 0 else obs[(s, t)][1],
        )
        for s in range(120)
    ]
    home = tmp_path / "home"
    build_store(home / "data" / "traces.duckdb", eps, run_id="run-n", name="exp", prompt=BARE_PROMPT)
    result = export(home, tmp_path / "ds", "filter.multi_turn=true", "filter.step_mode=achievement")
    assert result.examples == 120
    first = json.loads((result.path / "train.jsonl").read_text().splitlines()[0])["messages"]
    assert [(m["content"], m["weight"]) for m in first if m["role"] == "assistant"][0] == ("noop", 0)

    cfg = compose_config(
        project_overrides(tmp_path)
        + TINY_FAST
        + [
            "tracking.enabled=false",
            "trainer.max_steps=60",
            "trainer.learning_rate=3e-3",
            "trainer.eval_fraction=0",
            f"trainer.dataset={result.path}",
            f"trainer.output_dir={tmp_path / 'ckpt'}",
        ]
    )
    ckpt = train(cfg).checkpoint

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ckpt))
    model = AutoModelForCausalLM.from_pretrained(str(ckpt)).eval()
    noop = tok.convert_tokens_to_ids(tok.tokenize("noop"))[0]
    fresh = random.Random(1)
    said_noop = 0
    for _ in range(20):
        prompt = [
            {"role": "system", "content": "Reply with one action name only."},
            {"role": "user", "content": synthetic_observation(fresh)[0]},
        ]
        ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            logits = model(**ids).logits[0, -1]
        said_noop += int(logits.argmax()) == noop
    assert said_noop == 0, f"the student answered noop to {said_noop} of 20 first observations"
