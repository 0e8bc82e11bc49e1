"""The policy update: batched log-probabilities of reply tokens and the clipped policy-gradient loss.

The loss is TRL GRPOTrainer's (`_compute_loss`, loss_type `dapo`): per reply token ratio = exp(logp - logp_old),
-min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A), plus beta x the k3 estimate of KL(policy || start)
(exp(ref - logp) - (ref - logp) - 1), summed over the reply tokens of a minibatch and divided by their number.
Log-probabilities and entropies come from TRL's `selective_log_softmax` / `entropy_from_logits`, at the sampling
temperature (the policy trained is the one that played, and the one evaluation plays).

What differs from GRPOTrainer, and why: our samples are turns of multi-turn episodes, each its own prompt (the
observation) and a short reply, so a batch is many short sequences, not G completions of one prompt. Prompts are
rendered and tokenised once per iteration in one batched tokenizer call (repeated states are rendered once), then
sorted by length into micro-batches (little padding); each micro-batch is one forward pass that keeps only the
logits at reply positions (`logits_to_keep`, as TRL). The probe before this stage re-encoded prompts one by one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from crafter_exp.errors import UserError


@dataclass
class Samples:
    """The iteration's turns as token ids, with their advantages."""

    prompt_ids: list[list[int]]
    reply_ids: list[list[int]]
    advantages: np.ndarray
    """Per sample; a merged sample carries the sum of its turns' advantages (see `merge`)."""
    weights: Optional[np.ndarray] = None
    """Turns each sample stands for (None = one each)."""
    old_logps: Optional[list[torch.Tensor]] = None
    """Per-sample log-probabilities of the reply tokens under the policy that played (filled by `prepare`)."""
    ref_logps: Optional[list[torch.Tensor]] = None
    """Same under the start checkpoint (only when beta > 0)."""
    entropy: float = float("nan")
    """Mean entropy of the policy's next-token distribution at reply positions (nats)."""

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def weight(self) -> np.ndarray:
        return np.ones(len(self)) if self.weights is None else self.weights

    @property
    def reply_tokens(self) -> int:
        return int(sum(w * len(r) for w, r in zip(self.weight(), self.reply_ids)))

    @property
    def tokens(self) -> int:
        return sum(len(p) + len(r) for p, r in zip(self.prompt_ids, self.reply_ids))


def encode(tokenizer: Any, prompt_texts: Sequence[str], replies: Sequence[str], max_length: int) -> tuple[list, list]:
    """Token ids of each rendered prompt and of each reply (+ end-of-sequence), batched; identical prompts once.

    Prompts longer than `max_length` minus the reply keep their end (the current observation)."""
    unique = list(dict.fromkeys(prompt_texts))
    enc = tokenizer(unique, add_special_tokens=False)["input_ids"]
    by_text = dict(zip(unique, enc))
    eos = tokenizer.eos_token_id
    reply_enc = tokenizer(list(replies), add_special_tokens=False)["input_ids"]
    prompts, outs = [], []
    for text, reply in zip(prompt_texts, reply_enc):
        r = list(reply) + ([eos] if eos is not None else [])
        p = by_text[text]
        room = max(max_length - len(r), 1)
        prompts.append(p[-room:])
        outs.append(r)
    return prompts, outs


