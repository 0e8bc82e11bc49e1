"""Episode metrics, bootstrap intervals and significance tests: pure functions over an `episodes` DataFrame.

The DataFrame is the trace store's `episodes` table (crafter_exp/store/schema.py), one row per episode.

Every metric is a statistic of a *weighted* set of episodes: a weight matrix W (resamples x episodes) says how
often each episode counts in each resample. The point estimate is W = ones; a bootstrap resample is a row of
multinomial counts; a permutation-test group is a row of 0/1 labels. So one vectorised code path gives the
value, the 95 % interval and the null distribution of every metric — including the ones that are not
per-episode means (Crafter score, distinct achievements, action shares) and user metrics.

Units: every rate is in percent (0-100), as the Crafter paper and BALROG report them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd

from crafter_exp.errors import UserError

CustomMetric = Callable[[pd.DataFrame], dict[str, float]]

# Metrics every run has (name -> meaning). Per-item families are added per data set:
# `achievement/<name>` (% of episodes unlocking it), `success/<task_type>` (ALFWorld), `action/<name>` (% of
# actions played). The order here is the order of reports.
METRICS: dict[str, str] = {
    "mean_achievements": "Distinct achievements unlocked per episode (mean)",
    "achievement_rate": "% of episodes with >= k achievements (k = compare.k, default 3)",
    "crafter_score": "Crafter score, % (Hafner 2021): exp(mean_i ln(1 + s_i)) - 1, s_i = % of episodes unlocking "
    "achievement i, over all the env's achievements",
    "progression": "Achievements unlocked / all the env's achievements, % (BALROG's progression), mean",
    "distinct_achievements": "Achievements unlocked in at least one episode of the run",
    "mean_reward": "Total episode reward (mean)",
    "efficiency": "Reward per turn (episode reward / turns, mean over episodes)",
    "success_rate": "% of episodes solved (where the env has success: ALFWorld)",
    "steps_to_success": "Environment steps of the solved episodes (mean)",
    "invalid_action_rate": "% of an episode's steps whose action was not admissible (mean)",
    "parse_failure_rate": "% of an episode's turns whose reply was not 1..N valid actions (parse_failures, mean)",
    "repeated_action_rate": "% of an episode's turns repeating the previous turn's actions (mean)",
    "expert_agreement": "% of an episode's turns whose action was the env expert's for that state (mean; where the "
    "expert was asked: evaluation runs, scripted teachers, DAgger rounds)",
    "episode_length": "Environment steps per episode (mean)",
    "tokens_per_episode": "Prompt + completion tokens per episode (mean)",
    "cost_per_episode": "USD per episode (mean over episodes with a known cost)",
    "prediction_f1": "World-model prediction F1 x 100: per turn, F1 of the predicted vs the actual changes "
    "{quantity: signed amount}; mean over an episode's scored turns, then over episodes",
    "prediction_f1_changed": "prediction_f1 over the turns where something changed only (most turns change "
    "nothing, so always predicting `no change` scores high on prediction_f1 and 0 here)",
    "prediction_exact_rate": "% of an episode's scored predictions that were exactly the actual changes (mean)",
    "prediction_scored_rate": "% of an episode's <prediction>s that could be scored (named changes or no change; "
    "the action parsed), mean over episodes that predicted",
}
FAMILIES = ("achievement/", "success/", "action/")
# Free-text action spaces (ALFWorld commands) have hundreds of distinct actions: the action distribution keeps the
# most played ones and folds the rest into OTHER_ACTIONS (Crafter's 17 actions are all kept).
MAX_ACTIONS = 20
OTHER_ACTIONS = "(other)"

# Per-episode metrics that make the headline of reports and figures (the rest are in the CSV).
HEADLINE = [
    "mean_achievements",
    "achievement_rate",
    "crafter_score",
    "progression",
    "mean_reward",
    "efficiency",
    "success_rate",
    "invalid_action_rate",
    "prediction_f1",
]


def crafter_score(success_rates_pct: Sequence[float]) -> float:
    """S = exp(mean_i ln(1 + s_i)) - 1 with s_i in percent; 0 when every rate is 0."""
    rates = np.asarray(success_rates_pct, dtype=float)
    if rates.size == 0:
        return float("nan")
    return float(np.expm1(np.mean(np.log1p(rates))))


# ------------------------------------------------------------------------------------------ episode columns


def _as_list(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):  # JSON text (e.g. a CSV round trip)
        return list(json.loads(value)) if value.startswith("[") else [value]
    return [str(v) for v in value]


def _as_counts(value: Any) -> dict[str, float]:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return {}
    if isinstance(value, str):
        value = json.loads(value) if value else {}
    return {str(k): float(v) for k, v in dict(value).items()}


def _numeric(df: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float (NULL -> NaN); a missing column is all NaN."""
    if column not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[column], errors="coerce").astype("float64").to_numpy(na_value=np.nan)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


