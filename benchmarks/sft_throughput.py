"""SFT and local-play throughput, measured side by side in one run.

1. Training tokens/s of the tiny student: the train stage's trainer (TRL SFTTrainer + our loss) with full weights and
   with LoRA, against a plain PyTorch loop (same model init, same batches, same loss, AdamW, clipping, schedule).
   Goal: stage >= 0.9 x plain loop (framework overhead <= 10 %).
2. hf_local rollout steps/s in Crafter: all episodes of a batch decoded together vs one episode at a time.
   Goal: batched >= 5 x one-at-a-time.

    python benchmarks/sft_throughput.py                      # synthetic data, ~2-3 minutes on 2 cores
    python benchmarks/sft_throughput.py --dataset data/datasets/default --steps 100
    python benchmarks/sft_throughput.py --model Qwen/Qwen3-0.6B --method lora   # on a GPU: a real model + memory

Runs alternate (plain, stage, plain, stage, ...) and medians are reported, because other work on the machine moves
single measurements by tens of percent.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import crafter_exp  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)
from crafter_exp.config import HFLocalModelConfig, LocalTrainerConfig, TinyTrainerConfig  # noqa: E402
from crafter_exp.training import data as data_mod  # noqa: E402
from crafter_exp.training import sft  # noqa: E402
from crafter_exp.training.sft.batches import RoleCollator  # noqa: E402
from crafter_exp.training.sft.loss import role_loss  # noqa: E402
from crafter_exp.training.sft.models import load_base, lora_config, use_bf16  # noqa: E402
from crafter_exp.training.sft.run import peak_memory_mb  # noqa: E402
from crafter_exp.training.sft.sampler import ShuffledLengthBatches  # noqa: E402
from crafter_exp.training.sft.schedule import ProgressClock, lr_factor  # noqa: E402
from crafter_exp.training.synthetic import write_synthetic_dataset  # noqa: E402

WARM = 25
"""Steps before the steady-state clock starts (logging_steps is 25 too, so the stage's curve has that point)."""


def trainer_cfg(args: argparse.Namespace, method: str) -> LocalTrainerConfig:
    base = TinyTrainerConfig() if args.model == "tiny" else LocalTrainerConfig(model=args.model)
    return dataclasses.replace(
        base,
        method=method,
        max_steps=args.steps,
        max_time_s=None,
        eval_fraction=0.0,
        save_best=False,
        logging_steps=WARM,
        progress=False,
        per_device_batch=args.batch,
        bf16=args.bf16,
        group_by_length=not args.no_grouping,
        learning_rate=base.learning_rate if method == "full" else 1e-3,
    )


def stage_run(tcfg: LocalTrainerConfig, data: data_mod.SFTData) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = sft.train_sft(tcfg, data, Path(tmp))
    m = out.metrics
    # steady state: from the first logged step (after WARM steps) to the last, as for the plain loop
    logs = [c for c in out.curve if "trained_tokens" in c]
    first = next(c for c in logs if c["step"] >= WARM)
    steady = (logs[-1]["trained_tokens"] - first["trained_tokens"]) / (logs[-1]["elapsed_s"] - first["elapsed_s"])
    return {
        "tokens_per_s": m["tokens_per_s"],
        "steady": steady,
        "tokens": m["trained_tokens"],
        "seconds": m["train_time_s"],
        "peak_mb": m["peak_memory_mb"],
    }


def plain_run(tcfg: LocalTrainerConfig, data: data_mod.SFTData) -> dict:
    """The same model, batches (order included) and loss in a bare loop: the floor the trainer is compared with."""
    torch.manual_seed(tcfg.seed)
    train_ex, _ = data_mod.split_eval(data, 0.0, None, tcfg.seed)
    base = load_base(tcfg, train_ex, tcfg.seed)
    model = base.model
    if tcfg.method == "lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(tcfg))
    tok = data_mod.tokenize_examples(base.tokenizer, train_ex, tcfg.max_length)
    collate = RoleCollator(base.tokenizer.pad_token_id)
    b = tcfg.per_device_batch
    if tcfg.group_by_length:  # the stage's own batching: similar lengths together, batches shuffled
        order = list(ShuffledLengthBatches([len(x) for x in tok.input_ids], b, tcfg.seed))
    else:
        order = torch.randperm(len(tok.input_ids), generator=torch.Generator().manual_seed(tcfg.seed)).tolist()
    rows = [{"input_ids": tok.input_ids[i], "roles": tok.roles[i]} for i in order]
    batches = [collate(rows[i : i + b]) for i in range(0, len(rows), b)]
    bf16 = use_bf16(tcfg)  # the stage's precision: bf16 autocast where the CPU/GPU has native bf16
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=tcfg.learning_rate, weight_decay=tcfg.weight_decay, fused=True
    )  # what Trainer uses (adamw_torch_fused)
    clock = ProgressClock(None)
    clock.num_steps = tcfg.max_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(tcfg.lr_scheduler, clock.progress(s), tcfg.warmup_ratio, tcfg.min_lr_ratio)
    )
    model.train()
    tokens = 0
    t0 = time.monotonic()
    warm_tokens, t_warm = 0, t0
    for step in range(tcfg.max_steps):
        if step == WARM:
            warm_tokens, t_warm = tokens, time.monotonic()
        batch = batches[step % len(batches)]
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        loss = role_loss(out.logits, batch["input_ids"], batch["roles"], tcfg.loss_on, tcfg.prompt_weight).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tcfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    end = time.monotonic()
    seconds = end - t0
    return {
        "tokens_per_s": tokens / seconds,
        "steady": (tokens - warm_tokens) / (end - t_warm),
        "tokens": tokens,
        "seconds": seconds,
        "peak_mb": peak_memory_mb(),
    }


