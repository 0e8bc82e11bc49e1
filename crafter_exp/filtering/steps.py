"""Step-level selection: which turns of a selected episode become training examples, as SQL over `steps`.

Modes (`filter.step_mode`):
- `all`: every turn;
- `achievement`: turns that unlocked an achievement (not counting `exclude_achievements`);
- `window`: those turns and the `window` turns before each (the lead-up that earned it);
- `reward`: turns whose reward >= `min_step_reward` (the default 0.0 drops turns that lost health in Crafter).
`drop_unparsed` also drops turns whose reply failed to parse (played as the fallback action);
`step_min_prediction_f1` keeps only turns whose world-model prediction scored at least that F1;
`exclude_actions` drops turns whose target action is one of those listed.

Steps are read a chunk of episodes at a time (`chunk_sql`): a few consecutive seeds of one run, so that DuckDB's
min/max statistics skip every row group outside the chunk and memory stays bounded however big the store is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from crafter_exp.errors import UserError
from crafter_exp.parsing import drop_predictions_sql, reasoning_sql, strip_reasoning_sql, strip_sql

if TYPE_CHECKING:
    from crafter_exp.config import FilterConfig

ACHIEVEMENT_TURN = "coalesce(len(unlocked) - len(list_intersect(unlocked, $exclude::VARCHAR[])), 0) > 0"
# keep_reasoning=false / keep_predictions=false strip replies with the policy's own rules (crafter_exp.parsing)
STRIPPED_REPLY = strip_reasoning_sql("reply")
REASONING = f"coalesce(nullif({strip_sql('reasoning')}, ''), nullif({reasoning_sql('reply')}, ''))"
"""SQL: a turn's reasoning: the one stored (an API's reasoning field), else the reply's <think> blocks."""

STEP_COLUMNS = (
    "run_id",
    "seed",
    "turn",
    "observation",
    "reply",
    "reasoning",
    "actions",
    "parse_ok",
    "reward",
    "unlocked",
)


def keep_sql(fcfg: FilterConfig) -> str:
    """The per-turn keep predicate (may use the window `ep` = the episode's turns in order)."""
    mode = fcfg.step_mode
    if mode == "all":
        base = "TRUE"
    elif mode == "achievement":
        base = "ach_turn"
    elif mode == "window":
        base = (
            "coalesce(bool_or(ach_turn) OVER (PARTITION BY run_id, seed ORDER BY turn "
            "ROWS BETWEEN CURRENT ROW AND $window FOLLOWING), FALSE)"
        )
    elif mode == "reward":
        base = "coalesce(reward, 0) >= $min_step_reward"
    else:
        raise UserError(f"unknown filter.step_mode {mode!r}")
    if fcfg.step_min_prediction_f1 is not None:
        base = f"({base}) AND coalesce(prediction_f1 >= $step_min_prediction_f1, FALSE)"  # unscored: dropped
    if fcfg.target == "expert":
        base = f"({base}) AND expert_action IS NOT NULL"  # no label, no example
    if fcfg.exclude_actions:
        target = "[expert_action]" if fcfg.target == "expert" else "coalesce(actions, [])"
        base = f"({base}) AND NOT list_has_any({target}, $exclude_actions::VARCHAR[])"
    return f"({base}) AND (parse_ok IS NOT FALSE)" if fcfg.drop_unparsed else base


def step_params(fcfg: FilterConfig) -> dict[str, Any]:
    params = {
        "window": int(fcfg.window),
        "min_step_reward": float(fcfg.min_step_reward),
        "exclude": list(fcfg.exclude_achievements),
    }
    if fcfg.exclude_actions:
        params["exclude_actions"] = [str(a) for a in fcfg.exclude_actions]
    if fcfg.step_min_prediction_f1 is not None:
        params["step_min_prediction_f1"] = float(fcfg.step_min_prediction_f1)
    return params


def chunk_sql(fcfg: FilterConfig, columns: Sequence[str] = STEP_COLUMNS, chunk_columns: Sequence[str] = ()) -> str:
    """CTEs `s` (the chunk's steps), `w` (+ ach_turn, reply_out, pos, keep) for the registered table `chunk`
    (run_id, seed, ep_order, *chunk_columns), bound by $run_id, $seed_lo, $seed_hi."""
    if fcfg.step_min_prediction_f1 is not None and "prediction_f1" not in columns:
        columns = (*columns, "prediction_f1")  # read by keep_sql
    if fcfg.target == "expert" and "expert_action" not in columns:
        columns = (*columns, "expert_action")  # read by keep_sql and the export's target
    if fcfg.exclude_actions and fcfg.target != "expert" and "actions" not in columns:
        columns = (*columns, "actions")  # read by keep_sql
    cols = ", ".join(f"s.{c}" for c in columns)
    extra = "".join(f", k.{c}" for c in chunk_columns)
    reply_out = "reply" if fcfg.keep_reasoning else STRIPPED_REPLY
    if not fcfg.keep_predictions:
        reply_out = drop_predictions_sql(reply_out)
    return f"""
WITH s AS (
  SELECT {cols}, k.ep_order{extra}
  FROM steps s JOIN chunk k ON s.run_id = k.run_id AND s.seed = k.seed
  WHERE s.run_id = $run_id AND s.seed BETWEEN $seed_lo AND $seed_hi
), f AS (
  SELECT *, {ACHIEVEMENT_TURN} AS ach_turn{", " + reply_out + " AS reply_out" if "reply" in columns else ""}
  FROM s
), w AS (
  SELECT *, (row_number() OVER (PARTITION BY run_id, seed ORDER BY turn) - 1) AS pos, {keep_sql(fcfg)} AS keep
  FROM f
)"""


def chunks(episodes: pd.DataFrame, chunk_steps: int) -> Iterator[pd.DataFrame]:
    """Consecutive episodes of one run (in `episodes`' order: run, then seed) holding about `chunk_steps` steps."""
    if episodes.empty:
        return
    runs = episodes["run_id"].to_numpy()
    turns = episodes["turns"].fillna(0).to_numpy()
    start, total = 0, 0
    for i in range(len(episodes)):
        if i > start and (runs[i] != runs[start] or total + turns[i] > chunk_steps):
            yield episodes.iloc[start:i]
            start, total = i, 0
        total += int(turns[i])
    yield episodes.iloc[start:]


def as_arrow(df: pd.DataFrame) -> pa.Table:
    """A small frame as Arrow for `con.register`: DuckDB scans Arrow without the GIL; a pandas frame with string
    columns costs ~30 ms a scan, which adds up over many chunks."""
    return pa.Table.from_pandas(df, preserve_index=False)


def chunk_steps(chunk: pd.DataFrame) -> int:
    """Steps in a chunk (the unit of work a read session is charged)."""
    return int(chunk["turns"].fillna(0).sum())


def chunk_params(chunk: pd.DataFrame) -> dict[str, Any]:
    return {
        "run_id": str(chunk["run_id"].iloc[0]),
        "seed_lo": int(chunk["seed"].min()),
        "seed_hi": int(chunk["seed"].max()),
    }
