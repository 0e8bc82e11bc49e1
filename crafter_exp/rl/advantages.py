"""Advantages for GRPO on identical worlds: pure functions of the episodes' per-turn rewards (no torch, no store).

A group is the G episodes of one world in one iteration: the worlds are identical for a seed, so the episodes differ
only by the policy's samples, and the group's mean return is a baseline for exactly that world.

- `grpo`: every turn of an episode gets (R - mean_group R) / (std_group R + eps) (TRL's GRPOTrainer, scale_rewards
  `group`; `none` centres only, as Dr. GRPO).
- `gigpo`: plus a step-level term (GiGPO, arXiv 2505.10978): turns of one group whose state is identical (the
  exact prompt the policy saw — "anchor states") form a step group; each turn's discounted return-to-go is compared
  with the others of its step group. A state seen once gets no step term.
- `rtg`: plus the discounted return-to-go compared with the group's mean return-to-go at the same turn index (the
  episodes of one world are in step with each other early on; later the baseline is coarser).

Standard deviations are the unbiased ones (ddof 1) and eps is 1e-4, as TRL's `nanstd` and GRPOTrainer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crafter_exp.errors import UserError

ADVANTAGES = ("grpo", "gigpo", "rtg")
SCALES = ("group", "none")
EPS = 1e-4


@dataclass
class EpisodeTurns:
    """One episode as the advantage computation sees it."""

    group: int
    """The group it belongs to (its world)."""
    rewards: Sequence[float]
    """Reward of each turn (shaping included)."""
    states: Sequence[str]
    """What the policy saw at each turn (identical strings = identical states, for `gigpo`)."""


def returns_to_go(rewards: Sequence[float], gamma: float) -> np.ndarray:
    """G_t = r_t + gamma * G_{t+1}."""
    out = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * running
        out[t] = running
    return out


def _normalise(values: np.ndarray, scale: str) -> np.ndarray:
    """Centre on the mean; with `group`, divide by the unbiased std + eps (a single value or equal values -> 0)."""
    if values.size < 2:
        return np.zeros_like(values)
    centred = values - values.mean()
    if scale == "none":
        return centred
    return centred / (values.std(ddof=1) + EPS)


def episode_advantages(episodes: Sequence[EpisodeTurns], scale: str = "group") -> np.ndarray:
    """One advantage per episode: its return against its group's returns."""
    returns = np.array([float(np.sum(e.rewards)) for e in episodes], dtype=np.float64)
    out = np.zeros_like(returns)
    by_group: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(episodes):
        by_group[e.group].append(i)
    for members in by_group.values():
        out[members] = _normalise(returns[members], scale)
    return out


def anchor_step_advantages(episodes: Sequence[EpisodeTurns], gamma: float, scale: str = "group") -> list[np.ndarray]:
    """GiGPO's step term: return-to-go against the other visits of the same state within the group."""
    rtg = [returns_to_go(e.rewards, gamma) for e in episodes]
    out = [np.zeros(len(e.rewards)) for e in episodes]
    cells: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
    for i, e in enumerate(episodes):
        for t, state in enumerate(e.states):
            cells[(e.group, state)].append((i, t))
    for visits in cells.values():
        if len(visits) < 2:
            continue
        values = _normalise(np.array([rtg[i][t] for i, t in visits]), scale)
        for (i, t), v in zip(visits, values):
            out[i][t] = v
    return out


def turn_step_advantages(episodes: Sequence[EpisodeTurns], gamma: float, scale: str = "group") -> list[np.ndarray]:
    """Return-to-go minus the group's mean return-to-go at the same turn index; scaled by the group's std of that
    difference."""
    rtg = [returns_to_go(e.rewards, gamma) for e in episodes]
    out = [np.zeros(len(e.rewards)) for e in episodes]
    by_group: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(episodes):
        by_group[e.group].append(i)
    for members in by_group.values():
        length = max(len(rtg[i]) for i in members)
        total = np.zeros(length)
        count = np.zeros(length)
        for i in members:
            total[: len(rtg[i])] += rtg[i]
            count[: len(rtg[i])] += 1
        baseline = total / np.maximum(count, 1)
        diffs = {i: rtg[i] - baseline[: len(rtg[i])] for i in members}
        flat = np.concatenate([diffs[i] for i in members]) if members else np.zeros(0)
        div = 1.0 if scale == "none" or flat.size < 2 else flat.std(ddof=1) + EPS
        for i in members:
            out[i] = diffs[i] / div
    return out


def advantages(
    episodes: Sequence[EpisodeTurns],
    mode: str = "gigpo",
    gamma: float = 0.95,
    step_weight: float = 1.0,
    scale: str = "group",
) -> list[np.ndarray]:
    """Per-turn advantages of every episode: the episode term, plus `step_weight` x the step term of `mode`."""
    if mode not in ADVANTAGES:
        raise UserError(f"unknown advantage {mode!r} (known: {', '.join(ADVANTAGES)})")
    if scale not in SCALES:
        raise UserError(f"unknown scale_rewards {scale!r} (known: {', '.join(SCALES)})")
    per_episode = episode_advantages(episodes, scale)
    out = [np.full(len(e.rewards), a, dtype=np.float64) for e, a in zip(episodes, per_episode)]
    if mode == "grpo" or step_weight == 0:
        return out
    steps = (anchor_step_advantages if mode == "gigpo" else turn_step_advantages)(episodes, gamma, scale)
    return [o + step_weight * s for o, s in zip(out, steps)]
