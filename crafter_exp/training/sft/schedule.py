"""The learning-rate schedule on training progress (steps or the time budget, whichever is further)."""

from __future__ import annotations

import math
import time
from typing import Optional

OWN_SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup")


class ProgressClock:
    """Training progress in [0, 1]: the larger of step progress and time-budget progress."""

    def __init__(self, max_time_s: Optional[float]):
        self.max_time_s = max_time_s
        self.t0: Optional[float] = None
        self.num_steps = 1

    def start(self) -> None:
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return 0.0 if self.t0 is None else time.monotonic() - self.t0

    def progress(self, step: int) -> float:
        p = step / max(self.num_steps, 1)
        if self.max_time_s:
            p = max(p, self.elapsed() / self.max_time_s)
        return min(p, 1.0)


def lr_factor(name: str, progress: float, warmup: float, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at a point of training progress."""
    if name != "constant" and warmup > 0 and progress < warmup:
        return max(progress / warmup, 1e-3)
    if name in ("constant", "constant_with_warmup"):
        return 1.0
    rest = (progress - warmup) / max(1.0 - warmup, 1e-9)
    rest = min(max(rest, 0.0), 1.0)
    if name == "linear":
        decay = 1.0 - rest
    else:
        decay = 0.5 * (1.0 + math.cos(math.pi * rest))
    return min_ratio + (1.0 - min_ratio) * decay
