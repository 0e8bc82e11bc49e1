"""Trace selection for the filter stage: criteria compiled to parameterised SQL, the quality score, step-level
selection, and the stats table. Reads the trace store only; the export lives in `crafter_exp.export`."""

from crafter_exp.filtering.criteria import (
    FORMATS,
    SORT_KEYS,
    STEP_MODES,
    Criterion,
    check_filter_config,
    episode_criteria,
)
from crafter_exp.filtering.quality import quality_score
from crafter_exp.filtering.select import SourceRun, count_steps, resolve_runs, select_episodes
from crafter_exp.filtering.stats import FilterStats, compute_stats, format_stats

__all__ = [
    "FORMATS",
    "SORT_KEYS",
    "STEP_MODES",
    "Criterion",
    "check_filter_config",
    "episode_criteria",
    "quality_score",
    "SourceRun",
    "count_steps",
    "resolve_runs",
    "select_episodes",
    "FilterStats",
    "compute_stats",
    "format_stats",
]