def merge(
    prompt_texts: Sequence[str], replies: Sequence[str], advantages: np.ndarray
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Turns with the same prompt, the same reply and advantages of the same sign become one sample whose advantage is
    their sum and whose weight is their number. Exact for the clipped loss: for a fixed sign of A,
    min(ratio * A, clip(ratio) * A) is linear in A, and the ratio of identical (prompt, reply) pairs is identical.
    Repeated states are common (the early turns of a group's episodes play the same world): fewer forward passes."""
    index: dict[tuple[str, str, bool], int] = {}
    texts: list[str] = []
    reps: list[str] = []
    adv: list[float] = []
    weight: list[float] = []
    for text, reply, a in zip(prompt_texts, replies, advantages):
        key = (text, reply, bool(a >= 0))
        i = index.get(key)
        if i is None:
            index[key] = len(texts)
            texts.append(text)
            reps.append(reply)
            adv.append(float(a))
            weight.append(1.0)
        else:
            adv[i] += float(a)
            weight[i] += 1.0
    return texts, reps, np.array(adv, dtype=np.float64), np.array(weight, dtype=np.float64)


def _collate(prompts: Sequence[list[int]], replies: Sequence[list[int]], pad_id: int, device: Any):
    """[left-padded prompt | right-padded reply]: every row's reply starts at the same column (TRL's layout)."""
    width_p = max(len(p) for p in prompts)
    width_r = max(len(r) for r in replies)
    ids = torch.full((len(prompts), width_p + width_r), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    reply_mask = torch.zeros((len(prompts), width_r), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, replies)):
        ids[i, width_p - len(p) : width_p] = torch.tensor(p)
        ids[i, width_p : width_p + len(r)] = torch.tensor(r)
        mask[i, width_p - len(p) : width_p + len(r)] = 1
        reply_mask[i, : len(r)] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), position_ids.to(device), reply_mask.to(device), width_r


def reply_logps(
    model: Any,
    prompts: Sequence[list[int]],
    replies: Sequence[list[int]],
    temperature: float,
    pad_id: int,
    device: Any,
    entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """(log-probabilities [n, R], reply mask [n, R], entropies [n, R] or None) of one micro-batch."""
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax

    ids, mask, pos, reply_mask, width_r = _collate(prompts, replies, pad_id, device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=width_r + 1)
    logits = out.logits[:, :-1, :].float() / temperature  # position j predicts reply token j
    targets = ids[:, -width_r:]
    logps = selective_log_softmax(logits, targets)
    ent = entropy_from_logits(logits) if entropy else None
    return logps, reply_mask, ent


def micro_batches(indices: Sequence[int], lengths: Sequence[int], size: int) -> list[list[int]]:
    """`indices` sorted by sequence length and cut into chunks of `size` (little padding per forward pass)."""
    order = sorted(indices, key=lambda i: lengths[i])
    return [order[i : i + size] for i in range(0, len(order), size)]


def forward_all(
    model: Any,
    samples: Samples,
    temperature: float,
    pad_id: int,
    device: Any,
    micro: int,
    autocast: Callable[[], Any],
    entropy: bool = False,
) -> tuple[list[torch.Tensor], float]:
    """No-grad log-probabilities of every sample's reply tokens (and the mean entropy when asked)."""
    lengths = [len(p) + len(r) for p, r in zip(samples.prompt_ids, samples.reply_ids)]
    out: list[Optional[torch.Tensor]] = [None] * len(samples)
    ent_sum, ent_n = 0.0, 0.0
    with torch.no_grad(), autocast():
        for chunk in micro_batches(range(len(samples)), lengths, micro):
            logps, rmask, ent = reply_logps(
                model,
                [samples.prompt_ids[i] for i in chunk],
                [samples.reply_ids[i] for i in chunk],
                temperature,
                pad_id,
                device,
                entropy,
            )
            for row, i in enumerate(chunk):
                out[i] = logps[row, : len(samples.reply_ids[i])].cpu()
            if ent is not None:
                ent_sum += float((ent * rmask).sum())
                ent_n += float(rmask.sum())
    return out, (ent_sum / ent_n if ent_n else float("nan"))  # type: ignore[return-value]


@dataclass
class UpdateSettings:
    epochs: int
    minibatch: int
    micro_batch: int
    clip_low: float
    clip_high: float
    beta: float
    max_grad_norm: float
    temperature: float
    seed: int = 0


@dataclass
class UpdateStats:
    loss_first: float = float("nan")
    """Mean loss of the first optimiser step (before any update of this iteration)."""
    loss_last: float = float("nan")
    loss_mean: float = float("nan")
    kl_ref: float = float("nan")
    """Mean k3 KL(policy || start) per reply token, over the last epoch."""
    approx_kl: float = float("nan")
    """Mean k3 KL(policy || policy that played) per reply token, after the last epoch's steps."""
    clip_fraction: float = 0.0
    """Share of reply tokens whose clipped term was the active one (TRL's clip ratio, both sides)."""
    entropy: float = float("nan")
    optimizer_steps: int = 0
    tokens: int = 0
    """Tokens through forward + backward passes."""
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def update(
    model: Any,
    optimizer: Any,
    samples: Samples,
    s: UpdateSettings,
    pad_id: int,
    device: Any,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    on_step: Optional[Callable[[int, float], None]] = None,
) -> UpdateStats:
    """`s.epochs` passes of clipped policy-gradient steps over `samples` (old / ref log-probs already filled)."""
    if samples.old_logps is None:
        raise UserError("samples.old_logps is not computed")
    stats = UpdateStats(entropy=samples.entropy)
    lengths = [len(p) + len(r) for p, r in zip(samples.prompt_ids, samples.reply_ids)]
    adv = torch.tensor(samples.advantages, dtype=torch.float32)
    weight = torch.tensor(samples.weight(), dtype=torch.float32)
    rng = np.random.default_rng(s.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    t0 = time.perf_counter()
    clipped, counted, kl_sum, approx_sum, approx_n = 0.0, 0.0, 0.0, 0.0, 0.0
    for epoch in range(s.epochs):
        order = rng.permutation(len(samples))
        last_epoch = epoch == s.epochs - 1
        for start in range(0, len(order), s.minibatch):
            batch = order[start : start + s.minibatch].tolist()
            n_tokens = float(sum(samples.weight()[i] * len(samples.reply_ids[i]) for i in batch))
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for chunk in micro_batches(batch, lengths, s.micro_batch):
                with autocast():
                    logps, rmask, _ = reply_logps(
                        model,
                        [samples.prompt_ids[i] for i in chunk],
                        [samples.reply_ids[i] for i in chunk],
                        s.temperature,
                        pad_id,
                        device,
                    )
                width = logps.shape[1]
                old = torch.stack([_pad(samples.old_logps[i], width) for i in chunk]).to(logps.device)
                a = adv[chunk].to(logps.device)[:, None]
                w = weight[chunk].to(logps.device)[:, None] * rmask  # turns per sample, on its reply tokens
                ratio = torch.exp(logps - old)
                clipped_ratio = torch.clamp(ratio, 1 - s.clip_low, 1 + s.clip_high)
                per_token = -torch.min(ratio * a, clipped_ratio * a)
                if s.beta:
                    ref = torch.stack([_pad(samples.ref_logps[i], width) for i in chunk]).to(logps.device)
                    kl = torch.exp(ref - logps) - (ref - logps) - 1
                    per_token = per_token + s.beta * kl * weight[chunk].to(logps.device)[:, None]
                loss = (per_token * rmask).sum() / max(n_tokens, 1.0)
                loss.backward()
                step_loss += float(loss.detach())
                stats.tokens += sum(lengths[i] for i in chunk)
                with torch.no_grad():
                    if last_epoch:
                        is_clipped = ((ratio < 1 - s.clip_low) & (a < 0)) | ((ratio > 1 + s.clip_high) & (a > 0))
                        clipped += float((is_clipped.float() * w).sum())
                        counted += float(w.sum())
                        log_r = old - logps
                        approx_sum += float(((torch.exp(log_r) - log_r - 1) * w).sum())
                        approx_n += float(w.sum())
                        if s.beta:
                            kl_sum += float((kl * w).sum())
            if s.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
            optimizer.step()
            stats.optimizer_steps += 1
            stats.losses.append(step_loss)
            if on_step is not None:
                on_step(stats.optimizer_steps, step_loss)
    optimizer.zero_grad(set_to_none=True)
    stats.seconds = time.perf_counter() - t0
    if stats.losses:
        stats.loss_first, stats.loss_last = stats.losses[0], stats.losses[-1]
        stats.loss_mean = float(np.mean(stats.losses))
    stats.clip_fraction = clipped / counted if counted else 0.0
    stats.approx_kl = approx_sum / approx_n if approx_n else float("nan")
    stats.kl_ref = kl_sum / approx_n if s.beta and approx_n else float("nan")
    return stats


def _pad(t: torch.Tensor, width: int) -> torch.Tensor:
    return t if t.shape[0] == width else torch.cat([t, t.new_zeros(width - t.shape[0])])


def steps_per_iteration(n: int, s: UpdateSettings) -> int:
    return s.epochs * math.ceil(n / max(s.minibatch, 1))