class MetricSet:
    """Every metric as a function of P = W @ Z, where Z stacks the per-episode columns all metrics need.

    One matrix product per weight matrix (instead of one per metric) keeps resampling memory-bound work low:
    a mean is P[:, value] / P[:, known], a ratio P[:, num] / P[:, den], the Crafter score uses the block of
    achievement indicators. Identical columns are stored once.
    """

    def __init__(self) -> None:
        self._columns: list[np.ndarray] = []
        self._index: dict[bytes, int] = {}
        self._fns: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
        self._z: Optional[np.ndarray] = None

    def column(self, values: np.ndarray) -> int:
        values = np.ascontiguousarray(values, dtype=float)
        key = values.tobytes()
        if key not in self._index:
            self._index[key] = len(self._columns)
            self._columns.append(values)
            self._z = None
        return self._index[key]

    def mean(self, name: str, values: np.ndarray) -> None:
        """Mean over episodes whose value is known (NaN = not applicable)."""
        known = np.isfinite(values)
        v, k = self.column(np.where(known, values, 0.0)), self.column(known.astype(float))
        self._fns[name] = lambda p: _divide(p[:, v], p[:, k])

    def ratio(self, name: str, num: np.ndarray, den: np.ndarray, scale: float = 1.0) -> None:
        """Sum of num over sum of den (pooled over episodes)."""
        a, b = self.column(num), self.column(den)
        self._fns[name] = lambda p: scale * _divide(p[:, a], p[:, b])

    def block(self, matrix: np.ndarray) -> list[int]:
        return [self.column(matrix[:, j]) for j in range(matrix.shape[1])]

    def add(self, name: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self._fns[name] = fn

    @property
    def names(self) -> list[str]:
        return list(self._fns)

    def __iter__(self):
        return iter(self._fns)

    def evaluate(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """W (B x n episode weights) -> {metric: values (B,)}."""
        if self._z is None:
            self._z = np.column_stack(self._columns) if self._columns else np.zeros((w.shape[1], 0))
        p = w @ self._z
        return {name: fn(p) for name, fn in self._fns.items()}


@dataclass
class EpisodeArrays:
    """The numbers every metric needs, extracted once from an episodes DataFrame."""

    n: int
    columns: dict[str, np.ndarray]
    achievements: tuple[str, ...]
    unlocked: np.ndarray  # (n, K) 0/1: episode unlocked achievement k of the env
    actions: tuple[str, ...]
    action_counts: np.ndarray  # (n, M)
    task_types: tuple[str, ...]
    task_type: np.ndarray  # (n,) object

    @classmethod
    def from_frame(
        cls, df: pd.DataFrame, env_achievements: Sequence[str], actions: Optional[Sequence[str]] = None
    ) -> EpisodeArrays:
        """`actions`: the actions reported one by one (default: top_actions(df)); the others count as OTHER."""
        n = len(df)
        achievements = tuple(env_achievements or ())
        index = {a: i for i, a in enumerate(achievements)}
        unlocked = np.zeros((n, len(achievements)))
        lists = [_as_list(v) for v in df["achievements"]] if "achievements" in df.columns else [[] for _ in range(n)]
        for row, names in enumerate(lists):
            for name in names:
                if name in index:
                    unlocked[row, index[name]] = 1.0
        counts = [_as_counts(v) for v in df["action_counts"]] if "action_counts" in df.columns else [{}] * n
        named = tuple(actions) if actions is not None else tuple(top_actions(df))
        kept = set(named)
        has_other = any(a not in kept for c in counts for a in c)
        actions = named + ((OTHER_ACTIONS,) if has_other and OTHER_ACTIONS not in kept else ())
        action_counts = np.array(
            [
                [c.get(a, 0.0) for a in named]
                + ([sum(v for a, v in c.items() if a not in kept)] if len(actions) > len(named) else [])
                for c in counts
            ]
        ).reshape(n, len(actions))
        if "task_type" in df.columns:
            task_type = np.array([None if pd.isna(t) else str(t) for t in df["task_type"]], dtype=object)
        else:
            task_type = np.full(n, None, dtype=object)
        task_types = tuple(sorted({t for t in task_type if t is not None}))
        columns = {
            c: _numeric(df, c)
            for c in (
                "steps",
                "turns",
                "total_reward",
                "num_achievements",
                "success",
                "invalid_actions",
                "parse_failures",
                "repeated_actions",
                "expert_turns",
                "expert_agreed",
                "prompt_tokens",
                "completion_tokens",
                "cost",
                "predictions",
                "predictions_scored",
                "predictions_exact",
                "prediction_f1",
                "prediction_f1_changed",
            )
        }
        if "num_achievements" not in df.columns:
            columns["num_achievements"] = np.array([float(len(x)) for x in lists])
        return cls(n, columns, achievements, unlocked, actions, action_counts, task_types, task_type)


def top_actions(df: pd.DataFrame, limit: int = MAX_ACTIONS) -> list[str]:
    """Actions in the episodes' action_counts, by name; only the `limit - 1` most played when there are more."""
    totals: dict[str, float] = {}
    for value in df["action_counts"] if "action_counts" in df.columns else []:
        for action, count in _as_counts(value).items():
            totals[action] = totals.get(action, 0.0) + count
    if len(totals) <= limit:
        return sorted(totals)
    return sorted(sorted(totals, key=lambda a: (-totals[a], a))[: limit - 1])


def _stats(arrays: EpisodeArrays, k: int) -> MetricSet:
    """Every metric applicable to these episodes, in report order."""
    c = arrays.columns
    K = len(arrays.achievements)
    success = c["success"]
    m = MetricSet()
    m.mean("mean_achievements", c["num_achievements"])
    m.mean(
        "achievement_rate", np.where(np.isfinite(c["num_achievements"]), 100.0 * (c["num_achievements"] >= k), np.nan)
    )
    if K:
        unlocked = m.block(arrays.unlocked)
        episodes = m.column(np.ones(arrays.n))

        def rates(p: np.ndarray) -> np.ndarray:  # % of (weighted) episodes unlocking each achievement
            return 100.0 * _divide(p[:, unlocked], p[:, [episodes]])

        m.add("crafter_score", lambda p: np.expm1(np.log1p(rates(p)).mean(axis=1)))
        m.mean("progression", 100.0 * arrays.unlocked.sum(axis=1) / K)
        m.add("distinct_achievements", lambda p: (p[:, unlocked] > 0).sum(axis=1).astype(float))
    m.mean("mean_reward", c["total_reward"])
    m.mean("efficiency", _divide(c["total_reward"], c["turns"]))
    m.mean("success_rate", 100.0 * success)
    m.mean("steps_to_success", np.where(success == 1.0, c["steps"], np.nan))
    m.mean("invalid_action_rate", 100.0 * _divide(c["invalid_actions"], c["steps"]))
    m.mean("parse_failure_rate", 100.0 * _divide(c["parse_failures"], c["turns"]))
    m.mean("repeated_action_rate", 100.0 * _divide(c["repeated_actions"], c["turns"]))
    m.mean("expert_agreement", 100.0 * _divide(c["expert_agreed"], c["expert_turns"]))
    m.mean("episode_length", c["steps"])
    m.mean("tokens_per_episode", np.nan_to_num(c["prompt_tokens"]) + np.nan_to_num(c["completion_tokens"]))
    m.mean("cost_per_episode", c["cost"])
    # world-model predictions: NaN (not applicable) for runs that made none or an env that scores none
    m.mean("prediction_f1", 100.0 * c["prediction_f1"])
    m.mean("prediction_f1_changed", 100.0 * c["prediction_f1_changed"])
    m.mean("prediction_exact_rate", 100.0 * _divide(c["predictions_exact"], c["predictions_scored"]))
    m.mean("prediction_scored_rate", 100.0 * _divide(c["predictions_scored"], c["predictions"]))
    for i, name in enumerate(arrays.achievements):
        m.mean(f"achievement/{name}", 100.0 * arrays.unlocked[:, i])
    for task in arrays.task_types:
        m.mean(f"success/{task}", np.where(arrays.task_type == task, 100.0 * success, np.nan))
    total_actions = arrays.action_counts.sum(axis=1)
    for j, action in enumerate(arrays.actions):
        m.ratio(f"action/{action}", arrays.action_counts[:, j], total_actions, scale=100.0)
    return m


# ---------------------------------------------------------------------------------------------- custom metrics


def load_custom_metrics(specs: Iterable[Any]) -> list[tuple[str, CustomMetric]]:
    """`[{_target_: module.fn}, ...]` -> [(target, fn)]; fn(episodes DataFrame) -> {name: number}.

    Extra keys of a spec are bound as keyword arguments (functools.partial: the function is called once per
    resample, so no per-call instantiate machinery).
    """
    import functools

    from hydra.utils import get_method
    from omegaconf import OmegaConf

    loaded = []
    for spec in specs or []:
        if OmegaConf.is_config(spec):
            spec = OmegaConf.to_container(spec, resolve=True)
        if isinstance(spec, str):
            spec = {"_target_": spec}
        if not isinstance(spec, dict) or "_target_" not in spec:
            raise UserError(f"custom metric {spec!r} needs a `_target_` (a function taking the episodes DataFrame)")
        target = spec["_target_"]
        try:
            fn = get_method(target)
        except Exception as exc:
            raise UserError(f"custom metric {target!r} cannot be loaded: {exc}") from None
        kwargs = {k: v for k, v in spec.items() if k != "_target_"}
        loaded.append((str(target), functools.partial(fn, **kwargs) if kwargs else fn))
    return loaded


TERMINATIONS = ("done", "death", "success", "max_steps", "length", "api_error")  # episodes.termination values


def termination_rates(df: pd.DataFrame, kinds: Optional[Sequence[str]] = None) -> dict[str, float]:
    """Example custom metric: % of episodes per termination (`termination/death`, ...).

    A custom metric must return the same names for any set of episodes (it is also called on resamples).

    Use: `compare.custom_metrics=[{_target_: crafter_exp.metrics.termination_rates, kinds: [death]}]`.
    """
    terminations = df["termination"].astype(str) if len(df) else pd.Series([], dtype=str)
    kinds = list(kinds) if kinds is not None else list(TERMINATIONS)
    return {f"termination/{k}": 100.0 * float((terminations == k).mean()) if len(df) else float("nan") for k in kinds}


def _call_custom(target: str, fn: CustomMetric, df: pd.DataFrame) -> dict[str, float]:
    out = fn(df)
    if not isinstance(out, dict):
        raise UserError(f"custom metric {target!r} must return {{name: number}}, got {type(out).__name__}")
    clean = {}
    for name, value in out.items():
        try:
            clean[str(name)] = float(value)
        except (TypeError, ValueError):
            raise UserError(f"custom metric {target!r}: value of {name!r} is not a number: {value!r}") from None
    return clean


def _custom_stats(df: pd.DataFrame, custom: Sequence[tuple[str, CustomMetric]]) -> Callable[[np.ndarray], dict]:
    """W -> {name: values}: each custom function called once per resample on the resampled DataFrame."""
    frame = df.reset_index(drop=True)
    positions = np.arange(len(frame))

    def evaluate(w: np.ndarray) -> dict[str, np.ndarray]:
        rows: list[dict[str, float]] = []
        for weights in w:
            sample = frame.iloc[np.repeat(positions, weights.astype(int))].reset_index(drop=True)
            merged: dict[str, float] = {}
            for target, fn in custom:
                merged.update(_call_custom(target, fn, sample))
            rows.append(merged)
        names = list(dict.fromkeys(name for row in rows for name in row))
        return {name: np.array([row.get(name, np.nan) for row in rows]) for name in names}

    return evaluate


# ------------------------------------------------------------------------------------------------ point values


def compute(
    df: pd.DataFrame,
    env_achievements: Sequence[str],
    k: int = 3,
    custom: Sequence[tuple[str, CustomMetric]] = (),
    actions: Optional[Sequence[str]] = None,
) -> dict[str, float]:
    """Every applicable metric's value over these episodes (metrics that do not apply are left out)."""
    if len(df) == 0:
        return {}
    arrays = EpisodeArrays.from_frame(df, env_achievements, actions)
    ones = np.ones((1, arrays.n))
    values = {name: float(v[0]) for name, v in _stats(arrays, k).evaluate(ones).items()}
    if custom:
        values.update({name: float(v[0]) for name, v in _custom_stats(df, custom)(ones).items()})
    return {name: v for name, v in values.items() if not math.isnan(v)}


def summary(
    df: pd.DataFrame, env_achievements: Sequence[str], k: int = 3, declaration: Sequence[str] = ()
) -> dict[str, float]:
    """Metrics of one run for MLflow (rollout stage): every applicable (and declared) metric plus `episodes`."""
    return {"episodes": float(len(df)), **only_declared(compute(df, env_achievements, k), declaration)}


def per_achievement_rates(df: pd.DataFrame, env_achievements: Sequence[str]) -> pd.Series:
    """% of episodes unlocking each of the env's achievements (0 for those never unlocked)."""
    arrays = EpisodeArrays.from_frame(df, env_achievements)
    return pd.Series(
        100.0 * arrays.unlocked.mean(axis=0) if arrays.n else 0.0, index=list(arrays.achievements), name="success_rate"
    )


def action_distribution(df: pd.DataFrame, actions: Optional[Sequence[str]] = None) -> pd.Series:
    """% of all actions played, per action (from action_counts; rare ones folded as in EpisodeArrays)."""
    arrays = EpisodeArrays.from_frame(df, (), actions)
    total = arrays.action_counts.sum()
    shares = 100.0 * arrays.action_counts.sum(axis=0) / total if total else np.zeros(len(arrays.actions))
    return pd.Series(shares, index=list(arrays.actions), name="share")


def metric_names(
    df: pd.DataFrame, env_achievements: Sequence[str], k: int = 3, actions: Optional[Sequence[str]] = None
) -> list[str]:
    """Names of every metric defined for these episodes (applicable or not), report order."""
    return list(_stats(EpisodeArrays.from_frame(df, env_achievements, actions), k))


def declared(name: str, declaration: Sequence[str]) -> bool:
    """Whether a metric name is one an environment declares (exact names or globs such as `success/*`)."""
    import fnmatch

    return any(name == d or fnmatch.fnmatchcase(name, d) for d in declaration)


def only_declared(values: dict[str, Any], declaration: Sequence[str]) -> dict[str, Any]:
    """The entries of {metric: value} that the environment declares (an empty declaration keeps everything)."""
    if not declaration:
        return dict(values)
    return {name: v for name, v in values.items() if declared(name, declaration)}


# ------------------------------------------------------------------------------------------------- resampling

CHUNK_CELLS = 4_000_000  # W entries per chunk (32 MB of float64): bounds memory for large runs


def _chunks(total: int, n: int) -> list[int]:
    size = max(1, CHUNK_CELLS // max(n, 1))
    return [min(size, total - start) for start in range(0, total, size)]


def bootstrap(
    df: pd.DataFrame,
    env_achievements: Sequence[str],
    k: int = 3,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    custom: Sequence[tuple[str, CustomMetric]] = (),
    custom_resamples: int = 500,
    actions: Optional[Sequence[str]] = None,
) -> pd.DataFrame:
    """Point value and percentile-bootstrap interval of every applicable metric.

    Episodes are resampled with replacement (the same resamples for every metric), from a seeded numpy
    generator: same data + seed -> same intervals. Custom metrics use the first `custom_resamples` resamples
    (each is a Python call). Columns: metric, value, ci_low, ci_high, n.
    """
    if len(df) == 0:
        raise UserError("no episodes to bootstrap")
    arrays = EpisodeArrays.from_frame(df, env_achievements, actions)
    stats = _stats(arrays, k)
    n = arrays.n
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {name: [] for name in stats}
    custom_draws: dict[str, list[np.ndarray]] = {}
    custom_eval = _custom_stats(df, custom) if custom else None
    done = 0
    for size in _chunks(resamples, n):
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)
        for name, values in stats.evaluate(w).items():
            draws[name].append(values)
        if custom_eval is not None and done < custom_resamples:
            for name, values in custom_eval(w[: custom_resamples - done]).items():
                custom_draws.setdefault(name, []).append(values)
        done += size
    ones = np.ones((1, n))
    point = {name: float(v[0]) for name, v in stats.evaluate(ones).items()}
    if custom_eval is not None:
        point.update({name: float(v[0]) for name, v in custom_eval(ones).items()})
    draws.update(custom_draws)
    tail = 100.0 * (1.0 - confidence) / 2.0
    rows = []
    for name, value in point.items():
        if math.isnan(value):
            continue
        values = np.concatenate(draws.get(name) or [np.array([value])])
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [tail, 100.0 - tail]) if values.size else (np.nan, np.nan)
        rows.append({"metric": name, "value": value, "ci_low": float(low), "ci_high": float(high), "n": n})
    return pd.DataFrame(rows, columns=["metric", "value", "ci_low", "ci_high", "n"])


def same_seeds(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return set(a["seed"].astype(int)) == set(b["seed"].astype(int))


def significance(
    baseline: pd.DataFrame,
    other: pd.DataFrame,
    env_achievements: Sequence[str],
    k: int = 3,
    permutations: int = 9999,
    seed: int = 0,
    paired: Optional[bool] = None,
    custom: Sequence[tuple[str, CustomMetric]] = (),
    custom_resamples: int = 500,
    actions: Optional[Sequence[str]] = None,
) -> pd.DataFrame:
    """Two-sided permutation test of `value(other) - value(baseline)` for every metric.

    Paired by seed (None = when both runs played the same seeds): each permutation swaps, per seed, which run
    an episode counts for (sign-flip test). Unpaired: episodes are shuffled between the two runs. The
    statistic is the metric itself, so aggregate metrics (Crafter score, distinct achievements) are tested as
    they are reported. p = (1 + #{|null diff| >= |observed diff|}) / (1 + permutations) (never 0).
    Columns: metric, baseline_value, value, diff, p, test.
    """
    if len(baseline) == 0 or len(other) == 0:
        raise UserError("significance test needs episodes on both sides")
    if paired is None:
        paired = same_seeds(baseline, other)
    if paired:
        if not same_seeds(baseline, other):
            raise UserError("a paired test needs the same seeds on both sides")
        baseline = baseline.sort_values("seed")
        other = other.sort_values("seed")
    pooled = pd.concat([baseline, other], ignore_index=True)
    n1, n2 = len(baseline), len(other)
    n = n1 + n2
    arrays = EpisodeArrays.from_frame(pooled, env_achievements, actions)
    stats = _stats(arrays, k)
    custom_eval = _custom_stats(pooled, custom) if custom else None

    def group_weights(first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return first, 1.0 - first

    def evaluate(w_base: np.ndarray, w_other: np.ndarray, with_custom: int) -> dict[str, np.ndarray]:
        a, b = stats.evaluate(w_base), stats.evaluate(w_other)
        diffs = {name: b[name] - a[name] for name in stats}
        if custom_eval is not None and with_custom > 0:
            ca, cb = custom_eval(w_base[:with_custom]), custom_eval(w_other[:with_custom])
            diffs.update({name: cb[name] - ca[name] for name in ca if name in cb})
        return diffs

    observed_base = np.concatenate([np.ones(n1), np.zeros(n2)])[None, :]
    observed = evaluate(*group_weights(observed_base), with_custom=1)
    base_values = stats.evaluate(observed_base)
    other_values = stats.evaluate(1.0 - observed_base)
    if custom_eval is not None:
        cb, co = custom_eval(observed_base), custom_eval(1.0 - observed_base)
        base_values.update(cb)
        other_values.update(co)

    rng = np.random.default_rng(seed)
    exceed = {name: 0 for name in observed}
    count = {name: 0 for name in observed}
    done = 0
    for size in _chunks(permutations, n):
        if paired:
            swap = rng.random((size, n1)) < 0.5
            first = np.concatenate([~swap, swap], axis=1).astype(float)
        else:
            order = rng.permuted(np.tile(np.arange(n), (size, 1)), axis=1)
            first = np.zeros((size, n))
            np.put_along_axis(first, order[:, :n1], 1.0, axis=1)
        null = evaluate(*group_weights(first), with_custom=max(0, custom_resamples - done))
        for name, values in null.items():
            obs = observed[name][0]
            if not np.isfinite(obs):
                continue
            finite = values[np.isfinite(values)]
            # a tolerance so float noise on equal statistics counts as "as extreme" (exact ties)
            exceed[name] += int(np.sum(np.abs(finite) >= abs(obs) - 1e-9 * max(1.0, abs(obs))))
            count[name] += finite.size
        done += size
    test = "paired permutation (sign-flip by seed)" if paired else "permutation (episodes shuffled)"
    rows = []
    for name, diff in observed.items():
        obs = float(diff[0])
        if not np.isfinite(obs):
            continue
        p = (1 + exceed[name]) / (1 + count[name]) if count[name] else float("nan")
        rows.append(
            {
                "metric": name,
                "baseline_value": float(base_values[name][0]),
                "value": float(other_values[name][0]),
                "diff": obs,
                "p": p,
                "test": test,
            }
        )
    return pd.DataFrame(rows, columns=["metric", "baseline_value", "value", "diff", "p", "test"])


def adjust_pvalues(p: Sequence[float], method: str = "bh") -> np.ndarray:
    """Multiple-comparison adjustment: `bh` (Benjamini-Hochberg, scipy), `holm`, or `none`."""
    pv = np.asarray(p, dtype=float)
    out = np.full(pv.shape, np.nan)
    ok = np.isfinite(pv)
    if not ok.any():
        return out
    if method == "none":
        out[ok] = pv[ok]
    elif method == "bh":
        from scipy.stats import false_discovery_control

        out[ok] = false_discovery_control(pv[ok], method="bh")
    elif method == "holm":
        values = pv[ok]
        order = np.argsort(values)
        m = len(values)
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * values[order]))
        result = np.empty(m)
        result[order] = adjusted
        out[ok] = result
    else:
        raise UserError(f"unknown p-value correction {method!r} (bh, holm, none)")
    return out


__all__ = [
    "METRICS",
    "FAMILIES",
    "HEADLINE",
    "crafter_score",
    "compute",
    "summary",
    "per_achievement_rates",
    "action_distribution",
    "top_actions",
    "metric_names",
    "declared",
    "only_declared",
    "load_custom_metrics",
    "termination_rates",
    "bootstrap",
    "significance",
    "same_seeds",
    "adjust_pvalues",
]
