"""Filter config -> episode-level criteria, each a parameterised SQL predicate over `episodes e`.

Every value reaches DuckDB as a named parameter (`$name`), never pasted into the SQL text; the SQL text itself is
built only from this module's constants. Each criterion is kept separate so that the stats can count how many
episodes pass each one alone as well as all together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from crafter_exp.errors import UserError
from crafter_exp.filtering.quality import check_weights, counted_achievements_sql, quality_params, quality_sql

if TYPE_CHECKING:
    from crafter_exp.config import FilterConfig

STEP_MODES = ("all", "achievement", "window", "reward")
SORT_KEYS = ("quality", "reward", "achievements", "efficiency", "seed")
FORMATS = ("openai_chat", "openai_tools", "vertex_gemini", "single_turn", "parquet")
SYSTEM_PROMPT_MODES = ("replace", "append")
TARGETS = ("reply", "expert")

COUNTED = counted_achievements_sql("e.achievements")
QUALITY = quality_sql("e")

# ORDER BY for `limit`: best first, ties broken by run and seed so the choice is deterministic
SORT_SQL = {
    "quality": f"{QUALITY} DESC",
    "reward": "e.total_reward DESC NULLS LAST",
    "achievements": f"{COUNTED} DESC",
    "efficiency": "coalesce(e.total_reward, 0) / greatest(coalesce(e.turns, 0), 1) DESC",
    "seed": "e.seed ASC",
}


@dataclass(frozen=True)
class Criterion:
    """One episode-level condition: a name for reports, the SQL predicate, the parameters it binds."""

    name: str
    sql: str
    params: dict[str, Any]


def _one_of(value: str, allowed: Sequence[str], key: str) -> None:
    if value not in allowed:
        raise UserError(f"unknown filter.{key} {value!r} (known: {', '.join(allowed)})")


def check_filter_config(fcfg: FilterConfig, achievements: Optional[Sequence[str]] = None) -> None:
    """Reject bad or contradictory settings with one clear line (ValueError) before any work starts.

    `achievements`: the names the source runs' environment reports; None skips the name check.
    """
    _one_of(fcfg.step_mode, STEP_MODES, "step_mode")
    _one_of(fcfg.sort_by, SORT_KEYS, "sort_by")
    _one_of(fcfg.format, FORMATS, "format")
    _one_of(fcfg.system_prompt_mode, SYSTEM_PROMPT_MODES, "system_prompt_mode")
    check_weights(fcfg.quality_weights)
    for key in ("min_achievements", "max_achievements", "max_turns", "max_cost", "max_tokens"):
        value = getattr(fcfg, key)
        if value is not None and value < 0:
            raise UserError(f"filter.{key} must be >= 0, got {value}")
    for key in ("limit", "max_examples", "chunk_steps", "cost_epochs", "threads"):
        value = getattr(fcfg, key)
        if value is not None and value < 1:
            raise UserError(f"filter.{key} must be >= 1, got {value}")
    for key in ("min_prediction_f1", "step_min_prediction_f1"):
        value = getattr(fcfg, key)
        if value is not None and not 0.0 <= value <= 1.0:
            raise UserError(f"filter.{key} must be in [0, 1], got {value}")
    if fcfg.window < 0:
        raise UserError(f"filter.window must be >= 0, got {fcfg.window}")
    if fcfg.val_fraction is not None and not 0.0 <= fcfg.val_fraction < 1.0:
        raise UserError(f"filter.val_fraction must be in [0, 1), got {fcfg.val_fraction}")
    _one_of(fcfg.target, TARGETS, "target")
    if fcfg.target == "expert" and (fcfg.multi_turn or fcfg.format == "openai_tools"):
        # a conversation's replies are context and targets at once; tool calls carry the played actions
        raise UserError(
            f"filter.target=expert relabels one turn at a time in a text reply: use filter.multi_turn=false and a "
            f"format other than openai_tools (got format={fcfg.format}, multi_turn={fcfg.multi_turn})"
        )
    if fcfg.multi_turn and fcfg.format == "single_turn":
        raise UserError(f"filter.format={fcfg.format} exports one example per turn; set filter.multi_turn=false")
    # contradictory bounds: no episode could ever pass
    for low, high in (("min_achievements", "max_achievements"), ("min_reward", "max_reward")):
        lo, hi = getattr(fcfg, low), getattr(fcfg, high)
        if lo is not None and hi is not None and lo > hi:
            raise UserError(f"contradictory filter: {low}={lo} > {high}={hi}")
    required, excluded = list(fcfg.achievement_types), list(fcfg.exclude_achievements)
    if fcfg.min_achievement_types is not None:
        if not required:
            raise UserError("filter.min_achievement_types needs filter.achievement_types")
        if not 1 <= fcfg.min_achievement_types <= len(set(required)):
            raise UserError(
                f"contradictory filter: min_achievement_types={fcfg.min_achievement_types} but "
                f"achievement_types has {len(set(required))} name(s)"
            )
    both = sorted(set(required) & set(excluded))
    if both:
        raise UserError(f"contradictory filter: {both} both required (achievement_types) and excluded")
    if achievements is not None:
        known = set(achievements)
        unknown = sorted({*required, *excluded} - known)
        if unknown:
            raise UserError(f"unknown achievement(s) {unknown} (this env's: {', '.join(sorted(known))})")
        countable = len(known - set(excluded))
        if fcfg.min_achievements is not None and fcfg.min_achievements > countable:
            raise UserError(
                f"contradictory filter: min_achievements={fcfg.min_achievements} but only {countable} "
                "achievements can be counted"
            )


def episode_criteria(fcfg: FilterConfig) -> list[Criterion]:
    """The configured episode-level criteria (source runs and `limit` are applied by the selection itself)."""
    out: list[Criterion] = []

    def add(name: str, sql: str, **params: Any) -> None:
        out.append(Criterion(name, sql, params))

    if fcfg.min_achievements is not None:
        add("min_achievements", f"{COUNTED} >= $min_achievements", min_achievements=int(fcfg.min_achievements))
    if fcfg.max_achievements is not None:
        add("max_achievements", f"{COUNTED} <= $max_achievements", max_achievements=int(fcfg.max_achievements))
    if fcfg.min_reward is not None:
        add("min_reward", "e.total_reward >= $min_reward", min_reward=float(fcfg.min_reward))
    if fcfg.max_reward is not None:
        add("max_reward", "e.total_reward <= $max_reward", max_reward=float(fcfg.max_reward))
    if fcfg.max_turns is not None:
        add("max_turns", "e.turns <= $max_turns", max_turns=int(fcfg.max_turns))
    if fcfg.achievement_types:
        required = sorted(set(fcfg.achievement_types))
        if fcfg.min_achievement_types is None:
            add(
                "achievement_types",
                "list_has_all(e.achievements, $achievement_types::VARCHAR[])",
                achievement_types=required,
            )
        else:
            add(
                "achievement_types",
                "len(list_intersect(e.achievements, $achievement_types::VARCHAR[])) >= $min_achievement_types",
                achievement_types=required,
                min_achievement_types=int(fcfg.min_achievement_types),
            )
    if fcfg.success_only:
        add("success_only", "e.success IS TRUE")
    if fcfg.task_types:
        add("task_types", "list_contains($task_types::VARCHAR[], e.task_type)", task_types=list(fcfg.task_types))
    if fcfg.models:
        add("models", "list_contains($models::VARCHAR[], e.model)", models=list(fcfg.models))
    if fcfg.providers:
        add("providers", "list_contains($providers::VARCHAR[], e.provider)", providers=list(fcfg.providers))
    if fcfg.max_cost is not None:
        # an unknown cost (a model without a price) counts as 0: the filter cannot know it
        add("max_cost", "coalesce(e.cost, 0) <= $max_cost", max_cost=float(fcfg.max_cost))
    if fcfg.max_tokens is not None:
        add(
            "max_tokens",
            "coalesce(e.prompt_tokens, 0) + coalesce(e.completion_tokens, 0) <= $max_tokens",
            max_tokens=int(fcfg.max_tokens),
        )
    if not fcfg.include_api_errors:
        add("no_api_errors", "e.termination IS DISTINCT FROM 'api_error'")
    if fcfg.min_quality is not None:
        add("min_quality", f"{QUALITY} >= $min_quality", min_quality=float(fcfg.min_quality))
    if fcfg.min_prediction_f1 is not None:
        # NULL (no scored prediction, or an env that scores none) fails, as a comparison with NULL does
        add(
            "min_prediction_f1",
            "e.prediction_f1 >= $min_prediction_f1",
            min_prediction_f1=float(fcfg.min_prediction_f1),
        )
    return out


def common_params(fcfg: FilterConfig) -> dict[str, Any]:
    """Parameters every query may use: the excluded achievements and the quality weights."""
    return {"exclude": list(fcfg.exclude_achievements), **quality_params(fcfg.quality_weights)}


def combined(criteria: Sequence[Criterion]) -> tuple[str, dict[str, Any]]:
    """All criteria ANDed: (predicate, parameters)."""
    params: dict[str, Any] = {}
    for c in criteria:
        params.update(c.params)
    return (" AND ".join(f"({c.sql})" for c in criteria) or "TRUE"), params


def used_params(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    """Only the parameters a statement names (DuckDB rejects unused named parameters)."""
    import re

    names = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", sql))
    return {k: v for k, v in params.items() if k in names}
