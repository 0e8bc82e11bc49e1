"""Scoring candidate replies with a causal LM: log p(candidate | prompt) for every candidate of every prompt.

Pure functions over a transformers model and tokenizer (no policy, no environment): the `hf_local` policy ranks an
environment's admissible actions with them, and an RL stage can reuse them for the same action distribution.

How it is batched: the prompts of a chunk run once, left-padded, with a KV cache; the cache rows are then repeated
once per candidate (`Cache.reorder_cache` with repeated indices) and every candidate continuation of the chunk runs
in one more forward pass (right-padded, explicit position ids continuing each prompt). So a decision costs one
prompt forward plus a few candidate tokens per candidate, not a full prompt + candidate pass per candidate. The
first candidate token is predicted by the prompt's last position, the others by the candidate pass.

Scores: the sum of the candidate tokens' log-probabilities (`sum`: the model's own probability of that exact
reply, so sampling from their softmax samples the model's reply distribution restricted to the candidates), or
their mean (`mean`: length-normalised, a common choice for pretrained LMs ranking answers of different lengths).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from crafter_exp.errors import UserError

SCORE_MODES = ("sum", "mean")
DEFAULT_MAX_ROWS = 128
"""Candidate rows per forward pass (memory: rows x prompt length x the model's KV width)."""


@dataclass
class CandidateScores:
    """The scores of one prompt's candidates, in the candidates' order."""

    logprob: list[float]
    """Sum of the candidate tokens' log-probabilities given the prompt."""
    tokens: list[int]
    """Tokens of each candidate (the length `mean` divides by)."""
    prompt_tokens: int = 0
    """Tokens of the prompt."""

    def values(self, mode: str = "sum") -> list[float]:
        """The ranking score of each candidate under `mode` (`sum` or `mean`)."""
        if mode == "sum":
            return list(self.logprob)
        if mode == "mean":
            return [lp / max(n, 1) for lp, n in zip(self.logprob, self.tokens)]
        raise UserError(f"unknown score mode {mode!r} (known: {', '.join(SCORE_MODES)})")


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def score_candidates(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    autocast: Any = None,
) -> list[CandidateScores]:
    """log p(candidate | prompt) for each candidate continuation of each prompt (texts, already formatted).

    `prompts[i]` is the full prompt text (e.g. the chat template with the generation prompt), `candidates[i]` the
    continuations to score after it (e.g. a reply plus the template's end-of-turn marker). Prompts and candidates
    are tokenized separately (a tokenizer that merges across the boundary scores a slightly different split than
    it would generate; the tiny student's word-level tokenizer never does). Every candidate needs >= 1 token.
    """
    import torch

    if len(prompts) != len(candidates):
        raise UserError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
    prompt_ids = [_encode(tokenizer, p) for p in prompts]
    cand_ids = [[_encode(tokenizer, c) for c in cands] for cands in candidates]
    for i, ids in enumerate(prompt_ids):
        if not ids:
            raise UserError(f"prompt {i} encodes to no tokens")
        for j, c in enumerate(cand_ids[i]):
            if not c:
                raise UserError(f"candidate {j} of prompt {i} ({candidates[i][j]!r}) encodes to no tokens")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: list[Optional[CandidateScores]] = [None] * len(prompts)
    import contextlib

    context = autocast if autocast is not None else contextlib.nullcontext()
    # chunks of prompts whose candidates fit in max_rows (a prompt with more candidates is a chunk of its own)
    chunks: list[list[int]] = []
    rows = 0
    for i, cands in enumerate(cand_ids):
        if not cands:
            results[i] = CandidateScores([], [])
            continue
        if chunks and rows + len(cands) <= max_rows:
            chunks[-1].append(i)
            rows += len(cands)
        else:
            chunks.append([i])
            rows = len(cands)
    with torch.inference_mode(), context:
        for chunk in chunks:
            for i, scores in zip(
                chunk, _score_chunk(model, [prompt_ids[i] for i in chunk], [cand_ids[i] for i in chunk], pad, device)
            ):
                results[i] = scores
    for r, ids in zip(results, prompt_ids):
        if r is not None:
            r.prompt_tokens = len(ids)
    return [r if r is not None else CandidateScores([], [], len(ids)) for r, ids in zip(results, prompt_ids)]


def _cache_kwarg(model: Any) -> str:
    """`cache` (transformers >= 5.2x) or `past_key_values` (older): the forward argument taking a KV cache."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _score_chunk(
    model: Any, prompts: list[list[int]], cands: list[list[list[int]]], pad: int, device: Any
) -> list[CandidateScores]:
    import torch

    b = len(prompts)
    width = max(len(p) for p in prompts)
    prompt_ids = torch.full((b, width), pad, dtype=torch.long)
    prompt_mask = torch.zeros((b, width), dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding: every prompt ends at the last column
        prompt_ids[i, width - len(p) :] = torch.tensor(p)
        prompt_mask[i, width - len(p) :] = 1
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    positions = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True)
    first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # (b, V): the first candidate token
    cache = getattr(out, "cache", None) or out.past_key_values

    owner = [i for i, c in enumerate(cands) for _ in c]
    flat = [c for cs in cands for c in cs]
    rows, clen = len(flat), max(len(c) for c in flat)
    index = torch.tensor(owner, device=device)
    cache.reorder_cache(index)  # one cache row per candidate (repeated indices copy the prompt's row)
    cand_ids = torch.full((rows, clen), pad, dtype=torch.long)
    cand_mask = torch.zeros((rows, clen), dtype=torch.long)
    for r, c in enumerate(flat):  # right padding: padded positions are never read
        cand_ids[r, : len(c)] = torch.tensor(c)
        cand_mask[r, : len(c)] = 1
    cand_ids, cand_mask = cand_ids.to(device), cand_mask.to(device)
    lengths = prompt_mask.sum(dim=1)[index]
    cand_positions = lengths[:, None] + torch.arange(clen, device=device)[None, :]
    mask = torch.cat([prompt_mask[index], cand_mask], dim=1)
    total = first[index].gather(1, cand_ids[:, :1]).squeeze(1)
    if clen > 1:
        out2 = model(
            input_ids=cand_ids[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=cand_positions[:, :-1],
            use_cache=True,
            **{_cache_kwarg(model): cache},
        )
        logp = torch.log_softmax(out2.logits.float(), dim=-1)  # position k predicts candidate token k + 1
        picked = logp.gather(2, cand_ids[:, 1:, None]).squeeze(2)
        total = total + (picked * cand_mask[:, 1:]).sum(dim=1)
    totals = total.tolist()
    out_scores: list[CandidateScores] = []
    r = 0
    for cs in cands:
        out_scores.append(CandidateScores(totals[r : r + len(cs)], [len(c) for c in cs]))
        r += len(cs)
    return out_scores


def choose(scores: Sequence[float], sample: bool, temperature: float = 1.0, generator: Any = None) -> int:
    """The index of the best candidate, or one sampled from softmax(scores / temperature) (seeded generator)."""
    import torch

    if not scores:
        raise UserError("no candidates to choose from")
    values = torch.tensor(list(scores), dtype=torch.float64)
    if not sample:
        return int(torch.argmax(values))
    if temperature <= 0:
        raise UserError(f"temperature must be > 0 when sampling, got {temperature}")
    probs = torch.softmax(values / temperature, dim=0)
    return int(torch.multinomial(probs, 1, generator=generator))


__all__ = ["SCORE_MODES", "CandidateScores", "score_candidates", "choose"]