def bench_training(args: argparse.Namespace, data: data_mod.SFTData) -> None:
    results: dict[str, list[dict]] = {
        "plain loop (full)": [],
        "stage (full)": [],
        "plain loop (lora)": [],
        "stage (lora)": [],
    }
    full, lora = trainer_cfg(args, "full"), trainer_cfg(args, "lora")
    for _ in range(args.repeats):
        results["plain loop (full)"].append(plain_run(full, data))
        results["stage (full)"].append(stage_run(full, data))
        if not args.skip_lora:
            results["plain loop (lora)"].append(plain_run(lora, data))
            results["stage (lora)"].append(stage_run(lora, data))
    print(
        f"\n== SFT throughput: model={args.model}, {args.steps} steps x batch {args.batch}, "
        f"{args.repeats} alternating repeats, torch threads {torch.get_num_threads()}, "
        f"bf16 {use_bf16(full)}, length-grouped batches {full.group_by_length} =="
    )
    print("tokens/s = non-padding tokens per second; whole run includes start-up (optimizer, loader, first steps),")
    print(f"steady = from step {WARM} to the end (a 300 s training run is nearly all steady state)")
    print(f"{'run':<20} {'whole run':>10} {'steady':>8} {'steady, all repeats':>26} {'peak MB':>9}")
    med, whole = {}, {}
    for name, runs in results.items():
        if not runs:
            continue
        whole[name] = statistics.median(r["tokens_per_s"] for r in runs)
        med[name] = statistics.median(r["steady"] for r in runs)
        all_runs = ", ".join(f"{r['steady']:.0f}" for r in runs)
        print(
            f"{name:<20} {whole[name]:>10.0f} {med[name]:>8.0f} {all_runs:>26} {max(r['peak_mb'] for r in runs):>9.0f}"
        )
    print(
        f"stage / plain loop, full: steady {med['stage (full)'] / med['plain loop (full)']:.3f}, "
        f"whole run {whole['stage (full)'] / whole['plain loop (full)']:.3f}  (goal >= 0.9)"
    )
    if "stage (lora)" in med:
        print(
            f"stage / plain loop, lora: steady {med['stage (lora)'] / med['plain loop (lora)']:.3f}, "
            f"whole run {whole['stage (lora)'] / whole['plain loop (lora)']:.3f}"
        )
        print(f"lora / full (stage, steady): {med['stage (lora)'] / med['stage (full)']:.3f}")


