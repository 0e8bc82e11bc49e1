"""RL iteration throughput, measured side by side in one run: rollout steps/s with batched generation, update
tokens/s, and the split of an iteration's time, each against a plain loop.

1. Rollout: G x B Crafter episodes played in one lockstep batch through hf_local (one generate call per turn for
   every live episode) vs a plain loop (one episode at a time, generation batch 1).
2. Update: the stage's batched update (prompts tokenised once, turns sorted by length into micro-batches, logits
   only at reply positions) vs a plain loop (each turn its own forward + backward), same turns, same loss.
3. The split of one stage iteration (rollout / log-prob pass / update), from the stage's own metrics.

    python benchmarks/rl_throughput.py --checkpoint data/checkpoints/default/<hash>   # the pipeline's student
    python benchmarks/rl_throughput.py              # no checkpoint: trains a tiny synthetic student first (~30 s)

Runs alternate (plain, batched, plain, batched) and medians are reported: other work on a shared machine moves single
measurements by tens of percent.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import crafter_exp  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)
from crafter_exp.config import CrafterEnvConfig, compose_config  # noqa: E402
from crafter_exp.envs import env_instructions  # noqa: E402
from crafter_exp.rl.update import Samples, UpdateSettings, encode, forward_all, reply_logps, update  # noqa: E402
from crafter_exp.runner.play import play_batch  # noqa: E402
from crafter_exp.stages.rl import make_rollout_policy  # noqa: E402


def synthetic_checkpoint(home: Path) -> Path:
    from crafter_exp.stages.train import train
    from crafter_exp.training.synthetic import write_synthetic_dataset

    write_synthetic_dataset(home / "data" / "datasets" / "default", 1600, seed=0)
    cfg = compose_config(
        [
            f"paths.home={home}",
            "tracking.enabled=false",
            "trainer.max_time_s=null",
            "trainer.max_steps=110",
            "trainer.progress=false",
            "trainer.eval_fraction=0",
            "trainer.learning_rate=3e-3",
        ]
    )
    return train(cfg).checkpoint


def rollout_rate(policy, env_cfg, worlds: list[int], group: int, batch: int) -> tuple[float, int]:
    """Env steps/s playing `group` episodes of each world, `batch` episodes in lockstep."""
    keys = [w * 1000 + k for w in worlds for k in range(group)]
    world_of = [w for w in worlds for _ in range(group)]
    policy.cfg.batch_size = batch
    meta = {"run_id": "bench", "env": "crafter", "policy": "hf_local", "model": "bench", "provider": "local"}
    t0, steps = time.perf_counter(), 0
    for i in range(0, len(keys), batch):
        recs = play_batch(env_cfg, policy, keys[i : i + batch], meta, 1, worlds=world_of[i : i + batch])
        steps += sum(r.episode["steps"] for r in recs)
    return steps / (time.perf_counter() - t0), steps


def turns_of(policy, env_cfg, n_episodes: int) -> tuple[list[str], list[str]]:
    """Prompts and replies of a few played episodes (the update's input)."""
    from crafter_exp import prompts

    meta = {"run_id": "bench", "env": "crafter", "policy": "hf_local", "model": "bench", "provider": "local"}
    policy.cfg.batch_size = n_episodes
    recs = play_batch(env_cfg, policy, list(range(77_000, 77_000 + n_episodes)), meta, 1)
    texts, replies = [], []
    instructions = env_instructions("crafter")
    for r in recs:
        for row in r.steps:
            msgs = prompts.build_messages(policy.prompt, instructions, row["observation"])
            texts.append(policy.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
            replies.append(row["reply"])
    return texts, replies


def plain_update(model, opt, samples: Samples, temperature: float, pad_id: int) -> float:
    """One turn per forward + backward, the same clipped loss; returns tokens/s."""
    t0, tokens = time.perf_counter(), 0
    n_tokens = samples.reply_tokens
    adv = torch.tensor(samples.advantages, dtype=torch.float32)
    opt.zero_grad()
    for i in range(len(samples)):
        logps, rmask, _ = reply_logps(
            model, [samples.prompt_ids[i]], [samples.reply_ids[i]], temperature, pad_id, torch.device("cpu")
        )
        ratio = torch.exp(logps - samples.old_logps[i][None])
        a = adv[i]
        loss = (-torch.min(ratio * a, torch.clamp(ratio, 0.8, 1.28) * a) * rmask).sum() / n_tokens
        loss.backward()
        tokens += len(samples.prompt_ids[i]) + len(samples.reply_ids[i])
    opt.step()
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="start checkpoint (default: a tiny synthetic student)")
    ap.add_argument("--seeds", type=int, default=2, help="B worlds")
    ap.add_argument("--group", type=int, default=8, help="G episodes per world")
    ap.add_argument("--max-steps", type=int, default=100, help="episode cap for the rollout measurement")
    ap.add_argument("--update-turns", type=int, default=1024, help="turns in the update measurement")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    ckpt = Path(args.checkpoint) if args.checkpoint else synthetic_checkpoint(Path(tmp.name))
    cfg = compose_config([f"paths.home={tmp.name}", "tracking.enabled=false"])
    policy = make_rollout_policy(cfg, ckpt, 0.7, "bench")
    env_cfg = CrafterEnvConfig(max_steps=args.max_steps)
    worlds = list(range(500_000, 500_000 + args.seeds))
    n = args.seeds * args.group
    print(f"checkpoint {ckpt}; torch threads {torch.get_num_threads()}")

    # 1. rollout
    plain, batched = [], []
    for _ in range(args.repeats):
        plain.append(rollout_rate(policy, env_cfg, worlds[:1], 2, 1)[0])  # 2 episodes, one at a time
        batched.append(rollout_rate(policy, env_cfg, worlds, args.group, n)[0])
    p, b = statistics.median(plain), statistics.median(batched)
    print(f"rollout  plain loop (1 episode at a time): {p:7.0f} env steps/s")
    print(f"rollout  lockstep batch of {n:3d} episodes:    {b:7.0f} env steps/s   ratio {b / p:.1f}x")

    # 2. update
    texts, replies = turns_of(policy, CrafterEnvConfig(max_steps=300), 8)
    texts, replies = texts[: args.update_turns], replies[: args.update_turns]
    ids, reps = encode(policy.tokenizer, texts, replies, 256)
    rng = np.random.default_rng(0)
    samples = Samples(ids, reps, rng.standard_normal(len(ids)))
    pad = policy.tokenizer.pad_token_id
    samples.old_logps, samples.entropy = forward_all(
        policy.model, samples, 0.7, pad, policy.device, 256, contextlib.nullcontext, entropy=True
    )
    plain_u, batched_u = [], []
    settings = UpdateSettings(
        epochs=1,
        minibatch=512,
        micro_batch=256,
        clip_low=0.2,
        clip_high=0.28,
        beta=0.0,
        max_grad_norm=1.0,
        temperature=0.7,
    )
    small = Samples(ids[:128], reps[:128], samples.advantages[:128], old_logps=samples.old_logps[:128])
    for _ in range(args.repeats):
        opt = torch.optim.SGD(policy.model.parameters(), lr=0.0)
        plain_u.append(plain_update(policy.model, opt, small, 0.7, pad))
        batched_u.append(update(policy.model, opt, samples, settings, pad, policy.device).tokens_per_s)
    p, b = statistics.median(plain_u), statistics.median(batched_u)
    tok = samples.tokens / len(samples)
    print(f"update   plain loop (1 turn per pass):      {p:7.0f} tokens/s  ({tok:.0f} tokens per turn)")
    print(f"update   micro-batches of 256 turns:        {b:7.0f} tokens/s   ratio {b / p:.1f}x")

    # 3. one stage iteration's split
    from crafter_exp.stages.rl import rl

    home = Path(tmp.name) / "stage"
    icfg = compose_config(
        [
            f"paths.home={home}",
            "tracking.enabled=false",
            f"rl.start={ckpt}",
            "rl.iterations=1",
            f"rl.seeds={args.seeds}",
            f"rl.group_size={args.group}",
            f"env.max_steps={args.max_steps}",
            "rl.progress=false",
            "rl.epochs=1",
            "rl.temperature=0.7",
        ]
    )
    h = rl(icfg).history[0]
    total = h["iteration_s"]
    print(
        f"iteration ({n} episodes, {h['turns']:.0f} turns -> {h['samples']:.0f} samples): {total:.1f} s = "
        f"rollout {h['rollout_s']:.1f} s ({h['rollout_s'] / total:.0%}), log-prob pass {h['logprob_pass_s']:.1f} s "
        f"({h['logprob_pass_s'] / total:.0%}), update {h['update_s'] - h['logprob_pass_s']:.1f} s "
        f"({(h['update_s'] - h['logprob_pass_s']) / total:.0%}); rollout {h['rollout_steps_per_s']:.0f} steps/s, "
        f"update {h['update_tokens_per_s']:.0f} tokens/s"
    )
    tmp.cleanup()


if __name__ == "__main__":
    main()
