"""The training sampler: batches of similar length, in random order."""

from __future__ import annotations

import torch


class ShuffledLengthBatches(torch.utils.data.Sampler):
    """Indices in batches of similar length, the batches in random order.

    Random batches of Crafter examples are a third padding (lengths 30-85 tokens); sorting each random megabatch of
    `mega` batches by length removes nearly all of it. Unlike transformers' LengthGroupedSampler, the batches are then
    shuffled: its long-to-short runs within each megabatch slowed the student's learning per step here (length
    follows the game's stage, so the order drifted through the game every 50 batches).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, mega: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega = mega
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.mega * self.batch_size
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=self.lengths.__getitem__)
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        full = [b for b in batches if len(b) == self.batch_size]
        partial = [b for b in batches if len(b) < self.batch_size]  # last: the loader's batches stay aligned with ours
        for b in torch.randperm(len(full), generator=g).tolist():
            yield from full[b]
        for b in partial:
            yield from b
