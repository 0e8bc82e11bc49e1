"""The `stats_only` table: how many episodes pass each criterion alone and all together, what the selection
holds (achievements, reward, efficiency, per-achievement unlock rates, tokens, cost) and how many turns it keeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from crafter_exp.filtering.criteria import Criterion


@dataclass
class FilterStats:
    total_episodes: int
    criteria: dict[str, int]
    """Criterion name -> episodes passing it alone."""
    passing_all: int
    selected: int
    """After `limit`."""
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    """'all' / 'selected' -> summary figures."""
    achievement_histogram: pd.DataFrame = field(default_factory=pd.DataFrame)
    unlock_rates: pd.DataFrame = field(default_factory=pd.DataFrame)
    examples: Optional[int] = None
    """Turns kept by the step-level selection (before max_examples / dedupe)."""
    episodes_with_examples: Optional[int] = None

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {
            "episodes_total": self.total_episodes,
            "episodes_passing": self.passing_all,
            "episodes_selected": self.selected,
        }
        out.update({f"pass_{k}": v for k, v in self.criteria.items()})
        for key, value in self.columns.get("selected", {}).items():
            if isinstance(value, (int, float)) and value is not None:
                out[f"selected_{key}"] = value
        if self.examples is not None:
            out["turns_kept"] = self.examples
        return out


def _summary(df: pd.DataFrame) -> dict[str, Any]:
    if df.empty:
        return {"episodes": 0}
    turns = df["turns"].fillna(0).clip(lower=1)
    tokens = df["prompt_tokens"].fillna(0) + df["completion_tokens"].fillna(0)
    cost_known = df["cost"].notna()
    return {
        "episodes": int(len(df)),
        "mean_achievements": float(df["counted_achievements"].mean()),
        "mean_reward": float(df["total_reward"].mean()),
        "efficiency": float((df["total_reward"].fillna(0) / turns).mean()),
        "mean_quality": float(df["quality"].mean()),
        "mean_turns": float(df["turns"].mean()),
        "success_rate": float(df["success"].astype("float").mean()) if df["success"].notna().any() else None,
        "tokens": int(tokens.sum()),
        "cost": float(df.loc[cost_known, "cost"].sum()),
        "cost_unknown_episodes": int((~cost_known).sum()),
    }


def compute_stats(
    frame: pd.DataFrame,
    criteria: Sequence[Criterion],
    selected: pd.DataFrame,
    achievements: Sequence[str],
    exclude: Sequence[str] = (),
) -> FilterStats:
    """`frame`: episode_frame() of all source episodes; `selected`: select_episodes()."""
    key = ["run_id", "seed"]
    sel = frame.merge(selected[key], on=key, how="inner")
    st = FilterStats(
        total_episodes=int(len(frame)),
        criteria={c.name: int(frame[f"pass_{c.name}"].fillna(False).astype(bool).sum()) for c in criteria},
        passing_all=int(frame["pass_all"].fillna(False).astype(bool).sum()) if len(frame) else 0,
        selected=int(len(selected)),
        columns={"all": _summary(frame), "selected": _summary(sel)},
    )
    top = int(max(frame["counted_achievements"].max() if len(frame) else 0, 0))
    bins = np.arange(top + 1)
    st.achievement_histogram = pd.DataFrame(
        {
            "achievements": bins,
            "all": np.bincount(frame["counted_achievements"].astype(int), minlength=top + 1)[: top + 1]
            if len(frame)
            else 0,
            "selected": np.bincount(sel["counted_achievements"].astype(int), minlength=top + 1)[: top + 1]
            if len(sel)
            else 0,
        }
    )
    counted = [a for a in achievements if a not in set(exclude)]

    def rates(df: pd.DataFrame) -> list[float]:
        if df.empty:
            return [0.0] * len(counted)
        exploded = df["achievements"].explode()
        counts = exploded.value_counts()
        return [float(counts.get(a, 0)) / len(df) for a in counted]

    st.unlock_rates = pd.DataFrame({"achievement": counted, "all": rates(frame), "selected": rates(sel)})
    return st


def format_stats(st: FilterStats) -> str:
    """A plain-text table for the terminal."""
    lines = [f"episodes in source runs: {st.total_episodes}"]
    if st.criteria:
        lines.append("passing each criterion alone:")
        width = max(len(k) for k in st.criteria)
        for name, n in st.criteria.items():
            lines.append(f"  {name:<{width}}  {n:>7}  ({100 * n / max(st.total_episodes, 1):5.1f} %)")
    lines.append(f"passing all criteria: {st.passing_all}; selected (after limit): {st.selected}")
    if st.examples is not None:
        lines.append(f"turns kept by the step selection: {st.examples} (from {st.episodes_with_examples} episodes)")
    lines.append("")
    rows = [
        "mean_achievements",
        "mean_reward",
        "efficiency",
        "mean_quality",
        "mean_turns",
        "success_rate",
        "tokens",
        "cost",
        "cost_unknown_episodes",
    ]
    lines.append(f"{'':<22}{'all':>12}{'selected':>12}")
    for r in rows:
        vals = []
        for col in ("all", "selected"):
            v = st.columns.get(col, {}).get(r)
            vals.append("-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        lines.append(f"{r:<22}{vals[0]:>12}{vals[1]:>12}")
    lines.append("")
    lines.append("achievements per episode (all / selected):")
    for row in st.achievement_histogram.itertuples():
        lines.append(f"  {row.achievements:>3}: {row.all:>7} / {row.selected:<7}")
    lines.append("")
    lines.append("unlock rate per achievement (all / selected):")
    for row in st.unlock_rates.itertuples():
        lines.append(f"  {row.achievement:<22}{100 * row.all:6.1f} % / {100 * row.selected:5.1f} %")
    return "\n".join(lines)
