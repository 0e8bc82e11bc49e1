"""The episode quality score: one number per episode, usable as a filter criterion (`min_quality`) and a sort key.

    quality = w_achievements * A
            + w_success      * S
            + w_efficiency   * R / T
            - w_invalid      * (I + P) / T
            - w_repeated     * D / T

where, for one episode,
    A = distinct achievements unlocked, not counting `exclude_achievements`,
    S = 1 when the episode succeeded (ALFWorld: won), else 0 (NULL success counts 0),
    R = total reward,  T = max(turns, 1),
    I = actions that were not admissible,  P = replies that failed to parse (played as the fallback),
    D = turns that repeated the previous turn's actions.

Default weights (FilterConfig.quality_weights): achievements 1, success 5, efficiency 10, invalid 2, repeated 0.5.
So achievements dominate; efficiency (reward per turn, ~0.03 for a good 300-turn Crafter episode, ~0.1 for an
ALFWorld task solved in 10 turns) separates episodes with the same achievements, worth up to about one
achievement; an episode whose every reply failed to parse loses 2; one that always repeats itself loses 0.5.
`quality_score` below is the same formula in Python (tests check the SQL against it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

from crafter_exp.errors import UserError

WEIGHT_KEYS = ("achievements", "success", "efficiency", "invalid", "repeated")


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    unknown = sorted(set(weights) - set(WEIGHT_KEYS))
    if unknown:
        raise UserError(f"unknown filter.quality_weights keys {unknown} (known: {', '.join(WEIGHT_KEYS)})")
    return {k: float(weights.get(k, 0.0)) for k in WEIGHT_KEYS}


def counted_achievements_sql(column: str = "e.achievements", exclude_param: str = "exclude") -> str:
    """Distinct achievements of an episode minus the excluded ones (a parameterised SQL expression)."""
    return f"(coalesce(len({column}), 0) - coalesce(len(list_intersect({column}, ${exclude_param}::VARCHAR[])), 0))"


def quality_sql(alias: str = "e") -> str:
    """The score as a SQL expression over `episodes` (alias `alias`): weights are the named parameters `$q_<term>`
    (values from `quality_params`), the excluded achievements `$exclude`."""
    t = f"greatest(coalesce({alias}.turns, 0), 1)"
    expr = (
        f"($q_achievements * {counted_achievements_sql(f'{alias}.achievements')}"
        f" + $q_success * coalesce({alias}.success::INTEGER, 0)"
        f" + $q_efficiency * coalesce({alias}.total_reward, 0) / {t}"
        f" - $q_invalid * (coalesce({alias}.invalid_actions, 0) + coalesce({alias}.parse_failures, 0)) / {t}"
        f" - $q_repeated * coalesce({alias}.repeated_actions, 0) / {t})"
    )
    return expr


def quality_params(weights: Mapping[str, float]) -> dict[str, float]:
    return {f"q_{k}": v for k, v in check_weights(weights).items()}


def quality_score(episode: Mapping[str, Any], weights: Mapping[str, float], exclude: Sequence[str] = ()) -> float:
    """The formula in Python, for one episode row (a dict of `episodes` columns)."""
    w = check_weights(weights)
    turns = max(int(episode.get("turns") or 0), 1)
    achieved = [a for a in (episode.get("achievements") or []) if a not in set(exclude)]
    success: Optional[bool] = episode.get("success")
    return (
        w["achievements"] * len(achieved)
        + w["success"] * (1 if success else 0)
        + w["efficiency"] * float(episode.get("total_reward") or 0.0) / turns
        - w["invalid"] * ((episode.get("invalid_actions") or 0) + (episode.get("parse_failures") or 0)) / turns
        - w["repeated"] * (episode.get("repeated_actions") or 0) / turns
    )
