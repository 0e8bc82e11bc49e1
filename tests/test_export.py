"""Export formats read back by their consumers (datasets/TRL's JSON reader, pandas), checked message by message
against `prompts.build_messages`, and the validator catching each kind of broken line at the right line number."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from crafter_exp import prompts
from crafter_exp.config import PromptConfig
from crafter_exp.envs import env_instructions
from crafter_exp.export.validate import validate_jsonl, validate_path
from crafter_exp.parsing import split_reasoning
from crafter_exp.stages import filter as F

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


def obs_text(seed: int, turn: int) -> str:
    # quotes, backslashes, newlines, tabs, non-ASCII and a control character: JSON escaping must round-trip
    return f'obs s{seed} t{turn}\n"tree" 2 steps north\\west\tcafé ✓ \x01'


def reply_text(seed: int, turn: int) -> str:
    return f"<think>seed {seed}, turn {turn}: go</think>\n<action>{'do' if turn % 2 else 'move_left'}</action>"


def episodes(run: str, n: int = 6):
    return [
        make_episode(
            run,
            s,
            turns=3 + s % 3,
            unlock={1: ["collect_wood"]} if s % 2 else {},
            observation=obs_text,
            reply=reply_text,
        )
        for s in range(n)
    ]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("export_home")
    build_store(home / "data" / "traces.duckdb", episodes("run-x"), run_id="run-x", name="exp", prompt=PROMPT)
    return home


def export(home: Path, tmp: Path, *overrides: str):
    return F.filter_and_export(cfg_for(home, *overrides, f"filter.output={tmp / 'out'}"), progress=False)


def lines(result) -> list[dict]:
    return [json.loads(line) for line in (result.path / "train.jsonl").read_text(encoding="utf-8").splitlines()]


def expected_per_turn(keep_reasoning: bool = True, system: str | None = None) -> list[list[dict]]:
    """Every turn of every episode, as build_messages lays it out, + the reply; history replies weight 0."""
    prompt_cfg = PromptConfig(**PROMPT)
    out = []
    for ep in episodes("run-x"):
        seen: list[tuple[str, str]] = []
        for step in ep.steps:
            reply = step["reply"] if keep_reasoning else split_reasoning(step["reply"])[1]
            msgs = prompts.build_messages(
                prompt_cfg, env_instructions("crafter"), step["observation"], seen, system_override=system
            )
            msgs = [dict(m, weight=0) if m["role"] == "assistant" else m for m in msgs]
            out.append(msgs + [{"role": "assistant", "content": reply}])
            seen.append((step["observation"], reply))
    return out


def test_openai_chat_is_what_build_messages_gives(home, tmp_path):
    got = [ex["messages"] for ex in lines(export(home, tmp_path))]
    assert got == expected_per_turn()
    assert got[2][1]["content"] == obs_text(0, 0) and len(got[2]) == 1 + 2 * 2 + 2  # system, 2 turns, obs, reply


def test_strip_reasoning_and_system_prompt(home, tmp_path):
    got = [
        ex["messages"]
        for ex in lines(export(home, tmp_path / "a", "filter.keep_reasoning=false", "filter.system_prompt=Play well."))
    ]
    assert got == expected_per_turn(keep_reasoning=False, system="Play well.")
    assert all("<think>" not in m["content"] for ex in got for m in ex)
    appended = lines(
        export(home, tmp_path / "b", "filter.system_prompt=Extra rule.", "filter.system_prompt_mode=append")
    )
    system = appended[0]["messages"][0]["content"]
    assert system.startswith(env_instructions("crafter").strip()) and system.endswith("\n\nExtra rule.")
    manifest = json.loads((tmp_path / "b/out/manifest.json").read_text())
    assert Path(manifest["prompt"]["system_prompt_file"]).read_text() == system


def test_multi_turn_openai_chat(home, tmp_path):
    result = export(home, tmp_path, "filter.multi_turn=true", "filter.step_mode=achievement")
    got = lines(result)
    # odd seeds unlock at turn 1: the conversation runs to turn 1, turn 0 is context (weight 0), turn 1 trained
    assert result.examples == 3 and result.episodes == 3
    msgs = got[0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert [m.get("weight") for m in msgs if m["role"] == "assistant"] == [0, 1]
    assert msgs[3]["content"] == obs_text(1, 1) and msgs[4]["content"] == reply_text(1, 1)


def test_chat_formats_load_with_datasets(home, tmp_path):
    from datasets import load_dataset

    for i, (fmt, extra) in enumerate(
        [
            ("openai_chat", []),
            ("openai_chat", ["filter.multi_turn=true"]),
            ("openai_tools", []),
            ("vertex_gemini", []),
            ("single_turn", []),
        ]
    ):
        result = export(home, tmp_path / str(i), f"filter.format={fmt}", *extra)
        ds = load_dataset(
            "json", data_files=str(result.path / "train.jsonl"), split="train", cache_dir=str(tmp_path / "hf_cache")
        )
        assert ds.num_rows == result.examples > 0, fmt
        report = validate_path(result.path, cfg_for(home).filter)
        assert report.error_count == 0 and report.examples == result.examples, (fmt, report.errors[:3])


def test_openai_tools_targets_are_tool_calls(home, tmp_path):
    got = lines(export(home, tmp_path, "filter.format=openai_tools"))
    first = got[1]  # seed 0, turn 1
    assert first["tools"][0]["function"]["name"] == "interact"
    target = first["messages"][-1]
    assert target["content"] == "seed 0, turn 1: go"
    call = target["tool_calls"][0]
    assert call["type"] == "function" and json.loads(call["function"]["arguments"]) == {"actions": ["do"]}
    # the prompt is what the policy was shown: earlier replies as text
    assert first["messages"][-2] == {"role": "user", "content": obs_text(0, 1)}
    assert first["messages"][-3]["content"] == reply_text(0, 0)


def test_vertex_and_single_turn_shapes(home, tmp_path):
    vertex = lines(export(home, tmp_path / "v", "filter.format=vertex_gemini"))
    chat = expected_per_turn()
    for ex, msgs in zip(vertex, chat):
        assert ex["systemInstruction"]["parts"][0]["text"] == msgs[0]["content"]
        assert [c["role"] for c in ex["contents"]] == [
            "model" if m["role"] == "assistant" else "user" for m in msgs[1:]
        ]
        assert [c["parts"][0]["text"] for c in ex["contents"]] == [m["content"] for m in msgs[1:]]
    single = lines(export(home, tmp_path / "s", "filter.format=single_turn"))
    for ex, msgs in zip(single, chat):
        assert ex["prompt_data"]["content"] == "\n".join(f"{m['role']}: {m['content']}" for m in msgs[:-1])
        assert ex["response_data"]["content"] == msgs[-1]["content"]


def test_parquet_split_by_episode(tmp_path):
    home = tmp_path / "p"
    build_store(home / "data" / "traces.duckdb", episodes("run-p", n=20), run_id="run-p", name="exp", prompt=PROMPT)
    result = export(home, tmp_path, "filter.format=parquet", "filter.val_fraction=0.25", "filter.seed=3")
    out = result.path
    assert result.files == ["train.parquet", "val.parquet", "train.csv", "val.csv", "raw_trajectories.json"]
    train, val = pd.read_parquet(out / "train.parquet"), pd.read_parquet(out / "val.parquet")
    key = lambda df: {(x["run_id"], x["seed"]) for x in df["extra_info"]}  # noqa: E731
    assert len(key(val)) == 5 and len(key(train)) == 15 and not key(train) & key(val)
    assert len(train) + len(val) == result.examples == sum(3 + s % 3 for s in range(20))
    row = train.iloc[0]
    assert row["prompt_data"]["content"].startswith("system: ") and row["response_data"]["content"]
    assert (
        list(row["messages"][-1].keys()) == ["role", "content", "weight"] and row["messages"][-1]["role"] == "assistant"
    )
    # history replies are context (weight 0), the target is learned (no weight: absent means 1)
    assert [m["weight"] for m in row["messages"] if m["role"] == "assistant"][-1] is None
    assert all(m["weight"] == 0 for m in row["messages"][:-1] if m["role"] == "assistant")
    assert row["reward_model"]["ground_truth"] in ("do", "move_left")
    csv = pd.read_csv(out / "val.csv")
    assert len(csv) == len(val) and json.loads(csv["messages"].iloc[0])[0]["role"] == "system"
    raw = json.loads((out / "raw_trajectories.json").read_text())
    assert len(raw) == 20 and {r["split"] for r in raw} == {"train", "val"}
    assert sum(len(r["steps"]) for r in raw) == result.examples
    assert result.manifest["splits"]["val"]["episodes"] == 5
    # same seed, same split; another seed, another split
    again = export(home, tmp_path / "2", "filter.format=parquet", "filter.val_fraction=0.25", "filter.seed=3")
    other = export(home, tmp_path / "3", "filter.format=parquet", "filter.val_fraction=0.25", "filter.seed=4")
    assert again.digest == result.digest != other.digest
    assert validate_path(out, cfg_for(home).filter).error_count == 0


# ---------------------------------------------------------------------------------------------- validator

GOOD_CHAT = {
    "messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]
}
BROKEN_CHAT = [
    ("", "empty line"),
    ("{bad json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"text": "hi"}), "no `messages` field"),
    (json.dumps({"messages": []}), "non-empty list"),
    (json.dumps({"messages": [{"role": "bot", "content": "x"}]}), "messages[0].role 'bot'"),
    (json.dumps({"messages": [{"role": "user", "content": "u"}]}), "no assistant message"),
    (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "u"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "u2"},
                ]
            }
        ),
        "last message is not from the assistant",
    ),
    (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "u"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ),
        "must come first",
    ),
    (
        json.dumps({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}),
        "messages[0].content must be a string",
    ),
    (
        json.dumps(
            {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a", "weight": 2}]}
        ),
        "weight must be 0 or 1",
    ),
]
TOOLS = [{"type": "function", "function": {"name": "interact", "parameters": {"type": "object"}}}]


def tool_line(arguments: str, name: str = "interact", tools=TOOLS) -> str:
    call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}
    row = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": None, "tool_calls": [call]}]}
    if tools is not None:
        row["tools"] = tools
    return json.dumps(row)


BROKEN_TOOLS = [
    (tool_line('{"actions": ["do"'), "arguments is not valid JSON"),
    (tool_line('{"actions": ["do"]}', name="move"), "calls 'move', not among the tools"),
    (tool_line('{"actions": ["do"]}', tools=None), "no `tools` field"),
    (tool_line('["do"]'), "must encode an object"),
]
GOOD_VERTEX = {
    "systemInstruction": {"parts": [{"text": "s"}]},
    "contents": [{"role": "user", "parts": [{"text": "u"}]}, {"role": "model", "parts": [{"text": "a"}]}],
}
BROKEN_VERTEX = [
    (
        json.dumps(
            {"contents": [{"role": "user", "parts": [{"text": "u"}]}, {"role": "assistant", "parts": [{"text": "a"}]}]}
        ),
        "must be 'user' or 'model'",
    ),
    (json.dumps({"contents": [{"role": "user", "parts": [{"text": "u"}]}]}), "last turn is not from the model"),
    (
        json.dumps(
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "u"}]},
                    {"role": "user", "parts": [{"text": "v"}]},
                    {"role": "model", "parts": [{"text": "a"}]},
                ]
            }
        ),
        "two 'user' turns in a row",
    ),
    (
        json.dumps({"contents": [{"role": "user"}, {"role": "model", "parts": [{"text": "a"}]}]}),
        "contents[0].parts must be a non-empty list",
    ),
    (json.dumps({"messages": []}), "no `contents` field"),
]
GOOD_SINGLE = {"prompt_data": {"content": "user: u"}, "response_data": {"content": "a"}}
BROKEN_SINGLE = [
    (json.dumps({"prompt_data": {"content": "user: u"}}), "no `response_data` field"),
    (json.dumps({"prompt_data": {"content": ""}, "response_data": {"content": "a"}}), "prompt_data.content is empty"),
    (json.dumps({"prompt_data": "u", "response_data": {"content": "a"}}), "`prompt_data` must be {'content'"),
]


@pytest.mark.parametrize(
    "fmt, good, broken",
    [
        ("openai_chat", GOOD_CHAT, BROKEN_CHAT),
        ("openai_tools", json.loads(tool_line('{"actions": ["do"]}')), BROKEN_TOOLS),
        ("vertex_gemini", GOOD_VERTEX, BROKEN_VERTEX),
        ("single_turn", GOOD_SINGLE, BROKEN_SINGLE),
    ],
)
def test_validator_reports_each_broken_line(tmp_path, fmt, good, broken):
    # good, broken, good, broken, ...: broken line k sits at line 2k + 2
    rows = [json.dumps(good)]
    for text, _ in broken:
        rows += [text, json.dumps(good)]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = validate_jsonl(path, fmt, lambda s: len(s))
    assert report.lines == len(rows) and report.examples == len(broken) + 1
    assert [e.line for e in report.errors] == [2 * k + 2 for k in range(len(broken))]
    for error, (_, fragment) in zip(report.errors, broken):
        assert fragment in error.message, (error, fragment)


def test_validate_stage_counts_tokens_and_cost(home, tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    data = tmp_path / "user.jsonl"
    row = {"messages": [{"role": "user", "content": "hello there you"}, {"role": "assistant", "content": "hi all"}]}
    data.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    cfg = cfg_for(
        home,
        f"filter.validate_path={data}",
        f"filter.tokenizer={tmp_path / 'tokenizer.json'}",
        "filter.price_model=gpt-4o-2024-08-06",
        "filter.cost_epochs=2",
    )
    from crafter_exp.__main__ import run_stage

    report = run_stage(dataclasses_replace_stage(cfg, "validate"))
    # 3 + 2 words per example, + 4 framing tokens per message; format auto-detected
    assert report.format == "openai_chat" and report.examples == 2
    assert report.prompt_tokens == 2 * (3 + 4) and report.trained_tokens == 2 * (2 + 4)
    assert report.cost == pytest.approx(26 * 2 * 25.0 / 1e6)
    assert "estimated training cost" in capsys.readouterr().out
    # the chars/4 estimate when no tokenizer is configured
    est = validate_path(data, cfg_for(home).filter)
    assert est.prompt_tokens == 2 * (4 + 4) and est.token_counter.startswith("estimate")
    data.write_text(json.dumps(row) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"1 broken line\(s\); first: line 2: invalid JSON"):
        run_stage(dataclasses_replace_stage(cfg, "validate"))


def dataclasses_replace_stage(cfg, stage):
    import dataclasses

    return dataclasses.replace(cfg, stage=stage)


def test_validate_detects_files_changed_after_export(home, tmp_path):
    result = export(home, tmp_path)
    path = result.path / "train.jsonl"
    path.write_text(path.read_text().replace("move_left", "move_right"))
    report = validate_path(result.path, cfg_for(home).filter)
    assert report.error_count == 1 and "differs from the manifest" in report.errors[0].message


def test_validate_missing_file_and_unknown_format(home, tmp_path):
    result = export(home, tmp_path)
    (result.path / "train.jsonl").unlink()
    report = validate_path(result.path, cfg_for(home).filter)
    assert "missing" in str(report.errors[0]) and not str(report.errors[0]).startswith("line")
    with pytest.raises(ValueError, match="unknown filter.validate_format"):
        validate_path(result.path, cfg_for(home, "filter.validate_format=csv").filter)
