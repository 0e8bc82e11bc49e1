"""Trainer stage (local SFT): the tiny student learns, checkpoints are complete, LoRA / hub-path code paths, bad input.

Real parts throughout: real tokenizers, real transformers models (tiny, random init), TRL's trainer, MLflow sqlite.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_FAST, project_overrides

from crafter_exp.config import compose_config
from crafter_exp.errors import UserError
from crafter_exp.stages.train import train
from crafter_exp.training import data as data_mod
from crafter_exp.training.sft.loss import role_loss
from crafter_exp.training.sft.schedule import ProgressClock, lr_factor
from crafter_exp.training.synthetic import write_synthetic_dataset


def make_cfg(home: Path, *extra: str, tracking: bool = False):
    over = project_overrides(home) + TINY_FAST + list(extra)
    if not tracking:
        over.append("tracking.enabled=false")
    return compose_config(over)


@pytest.fixture
def synth(tmp_path) -> Path:
    return write_synthetic_dataset(tmp_path / "data" / "datasets" / "default", 200, seed=1)


# ------------------------------------------------------------------------------------------- learning


def test_tiny_student_learns_the_synthetic_rule(tiny_checkpoint):
    m = tiny_checkpoint.metrics
    assert m["train_loss"] < 0.5 * m["train_loss_first"]
    # five actions occur, none in more than ~25 % of examples: a model that ignores the observation stays near that
    assert m["eval_reply_accuracy"] > 0.6, m
    assert m["trained_tokens"] > 0 and m["tokens_per_s"] > 0
    assert m["truncated_examples"] == 0 and m["dropped_examples"] == 0


def test_checkpoint_manifest_is_complete(tiny_checkpoint):
    ckpt = tiny_checkpoint.checkpoint
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["kind"] == "full" and manifest["base_model"] == "tiny"
    assert manifest["dataset_digest"] == "synthetic-1600-0"
    assert manifest["prompt"]["template"] == "bare"
    assert manifest["trainer"]["name"] == "tiny" and manifest["trainer"]["max_steps"] == 110
    assert manifest["metrics"]["steps"] == 110
    assert manifest["untrained"] == "untrained"
    assert manifest["play"]["max_new_tokens"] == 2  # an action name and the end token
    for name in ("config.json", "model.safetensors", "tokenizer.json", "untrained/model.safetensors"):
        assert (ckpt / name).is_file(), name
    assert not list(ckpt.parent.glob(".*staging*")), "staging folder left behind"
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["hidden_size"] == 128 and cfg["tie_word_embeddings"]


def test_rerun_with_same_config_skips_and_retrain_trains(tmp_path, synth):
    cfg = make_cfg(tmp_path, "trainer.max_steps=2", "trainer.eval_fraction=0")
    first = train(cfg)
    assert not first.skipped
    mtime = (first.checkpoint / "manifest.json").stat().st_mtime
    again = train(cfg)
    assert again.skipped and again.checkpoint == first.checkpoint
    assert (first.checkpoint / "manifest.json").stat().st_mtime == mtime
    redo = train(make_cfg(tmp_path, "trainer.max_steps=2", "trainer.eval_fraction=0", "trainer.retrain=true"))
    assert not redo.skipped


def test_time_budget_stops_training(tmp_path, synth):
    cfg = make_cfg(tmp_path, "trainer.max_steps=100000", "trainer.max_time_s=2", "trainer.eval_fraction=0")
    t0 = time.monotonic()
    result = train(cfg)
    assert result.metrics["stopped_by_time"] is True
    assert result.metrics["steps"] < 100000
    assert time.monotonic() - t0 < 60


@pytest.mark.slow
def test_interrupted_training_resumes_from_its_last_checkpoint(tmp_path, synth, capsys):
    """Ctrl-C a CLI training run after its first checkpoints; the rerun picks up there and finishes the same steps."""
    import signal
    import subprocess
    import sys

    args = [
        *project_overrides(tmp_path),
        *TINY_FAST,
        "tracking.enabled=false",
        "trainer.max_steps=300",
        "trainer.eval_steps=20",
        "trainer.eval_fraction=0",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "crafter_exp", "stage=train", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = tmp_path / "data" / "checkpoints" / "default"  # the stage's output: checkpoints/default/<identity>

    def saved_steps() -> list[int]:  # whole checkpoints: trainer_state.json is written last
        return sorted(
            int(p.parent.name.split("-")[1]) for p in checkpoints.glob(".*.work-*/checkpoint-*/trainer_state.json")
        )

    deadline = time.monotonic() + 180
    while not any(step >= 40 for step in saved_steps()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    [workdir] = checkpoints.glob(".*.work-*")
    kept = saved_steps()
    assert kept and kept[-1] >= 40 and not list(checkpoints.glob("*/manifest.json"))  # nothing published

    result = train(compose_config(args))
    assert f"resuming from {workdir / f'checkpoint-{kept[-1]}'}" in capsys.readouterr().out
    assert result.metrics["steps"] == 300
    # this process trained only the steps after the checkpoint
    assert 0 < result.metrics["trained_tokens"] < (300 - kept[-1]) * 32 * 40
    assert (result.checkpoint / "manifest.json").is_file() and not workdir.exists()


def test_resume_skips_a_checkpoint_cut_short_while_saving(tmp_path):
    from crafter_exp.training.sft.resume import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "none") is None
    for step, state in ((40, '{"global_step": 40}'), (60, None), (80, '{"global_st')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-40")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-40"]  # the partial ones are gone


# ------------------------------------------------------------------------------------------- code paths


def test_lora_on_tiny_saves_an_adapter_with_its_base(tmp_path, synth):
    cfg = make_cfg(
        tmp_path,
        "trainer=local_lora",
        "trainer.model=tiny",
        "trainer.max_steps=3",
        "trainer.lora_r=4",
        "trainer.lora_alpha=8",
        "trainer.eval_fraction=0",
        "trainer.merge_adapter=true",
    )
    result = train(cfg)
    ckpt = result.checkpoint
    manifest = result.manifest
    assert manifest["kind"] == "adapter" and manifest["base_model"] == "base_model"
    assert (ckpt / "adapter_config.json").is_file() and (ckpt / "adapter_model.safetensors").is_file()
    assert (ckpt / "base_model" / "model.safetensors").is_file()
    assert (ckpt / "merged" / "model.safetensors").is_file()
    assert result.metrics["trainable_params"] < result.metrics["params"] / 2
    before = result.policy_before()
    assert Path(before.path) == ckpt / "base_model"
    # hf_local plays the adapter (base from the manifest, merged at load) and the merged copy alike
    from crafter_exp.policies import Turn, make_policy

    turn = Turn(episode=0, observation="nearest:\ntree 1 steps north\nfacing grass", actions=[], instructions="")
    adapter_policy = make_policy(result.policy_after(max_new_tokens=3))
    merged_policy = make_policy(result.policy_after(path=str(ckpt / "merged"), max_new_tokens=3))
    assert adapter_policy._is_adapter() and not merged_policy._is_adapter()
    assert adapter_policy.act([turn])[0].reply == merged_policy.act([turn])[0].reply


def test_hub_path_model_trains_full_and_lora(tmp_path, synth, tiny_checkpoint):
    """Same code path for a pretrained model given as a local folder (what a hub id resolves to)."""
    base = tiny_checkpoint.checkpoint  # a complete transformers folder: config, weights, tokenizer, chat template
    full = train(
        make_cfg(
            tmp_path,
            "trainer=local_full",
            f"trainer.model={base}",
            "trainer.max_steps=2",
            "trainer.eval_fraction=0",
            "trainer.output_dir=" + str(tmp_path / "full"),
        )
    )
    assert full.manifest["kind"] == "full" and full.manifest["base_model"] == str(base.resolve())
    assert full.manifest["untrained"] == str(base.resolve())
    lora = train(
        make_cfg(
            tmp_path,
            "trainer=local_lora",
            f"trainer.model={base}",
            "trainer.max_steps=2",
            "trainer.eval_fraction=0",
            "trainer.output_dir=" + str(tmp_path / "lora"),
        )
    )
    assert lora.manifest["kind"] == "adapter" and lora.manifest["base_model"] == str(base.resolve())
    assert not (lora.checkpoint / "base_model").exists()  # a pretrained base is referenced, not copied


def test_mlflow_run_records_params_curve_dataset_and_checkpoint(tmp_path, synth):
    import mlflow

    cfg = make_cfg(
        tmp_path,
        "trainer.max_steps=6",
        "trainer.logging_steps=2",
        "trainer.eval_steps=3",
        "trainer.eval_fraction=0.2",
        tracking=True,
    )
    result = train(cfg)
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking.uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.params["trainer.learning_rate"] == str(cfg.trainer.learning_rate)
    assert run.data.tags["stage"] == "train"
    assert run.data.tags["checkpoint"] == str(result.checkpoint.resolve())
    for key in ("trained_tokens", "tokens_per_s", "train_time_s", "peak_memory_mb", "final_eval_loss"):
        assert key in run.data.metrics, key
    curve = client.get_metric_history(run.info.run_id, "loss")
    assert [p.step for p in curve] == [2, 4, 6]
    assert len(client.get_metric_history(run.info.run_id, "eval_loss")) >= 2
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == "synthetic-200-1"


# ------------------------------------------------------------------------------------------- loss masking


def test_role_loss_modes_match_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 7)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    roles = torch.tensor([[0, 0, 0, 1, 1]])  # targets 2,3,4 (prompt,prompt,assistant), 5 (assistant)
    ce = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")
    prompt, asst = ce[:2].mean(), ce[2:].mean()
    assert math.isclose(role_loss(logits, ids, roles, "assistant", 0.5).loss.item(), asst.item(), rel_tol=1e-5)
    assert math.isclose(role_loss(logits, ids, roles, "all", 0.5).loss.item(), ce.mean().item(), rel_tol=1e-5)
    assert math.isclose(
        role_loss(logits, ids, roles, "weighted", 0.5).loss.item(), (asst + 0.5 * prompt).item(), rel_tol=1e-5
    )
    padded = role_loss(
        torch.cat([logits, logits[:, :1]], 1),
        torch.tensor([[1, 2, 3, 4, 5, 0]]),
        torch.tensor([[0, 0, 0, 1, 1, -1]]),
        "all",
        0.5,
    )
    assert math.isclose(padded.loss.item(), ce.mean().item(), rel_tol=1e-5), "padding must not count"


def test_assistant_masks_from_template_and_from_prefixes(tiny_checkpoint):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint.checkpoint))
    ex = data_mod.Example(
        [
            {"role": "system", "content": "Reply with one action name only."},
            {"role": "user", "content": "facing tree"},
            {"role": "assistant", "content": "do"},
        ]
    )
    with_markers = data_mod.tokenize_examples(tok, [ex], 256)
    reply = [t for t, r in zip(with_markers.input_ids[0], with_markers.roles[0]) if r]
    assert tok.decode(reply) == "do<|end|>"
    # a template without {% generation %} markers: masks come from rendering conversation prefixes
    tok.chat_template = tok.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    from_prefixes = data_mod.tokenize_examples(tok, [ex], 256)
    assert from_prefixes.input_ids == with_markers.input_ids and from_prefixes.roles == with_markers.roles


def test_schedule_warms_up_decays_to_floor_and_follows_the_clock():
    assert lr_factor("cosine", 0.0, 0.1, 0.1) == pytest.approx(1e-3)
    assert lr_factor("cosine", 0.05, 0.1, 0.1) == pytest.approx(0.5)
    assert lr_factor("cosine", 0.1, 0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor("cosine", 1.0, 0.1, 0.1) == pytest.approx(0.1)
    assert lr_factor("linear", 0.55, 0.1, 0.0) == pytest.approx(0.5)
    clock = ProgressClock(max_time_s=10.0)
    clock.num_steps = 1000
    clock.t0 = time.monotonic() - 5.0  # half the time budget spent after 10 steps: time wins
    assert clock.progress(10) == pytest.approx(0.5, abs=0.01)


# ------------------------------------------------------------------------------------------- data formats


def test_loader_reads_vertex_prompt_completion_and_parquet(tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_text(
        json.dumps(
            {
                "systemInstruction": {"parts": [{"text": "sys"}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "obs"}]},
                    {"role": "model", "parts": [{"text": "do"}]},
                ],
            }
        )
        + "\n"
        + json.dumps({"prompt": "obs", "completion": "noop"})
        + "\n"
    )
    data = data_mod.load_sft_data(f)
    assert [m["role"] for m in data.train[0].messages] == ["system", "user", "assistant"]
    assert data.train[1].messages[-1] == {"role": "assistant", "content": "noop"}
    pq_dir = write_synthetic_dataset(tmp_path / "pq", 10, fmt="parquet")
    pq = data_mod.load_sft_data(pq_dir)
    assert len(pq.train) == 10 and pq.prompt["template"] == "bare"


def test_manifest_eval_split_is_used(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "ds", 20)
    (folder / "val.jsonl").write_text((folder / "train.jsonl").read_text().splitlines()[0] + "\n")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = ["train.jsonl", "val.jsonl"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    data = data_mod.load_sft_data(folder)
    assert len(data.train) == 20 and len(data.eval) == 1
    train_ex, eval_ex = data_mod.split_eval(data, 0.5, None, 0)
    assert len(train_ex) == 20 and len(eval_ex) == 1


# ------------------------------------------------------------------------------------------- bad input


def test_broken_line_reports_its_number(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "data" / "datasets" / "default", 5)
    lines = (folder / "train.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-7]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train\.jsonl:3: bad example"):
        train(make_cfg(tmp_path, "trainer.max_steps=1"))


def test_example_without_assistant_reply_is_refused(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ValueError, match=r"d\.jsonl:1: .*no assistant message"):
        data_mod.load_sft_data(f)


def test_empty_and_missing_datasets(tmp_path):
    from crafter_exp.errors import UserError

    folder = write_synthetic_dataset(tmp_path / "data" / "datasets" / "default", 3)
    (folder / "train.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty"):
        train(make_cfg(tmp_path))
    with pytest.raises(UserError, match="no complete dataset"):
        train(make_cfg(tmp_path, "name=nothing_here"))
    (folder / "manifest.json").unlink()
    with pytest.raises(UserError, match="no complete dataset"):
        train(make_cfg(tmp_path))


def test_missing_model_path_fails_before_training(tmp_path, synth):
    with pytest.raises(UserError, match="trainer.model path not found"):
        train(make_cfg(tmp_path, "trainer=local_lora", "trainer.model=/no/such/model"))
    assert not (tmp_path / "data" / "checkpoints").exists()


def test_qlora_without_cuda_is_one_clear_error(tmp_path, synth):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        train(make_cfg(tmp_path, "trainer=local_qlora", "trainer.model=/no/such/model"))


def test_long_sequences_are_truncated_and_counted(tmp_path, synth):
    # synthetic examples are 18, 22 or 26 tokens; at 24 the longest lose their reply (dropped), at 25 only its end
    cut = train(make_cfg(tmp_path, "trainer.max_steps=1", "trainer.max_length=24", "trainer.eval_fraction=0")).metrics
    assert cut["truncated_examples"] == cut["dropped_examples"] > 0
    assert cut["train_examples"] == 200 - cut["dropped_examples"]
    kept = train(make_cfg(tmp_path, "trainer.max_steps=1", "trainer.max_length=25", "trainer.eval_fraction=0")).metrics
    assert kept["truncated_examples"] == cut["truncated_examples"] and kept["dropped_examples"] == 0
    with pytest.raises(ValueError, match="no training example kept a reply token"):
        train(make_cfg(tmp_path, "trainer.max_steps=1", "trainer.max_length=8", "trainer.retrain=true"))


def test_bad_settings_fail_fast(tmp_path, synth):
    with pytest.raises(ValueError, match="trainer.loss_on"):
        train(make_cfg(tmp_path, "trainer.loss_on=prompt"))
    with pytest.raises(ValueError, match="trainer.method"):
        train(make_cfg(tmp_path, "trainer.method=dora"))
    with pytest.raises(ValueError, match="divisible"):
        train(make_cfg(tmp_path, "trainer.student.num_heads=3"))


def test_length_batches_are_homogeneous_and_shuffled():
    from crafter_exp.training.sft.sampler import ShuffledLengthBatches

    lengths = [10 + (i * 37) % 70 for i in range(640)]
    sampler = ShuffledLengthBatches(lengths, batch_size=32, seed=0, mega=4)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(640)) and first != second  # a permutation, new each epoch
    batches = [first[i : i + 32] for i in range(0, 640, 32)]
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spreads) <= 30 and sum(spreads) / len(spreads) < 20  # random batches span ~65 of the 70 tokens
    longest = [max(lengths[i] for i in b) for b in batches]
    assert longest != sorted(longest, reverse=True) and longest != sorted(longest)  # no long-to-short runs


def test_reply_balance_weights_rare_replies_up():
    from crafter_exp.training.sft.batches import reply_weights

    tok = data_mod.Tokenized(input_ids=[[1, 5], [1, 5], [1, 5], [2, 7]], roles=[[0, 1]] * 4)
    assert reply_weights(tok, 0.0) == [1.0] * 4
    w = reply_weights(tok, 1.0)  # replies 5 (x3) and 7 (x1): inverse frequency, mean 1
    assert sum(w) == pytest.approx(4.0) and w[3] == pytest.approx(3 * w[0])
    logits = torch.randn(2, 2, 9)
    ids = torch.tensor([[1, 5], [2, 7]])
    roles = torch.tensor([[0, 1], [0, 1]])
    ce = torch.nn.functional.cross_entropy(logits[:, 0], ids[:, 1], reduction="none")
    weighted = role_loss(logits, ids, roles, "assistant", 0.0, torch.tensor([1.0, 3.0])).loss
    assert weighted.item() == pytest.approx(((ce[0] + 3 * ce[1]) / 4).item(), rel=1e-5)


def test_reloading_a_tied_head_is_not_reported_missing_but_a_really_missing_weight_is():
    from transformers import LlamaConfig, LlamaForCausalLM

    from crafter_exp.training.sft.trainer import forget_tied_missing_keys

    cfg = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    saved = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # what a checkpoint holds
    assert model.load_state_dict(saved, strict=False).missing_keys == ["lm_head.weight"]  # the false alarm
    forget_tied_missing_keys(model)
    assert model.load_state_dict(saved, strict=False).missing_keys == []
    without_norm = {k: v for k, v in saved.items() if k != "model.norm.weight"}
    assert model.load_state_dict(without_norm, strict=False).missing_keys == ["model.norm.weight"]


def test_trainer_batches_come_from_the_length_sampler(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig

    from crafter_exp.training.sft.batches import RoleCollator, to_dataset
    from crafter_exp.training.sft.sampler import ShuffledLengthBatches
    from crafter_exp.training.sft.schedule import ProgressClock
    from crafter_exp.training.sft.trainer import trainer_class
    from crafter_exp.training.tiny import train_tokenizer

    lengths = [3 + (i * 7) % 20 for i in range(48)]
    tok = data_mod.Tokenized(
        input_ids=[[i % 30 + 1] * n for i, n in enumerate(lengths)], roles=[[0] + [1] * (n - 1) for n in lengths]
    )
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    args = SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        seed=3,
        report_to="none",
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        use_cpu=True,
        max_length=None,
    )

    def first_batches(group: bool) -> list[list[int]]:
        trainer = trainer_class()(
            model=model,
            args=args,
            data_collator=RoleCollator(0),
            train_dataset=to_dataset(tok),
            processing_class=train_tokenizer(["go left", "go right"], 300),
            loss_on="assistant",
            prompt_weight=0.0,
            clock=ProgressClock(None),
            schedule="constant",
            warmup_ratio=0.0,
            min_lr_ratio=0.0,
            group_by_length=group,
        )
        loader = trainer.get_train_dataloader()
        return [(b["attention_mask"].sum(1)).tolist() for b in loader]

    grouped = first_batches(True)
    order = list(ShuffledLengthBatches(lengths, 8, 3))
    assert [n for b in grouped for n in b] == [lengths[i] for i in order]
    assert [n for b in first_batches(False) for n in b] != [lengths[i] for i in order]


@pytest.mark.slow
def test_reloading_the_best_checkpoint_does_not_warn_about_the_tied_head(tmp_path, synth, monkeypatch):
    import logging

    from crafter_exp.training.sft import trainer as trainer_mod

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    logging.getLogger("transformers").addHandler(handler)  # transformers' loggers do not propagate to the root
    try:
        args = ("trainer.max_steps=4", "trainer.eval_steps=2", "trainer.eval_fraction=0.1", "trainer.save_best=true")
        with monkeypatch.context() as m:  # without the hook: the false alarm this guards against
            m.setattr(trainer_mod, "forget_tied_missing_keys", lambda model: None)
            train(make_cfg(tmp_path, *args))
        assert any("missing keys" in s and "lm_head" in s for s in seen), seen
        seen.clear()
        result = train(make_cfg(tmp_path, *args, "trainer.retrain=true"))
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert "best_step" in result.metrics
    assert not any("missing keys" in s for s in seen), seen


# ------------------------------------------------------------------ the computation alone (no checkpoint, no MLflow)


def test_plan_and_fit_train_without_writing_a_checkpoint(tmp_path, synth):
    from crafter_exp.stages.train import TrainResult, checkpoint_manifest, fit, plan, summary_lines

    cfg = make_cfg(tmp_path, "trainer.max_steps=2", "trainer.eval_fraction=0", tracking=True)
    p = plan(cfg)
    assert p.dataset == synth and p.data.digest == "synthetic-200-1"
    assert not p.folder.path.exists() and not (tmp_path / "mlflow.db").exists()
    outcome = fit(cfg.trainer, p.data, tmp_path / "work")
    assert outcome.metrics["steps"] == 2 and outcome.kind == "full"
    # nothing but the work folder: no checkpoint folder, no MLflow store although tracking is on
    assert not p.folder.path.exists() and not (tmp_path / "mlflow.db").exists()

    manifest = checkpoint_manifest(
        cfg.trainer,
        p,
        outcome,
        {"kind": "full", "base_model": "tiny"},
        "untrained",
        {"temperature": None, "max_new_tokens": 2},
        None,
        0.0,
    )
    assert manifest["dataset_digest"] == "synthetic-200-1" and manifest["metrics"]["steps"] == 2
    assert manifest["trainer"]["max_steps"] == 2 and manifest["prompt"] == p.data.prompt
    lines = summary_lines(TrainResult(p.folder.path, outcome.metrics, None, manifest))
    assert lines[0] == f"checkpoint: {p.folder.path}" and "  steps: 2" in lines


def test_swapped_name_copies_rename_consistently_whole_words_only():
    from crafter_exp.envs.alfworld.text import OBJECT_KINDS

    task = "Your task is to: put a clean tomato in fridge.\nObservation: On the countertop 1, you see a tomato 2, a tissuebox 1."
    named = data_mod.Example(
        [{"role": "user", "content": task}, {"role": "assistant", "content": "take tomato 2 from countertop 1"}]
    )
    nameless = data_mod.Example([{"role": "user", "content": "go on"}, {"role": "assistant", "content": "look"}])
    out = data_mod.with_swapped_names([named, nameless], OBJECT_KINDS, 5, seed=3)
    assert out[:2] == [named, nameless] and len(out) == 2 + 5  # the originals first; nothing to swap: no copy
    seen = set()
    for copy in out[2:]:
        prompt, reply = copy.messages[0]["content"], copy.messages[1]["content"]
        obj = re.search(r"put a clean (\w+) in fridge", prompt).group(1)
        other = re.search(r", a (\w+) 1\.", prompt).group(1)
        assert obj in OBJECT_KINDS and other in OBJECT_KINDS and obj != other  # one bijection per copy
        assert prompt.count(f"{obj} 2") == 1 and reply == f"take {obj} 2 from countertop 1"  # and in every message
        assert "countertop 1" in prompt and "fridge" in prompt  # receptacles are not object kinds: kept
        seen.add(obj)
    assert len(seen) > 1  # drawn afresh for each copy
    assert data_mod.with_swapped_names([named], OBJECT_KINDS, 5, seed=3)[1:] == out[2:]  # seeded
    # "box" is a kind, but not inside "tissuebox"
    (box,) = data_mod.with_swapped_names(
        [data_mod.Example([{"role": "assistant", "content": "take box 1 from tissuebox 2"}])], ["box", "mug"], 1, 0
    )[1:]
    assert box.messages[0]["content"] in ("take box 1 from tissuebox 2", "take mug 1 from tissuebox 2")
    assert data_mod.with_swapped_names([named], OBJECT_KINDS, 0, seed=3) == [named]


def test_swapped_copies_need_an_environment_with_interchangeable_names(tmp_path, synth):
    with pytest.raises(UserError, match="declares no interchangeable names"):
        train(make_cfg(tmp_path, "trainer.augment_copies=2"))  # the synthetic data is Crafter's: nothing to swap
    with pytest.raises(UserError, match="augment_copies must be >= 0"):
        train(make_cfg(tmp_path, "trainer.augment_copies=-1"))
    assert not (tmp_path / "data" / "checkpoints").exists()


def test_training_adds_the_swapped_copies_of_an_alfworld_dataset(tmp_path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Your task is to: put some {k} in cabinet.\nSeen: {k} {i} at shelf 1"},
                {"role": "assistant", "content": f"take {k} {i} from shelf 1"},
            ]
        }
        for i in range(1, 6)
        for k in ("apple", "mug", "pen", "vase")
    ]
    path = tmp_path / "alf.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    over = ["env=alfworld", "trainer.max_steps=1", "trainer.eval_fraction=0", "trainer.augment_copies=3"]
    metrics = train(make_cfg(tmp_path, *over), dataset_path=path).metrics
    assert (metrics["swapped_copies"], metrics["train_examples"]) == (60, 80)
    # ALFWorld's default for the tiny student is 4 copies; 0 trains on the originals only
    default = train(make_cfg(tmp_path, *over[:-1]), dataset_path=path).metrics
    assert (default["swapped_copies"], default["train_examples"]) == (80, 100)
    plain = train(make_cfg(tmp_path, *over[:-1], "trainer.augment_copies=0"), dataset_path=path).metrics
    assert (plain["swapped_copies"], plain["train_examples"]) == (0, 20)
