"""Report figures (seaborn): per-achievement success rates, reward distribution, action distribution, metrics
with 95 % intervals, sweep summaries.

Figures are built on `matplotlib.figure.Figure` objects, never through pyplot: PNGs render with the Agg
canvas, no GUI backend is touched, and nothing leaks between calls (no global current figure), so this is safe
in headless runs, Ray workers and notebooks alike. Every file is written to a temp name and renamed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

DPI = 120
# "Using categorical units to plot a list of strings that are all parsable as floats": intended (swept values are
# categories on purpose), and Hydra would log it on every sweep summary.
logging.getLogger("matplotlib.category").setLevel(logging.WARNING)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=DPI, bbox_inches="tight")
    tmp.replace(path)
    return path


def _palette(labels: Sequence[str]) -> dict[str, tuple]:
    return dict(zip(labels, sns.color_palette("colorblind", max(len(labels), 1))))


def _family(table: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Rows of a long metrics table whose metric starts with `prefix`, with the item name in `item`."""
    rows = table[table["metric"].str.startswith(prefix)].copy()
    rows["item"] = rows["metric"].str.slice(len(prefix))
    return rows


def grouped_bars(
    table: pd.DataFrame, prefix: str, path: str | Path, ylabel: str, title: str, order: Optional[Sequence[str]] = None
) -> Optional[Path]:
    """Bars of one metric family (e.g. `achievement/`) per item, grouped by experiment; None when empty."""
    rows = _family(table, prefix)
    if rows.empty:
        return None
    labels = list(dict.fromkeys(rows["experiment"]))
    present = list(dict.fromkeys(rows["item"]))
    items = [i for i in order if i in set(present)] if order is not None else present
    fig = Figure(figsize=(max(6.0, 0.45 * len(items) * max(1, len(labels)) ** 0.5 + 2), 4.5))
    ax = fig.add_subplot()
    sns.barplot(
        data=rows,
        x="item",
        y="value",
        hue="experiment",
        order=items,
        hue_order=labels,
        palette=_palette(labels),
        errorbar=None,
        ax=ax,
    )
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=60)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.legend(title="", fontsize="small")
    return _save(fig, path)


def per_achievement(table: pd.DataFrame, path: str | Path, order: Optional[Sequence[str]] = None) -> Optional[Path]:
    """% of episodes unlocking each achievement, grouped by experiment."""
    return grouped_bars(table, "achievement/", path, "% of episodes", "Per-achievement success rate", order)


def action_distribution(table: pd.DataFrame, path: str | Path) -> Optional[Path]:
    """% of all actions played, per action, grouped by experiment."""
    return grouped_bars(table, "action/", path, "% of actions", "Action distribution")


def task_success(table: pd.DataFrame, path: str | Path) -> Optional[Path]:
    """Success rate per task type (ALFWorld), grouped by experiment."""
    return grouped_bars(table, "success/", path, "% of episodes solved", "Success rate per task type")


def reward_distribution(episodes: pd.DataFrame, path: str | Path, labels: Sequence[str]) -> Path:
    """Episode reward and achievements per episode, per experiment (box + every episode as a dot).

    `episodes` needs columns experiment, total_reward, num_achievements.
    """
    palette = _palette(labels)
    fig = Figure(figsize=(max(6.0, 1.6 * len(labels) + 3), 4.2))
    for i, (column, ylabel) in enumerate(
        [("total_reward", "episode reward"), ("num_achievements", "achievements per episode")]
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        data = episodes[["experiment", column]].astype({column: float})
        sns.boxplot(
            data=data,
            x="experiment",
            y=column,
            hue="experiment",
            order=labels,
            hue_order=labels,
            palette=palette,
            showfliers=False,
            ax=ax,
            legend=False,
        )
        sns.stripplot(
            data=data, x="experiment", y=column, order=labels, color="black", size=3, alpha=0.5, jitter=0.2, ax=ax
        )
        ax.set_xlabel("")
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelrotation=30)
    fig.suptitle("Reward distribution")
    return _save(fig, path)


def metric_intervals(table: pd.DataFrame, metrics: Sequence[str], path: str | Path) -> Optional[Path]:
    """One panel per metric: each experiment's value with its 95 % bootstrap interval."""
    metrics = [m for m in metrics if (table["metric"] == m).any()]
    if not metrics:
        return None
    labels = list(dict.fromkeys(table["experiment"]))
    palette = _palette(labels)
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(3.2 * cols + 0.4 * len(labels), 3.0 * rows))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, i + 1)
        data = table[table["metric"] == metric].set_index("experiment").reindex(labels)
        for x, label in enumerate(labels):
            value, low, high = data.loc[label, ["value", "ci_low", "ci_high"]].astype(float)
            if np.isnan(value):
                continue
            ax.errorbar([x], [value], yerr=[[value - low], [high - value]], fmt="o", capsize=4, color=palette[label])
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize="small")
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_title(metric, fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Metrics with 95 % bootstrap intervals")
    fig.tight_layout()
    return _save(fig, path)


def sweep_metric(summary: pd.DataFrame, x: str, metric: str, path: str | Path, hue: str = "policy") -> Path:
    """The chosen metric against the swept values (one line per policy)."""
    data = summary.dropna(subset=[metric]).copy()
    data[x] = data[x].astype(str)
    order = natural_order(data[x])
    fig = Figure(figsize=(max(5.0, 0.9 * len(order) + 3), 4.0))
    ax = fig.add_subplot()
    hues = list(dict.fromkeys(data[hue])) if hue in data else None
    sns.pointplot(
        data=data,
        x=x,
        y=metric,
        hue=hue if hues else None,
        order=order,
        hue_order=hues,
        palette=_palette(hues) if hues else None,
        errorbar=None,
        markers="o",
        ax=ax,
    )
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {x}")
    ax.tick_params(axis="x", labelrotation=30)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def natural_order(values: pd.Series) -> list[str]:
    """Distinct values, numerically sorted when they are all numbers (4, 8, 16, 64), else as first seen."""
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return distinct


__all__ = [
    "grouped_bars",
    "per_achievement",
    "action_distribution",
    "task_success",
    "reward_distribution",
    "metric_intervals",
    "sweep_metric",
    "natural_order",
]