def bench_play(args: argparse.Namespace, data: data_mod.SFTData) -> None:
    """Crafter steps/s with the policy deciding for all episodes at once vs one episode at a time."""
    from crafter_exp.config import CrafterEnvConfig
    from crafter_exp.policies import make_policy
    from crafter_exp.runner.play import play_batch

    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            path = args.checkpoint
        else:  # a briefly trained student: short replies, like a trained one
            tcfg = dataclasses.replace(trainer_cfg(args, "full"), max_steps=60)
            out = sft.train_sft(tcfg, data, Path(tmp) / "work")
            path = str(Path(tmp) / "ckpt")
            sft.save_outcome(out, Path(path))
        cfg = HFLocalModelConfig(path=path, max_new_tokens=args.max_new_tokens, batch_size=args.episodes)
        env_cfg = CrafterEnvConfig(max_steps=args.play_steps)
        seeds = list(range(args.episodes))
        meta = {"run_id": "bench", "env": "crafter", "policy": "hf_local", "model": "bench", "provider": "local"}
        policy = make_policy(cfg)
        policy.start()
        play_batch(env_cfg, policy, [10_000], meta)  # warm-up

        t0 = time.monotonic()
        batched = play_batch(env_cfg, policy, seeds, meta)
        t_batched = time.monotonic() - t0
        steps_batched = sum(r.episode["steps"] for r in batched)

        t0 = time.monotonic()
        single = [r for s in seeds for r in play_batch(env_cfg, policy, [s], meta)]
        t_single = time.monotonic() - t0
        steps_single = sum(r.episode["steps"] for r in single)
    sps_b, sps_s = steps_batched / t_batched, steps_single / t_single
    print(
        f"\n== hf_local play: {args.episodes} Crafter episodes x {args.play_steps} steps, "
        f"max_new_tokens {args.max_new_tokens} =="
    )
    print(f"{'mode':<34} {'env steps/s':>12} {'seconds':>9}")
    print(f"{'batched (all episodes together)':<34} {sps_b:>12.1f} {t_batched:>9.1f}")
    print(f"{'one episode at a time':<34} {sps_s:>12.1f} {t_single:>9.1f}")
    print(f"batched / one-at-a-time: {sps_b / sps_s:.1f}x  (goal >= 5x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", help="dataset folder or file (default: synthetic)")
    ap.add_argument("--examples", type=int, default=4000, help="synthetic examples")
    ap.add_argument("--model", default="tiny", help="tiny, or a hub id / local path")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-lora", action="store_true")
    ap.add_argument("--skip-play", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--bf16", default="auto", help="auto | true | false (trainer.bf16)")
    ap.add_argument("--no-grouping", action="store_true", help="random batches (trainer.group_by_length=false)")
    ap.add_argument("--checkpoint", help="checkpoint to play (default: a tiny student trained for 60 steps)")
    ap.add_argument("--episodes", type=int, default=32, help="episodes played (and decoded together when batched)")
    ap.add_argument("--play-steps", type=int, default=150)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.dataset) if args.dataset else write_synthetic_dataset(Path(tmp) / "ds", args.examples)
        data = data_mod.load_sft_data(folder)
        if torch.cuda.is_available():
            print(f"GPU: {torch.cuda.get_device_name()}")
        if not args.skip_train:
            bench_training(args, data)
        if not args.skip_play:
            bench_play(args, data)


if __name__ == "__main__":
    main()
