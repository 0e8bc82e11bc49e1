"""Examples as a dataset, per-example reply weights, and the collator that pads a batch with per-token roles."""

from __future__ import annotations

from typing import Any, Optional

import torch

from crafter_exp.training import data as data_mod


class RoleCollator:
    """Right-pads a batch; `roles` is 1 for learned reply tokens, 0 for prompt tokens, 2 for context replies
    (weight 0: no loss), -1 for padding."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids, roles, mask = [], [], []
        for f in features:
            n = len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_id] * (width - n))
            roles.append(list(f["roles"]) + [-1] * (width - n))
            mask.append([1] * n + [0] * (width - n))
        input_ids = torch.tensor(ids, dtype=torch.long)
        attention_mask = torch.tensor(mask, dtype=torch.long)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": input_ids.masked_fill(attention_mask == 0, -100),
            "roles": torch.tensor(roles, dtype=torch.long),
            "weights": torch.tensor([float(f.get("weight", 1.0)) for f in features]),
        }


def reply_weights(tok: data_mod.Tokenized, power: float) -> list[float]:
    """Per-example reply-loss weights (frequency of the exact reply tokens) ^ -power, normalised to mean 1."""
    if power == 0:
        return [1.0] * len(tok.input_ids)
    from collections import Counter

    keys = [tuple(t for t, r in zip(ids, roles) if r == 1) for ids, roles in zip(tok.input_ids, tok.roles)]
    counts = Counter(keys)
    raw = [counts[k] ** -power for k in keys]
    mean = sum(raw) / len(raw)
    return [w / mean for w in raw]


def to_dataset(tok: data_mod.Tokenized, weights: Optional[list[float]] = None) -> Any:
    from datasets import Dataset

    columns = {"input_ids": tok.input_ids, "roles": tok.roles, "length": [len(x) for x in tok.input_ids]}
    if weights is not None:
        columns["weight"] = weights
    return Dataset.from_dict(columns)
