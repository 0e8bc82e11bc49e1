"""decoding=rank: scoring every admissible command with one shared prompt pass vs one full pass per candidate.

ALFWorld-sized turns: `--prompts` episodes a step, each a ~`--prompt-words`-word prompt with `--candidates`
commands of 3-7 words, on the tiny student's shape (hidden 128, 2 layers; random weights: the cost does not depend
on them). Both ways give the same scores (checked here, and in tests/test_ranking.py); the figure is decisions/s.

    python benchmarks/rank_scoring.py                    # ~1 minute on 2 cores
    python benchmarks/rank_scoring.py --prompts 40 --candidates 40

Runs alternate (shared, naive, shared, ...) and medians are reported: other work on the machine moves single
measurements by tens of percent.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import crafter_exp  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)
from crafter_exp.policies.scoring import score_candidates  # noqa: E402
from crafter_exp.training import tiny  # noqa: E402

WORDS = (
    "go to take from move open close heat cool clean use examine cabinet countertop drawer fridge microwave "
    "sinkbasin desklamp mug apple egg plate knife 1 2 3 4 5 6 7 8 9 10 you see a the on in arrive at nothing "
    "task put some"
).split()


def naive(model, tok, prompts, candidates, rows: int = 64) -> list[list[float]]:
    """One full prompt + candidate sequence per candidate (right-padded batches of `rows`)."""
    out = []
    for prompt, cands in zip(prompts, candidates):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        seqs = [p + tok(c, add_special_tokens=False)["input_ids"] for c in cands]
        scores = []
        for i in range(0, len(seqs), rows):
            chunk = seqs[i : i + rows]
            width = max(map(len, chunk))
            ids = torch.full((len(chunk), width), tok.pad_token_id)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, s in enumerate(chunk):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            with torch.inference_mode():
                logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for r, s in enumerate(chunk):
                scores.append(sum(logp[r, k - 1, s[k]].item() for k in range(len(p), len(s))))
        out.append(scores)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=30)
    ap.add_argument("--prompt-words", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(args.prompt_words)) for _ in range(args.prompts)]
    cands = [
        [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) + "<|end|>" for _ in range(args.candidates)]
        for _ in range(args.prompts)
    ]
    tok = tiny.train_tokenizer(texts, 300)
    student = SimpleNamespace(
        architecture="llama", hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512, tie_embeddings=True
    )
    model = tiny.build_student(student, tok, 512, 0).eval()
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
        for t in texts
    ]
    shared = [r.logprob for r in score_candidates(model, tok, prompts, cands)]
    reference = naive(model, tok, prompts, cands)
    worst = max(abs(a - b) for s, r in zip(shared, reference) for a, b in zip(s, r))
    print(
        f"{args.prompts} prompts x {args.candidates} candidates, prompt ~{args.prompt_words} words; "
        f"largest score difference {worst:.2e}"
    )
    times = {"shared prompt cache": [], "one pass per candidate": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        score_candidates(model, tok, prompts, cands)
        times["shared prompt cache"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        naive(model, tok, prompts, cands)
        times["one pass per candidate"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"  {k:24s} {v * 1000:8.1f} ms per step  ({args.prompts / v:7.1f} decisions/s)")
    print(f"  ratio: {med['one pass per candidate'] / med['shared prompt cache']:.1f}x")


if __name__ == "__main__":
    main()
