"""Tokenizing with per-message weights, measured side by side in one run (the tiny student's tokenizer).

1. Per-turn examples with a history window of 2 (two weight-0 context replies + the target), masked from the
   template's `{% generation %}` markers: against the same examples with every reply learned (no weights), the
   cost of telling context replies apart. Goal: >= 0.9 x.
2. Multi-turn conversations (N turns, every reply learned) on a template without markers that draws every reply
   alike (one sequence, masks from rendering prefixes) and on one that drops earlier <think> blocks, Qwen3-style
   (one sequence per learned reply): tokens produced and time, for N = 5, 10, 20.

    python benchmarks/weights_tokenize.py            # ~1 minute on 2 cores
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import crafter_exp  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)
from crafter_exp.training import data as data_mod  # noqa: E402
from crafter_exp.training import tiny  # noqa: E402
from crafter_exp.training.synthetic import SYSTEM, synthetic_observation  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_weights import DROPS_EARLIER_THINK  # noqa: E402


def history_rows(n: int, weighted: bool, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(n):
        msgs = [{"role": "system", "content": SYSTEM}]
        for _ in range(2):
            obs, act = synthetic_observation(rng)
            msgs += [{"role": "user", "content": obs}, {"role": "assistant", "content": act}]
            if weighted:
                msgs[-1]["weight"] = 0
        obs, act = synthetic_observation(rng)
        rows.append({"messages": msgs + [{"role": "user", "content": obs}, {"role": "assistant", "content": act}]})
    return rows


def conversation_rows(n: int, turns: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(n):
        msgs = []
        for t in range(turns):
            obs, act = synthetic_observation(rng)
            msgs += [
                {"role": "user", "content": obs},
                {"role": "assistant", "content": f"<think>step {t}: {act} is next</think> {act}"},
            ]
        rows.append({"messages": msgs})
    return rows


ROLE_TIME = [0.0]
_marked_roles = data_mod._marked_roles


def _timed_roles(*args, **kwargs):
    # the step this change adds to the marker path: generation mask -> per-message roles
    t0 = time.perf_counter()
    try:
        return _marked_roles(*args, **kwargs)
    finally:
        ROLE_TIME[0] += time.perf_counter() - t0


data_mod._marked_roles = _timed_roles


def timed(tok, examples, repeats: int) -> tuple[float, data_mod.Tokenized]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = data_mod.tokenize_examples(tok, examples, 1 << 20)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=3000)
    ap.add_argument("--conversations", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(0)

    plain = [data_mod.row_to_example(r) for r in history_rows(args.examples, False, rng)]
    weighted = [data_mod.row_to_example(r) for r in history_rows(args.examples, True, random.Random(0))]
    tok = tiny.train_tokenizer(tiny.message_texts(ex.messages for ex in plain), 600)
    print(f"1. per-turn, history 2, {args.examples} examples, generation markers (median of {args.repeats})")
    # alternating runs, medians: other work on the machine moves single measurements by tens of percent
    plain_times, weighted_times, role_plain, role_weighted = [], [], [], []
    for _ in range(args.repeats):
        ROLE_TIME[0] = 0.0
        plain_times.append(timed(tok, plain, 1)[0])
        role_plain.append(ROLE_TIME[0])
        ROLE_TIME[0] = 0.0
        t, out = timed(tok, weighted, 1)
        weighted_times.append(t)
        role_weighted.append(ROLE_TIME[0])
    t_plain, t_weighted = statistics.median(plain_times), statistics.median(weighted_times)
    print(f"   every reply learned : {args.examples / t_plain:8.0f} examples/s")
    print(
        f"   weight-0 history    : {args.examples / t_weighted:8.0f} examples/s  "
        f"({t_plain / t_weighted:.2f} x; {out.assistant_tokens} learned tokens of {out.tokens})"
    )
    print(
        f"   of which mask -> roles: {statistics.median(role_plain) * 1e3:.0f} ms vs "
        f"{statistics.median(role_weighted) * 1e3:.0f} ms (the rest is rendering + tokenizing, the same work)"
    )

    print(f"2. multi-turn, {args.conversations} conversations, every reply learned, no markers")
    alike = tiny.CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    warm = [data_mod.row_to_example(r) for r in conversation_rows(2, 3, rng)]
    for template in (alike, DROPS_EARLIER_THINK):  # compile each template once before timing
        tok.chat_template = template
        data_mod.tokenize_examples(tok, warm, 1 << 20)
    for turns in (5, 10, 20):
        convs = [data_mod.row_to_example(r) for r in conversation_rows(args.conversations, turns, rng)]
        tok.chat_template = alike
        t_one, one = timed(tok, convs, 1)
        tok.chat_template = DROPS_EARLIER_THINK
        t_split, split = timed(tok, convs, 1)
        print(
            f"   {turns:2d} turns: one sequence {one.tokens:7d} tokens {t_one:6.2f} s | per learned reply "
            f"{len(split.input_ids):4d} sequences {split.tokens:7d} tokens {t_split:6.2f} s "
            f"({split.tokens / one.tokens:.1f} x tokens)"
        )


if __name__ == "__main__":
    main()
