"""The trace store's schema, written once: every table, column, type and meaning.

DDL, insert column order and the README's schema table are all generated from `TABLES`. JSON columns hold
plain JSON text; list columns are DuckDB `VARCHAR[]`, so the filter stage's SQL reads achievements and actions
without reparsing any text (`list_has_all(achievements, [...])`, `len(unlocked) > 0`, ...).
"""

from __future__ import annotations

Column = tuple[str, str, str]  # (name, DuckDB type, meaning)

RUNS: list[Column] = [
    ("run_id", "VARCHAR PRIMARY KEY", "Trace run id (rerunning the same id plays only missing seeds)"),
    ("name", "VARCHAR", "Experiment (pipeline) name the run belongs to"),
    ("stage", "VARCHAR", "Stage that wrote it: rollout, eval or rl (one run per RL iteration and group member)"),
    ("env", "VARCHAR", "Environment id (crafter, alfworld)"),
    ("policy", "VARCHAR", "Policy kind (scripted, random, openai, hf_local)"),
    ("model", "VARCHAR", "Model label"),
    ("provider", "VARCHAR", "Provider label"),
    ("seed_start", "BIGINT", "First seed; episode i plays seed_start + i"),
    ("episodes", "BIGINT", "Episodes requested"),
    ("config", "JSON", "Resolved config of the run, secrets removed"),
    ("config_hash", "VARCHAR", "Hash of the config parts that change what is played (guards resume)"),
    ("code_version", "VARCHAR", "crafter-exp version and git commit"),
    ("mlflow_run_id", "VARCHAR", "MLflow run that produced it"),
    ("created_at", "TIMESTAMP", "When the run was first registered"),
]

EPISODES: list[Column] = [
    ("run_id", "VARCHAR NOT NULL", "Trace run id"),
    ("seed", "BIGINT NOT NULL", "World seed of the episode"),
    ("env", "VARCHAR", "Environment id"),
    ("policy", "VARCHAR", "Policy kind"),
    ("model", "VARCHAR", "Model label"),
    ("provider", "VARCHAR", "Provider label"),
    ("task_type", "VARCHAR", "Task type (ALFWorld), else NULL"),
    ("steps", "INTEGER", "Environment steps taken"),
    ("turns", "INTEGER", "Policy decisions (one reply may execute several steps)"),
    ("total_reward", "DOUBLE", "Sum of rewards"),
    ("achievements", "VARCHAR[]", "Distinct achievements unlocked, in unlock order"),
    ("num_achievements", "INTEGER", "len(achievements)"),
    ("success", "BOOLEAN", "Task solved (ALFWorld: won); NULL where the env has no success"),
    ("termination", "VARCHAR", "Why it ended: done, death, success, max_steps, length, api_error"),
    ("invalid_actions", "INTEGER", "Steps whose action was not admissible"),
    (
        "parse_failures",
        "INTEGER",
        "Turns whose reply was not 1..max_actions_per_turn valid actions (empty, "
        "reasoning only, cut, unknown action, too many, bad tool arguments); its valid actions, else the fallback, "
        "were played",
    ),
    ("repeated_actions", "INTEGER", "Turns repeating the previous turn's actions"),
    ("expert_turns", "INTEGER", "Turns where the env's expert was asked (steps.expert_action filled)"),
    ("expert_agreed", "INTEGER", "Of those, turns whose (first) action was the expert's"),
    ("action_counts", "JSON", "{action: times played}"),
    ("prompt_tokens", "BIGINT", "Sum over LLM calls"),
    ("completion_tokens", "BIGINT", "Sum over LLM calls"),
    ("reasoning_tokens", "BIGINT", "Sum over LLM calls"),
    ("llm_calls", "INTEGER", "LLM requests made"),
    ("cost", "DOUBLE", "USD; NULL when a call's model has no price"),
    ("wall_time_s", "DOUBLE", "Seconds to play the episode"),
    ("node", "VARCHAR", "Cluster node that played it (Ray node id); NULL when played in the driver's process"),
    ("created_at", "TIMESTAMP", "When it was stored"),
    ("predictions", "INTEGER", "Turns whose reply held a `<prediction>` (world_model template)"),
    (
        "predictions_scored",
        "INTEGER",
        "Of those, turns scored against the env's state change; NULL where the env scores none (ALFWorld)",
    ),
    ("predictions_exact", "INTEGER", "Scored turns whose predicted changes were exactly the actual ones"),
    ("prediction_f1", "DOUBLE", "Mean per-turn prediction F1 (0-1) over the scored turns; NULL when none"),
    (
        "prediction_f1_changed",
        "DOUBLE",
        "The same over the scored turns where something changed (a `no change` guess scores 0 here); NULL when none",
    ),
]

STEPS: list[Column] = [
    ("run_id", "VARCHAR NOT NULL", "Trace run id"),
    ("seed", "BIGINT NOT NULL", "Episode seed"),
    ("turn", "INTEGER NOT NULL", "Turn index in the episode, from 0"),
    ("step", "INTEGER", "Environment step index at the start of the turn"),
    ("observation", "VARCHAR", "Observation text the policy saw"),
    ("reply", "VARCHAR", "Raw reply (verbatim)"),
    ("reasoning", "VARCHAR", "Reasoning text, if any"),
    ("tool_calls", "JSON", "Tool calls of the reply, if any"),
    ("actions", "VARCHAR[]", "Actions executed (parsed; the fallback when the parse failed)"),
    ("parse_ok", "BOOLEAN", "The reply held 1..max_actions_per_turn actions, all valid"),
    ("valid", "BOOLEAN", "Every executed action was admissible"),
    ("reward", "DOUBLE", "Reward of the turn's steps"),
    ("unlocked", "VARCHAR[]", "Achievements first unlocked during this turn"),
    ("info", "JSON", "Environment facts after the turn (inventory, vitals, position, ...)"),
    ("done", "BOOLEAN", "The episode ended at this turn"),
    ("prediction", "VARCHAR", "Text of the reply's `<prediction>`, if any"),
    (
        "predicted_changes",
        "JSON",
        "The prediction read as {quantity: signed amount} ({} = no change); NULL when "
        "not scored (no scorable form, unparsed action, or an env that scores none)",
    ),
    (
        "actual_changes",
        "JSON",
        "What the env showed change over the turn, {quantity: signed amount}; NULL where the env scores no predictions",
    ),
    ("prediction_f1", "DOUBLE", "F1 of predicted_changes vs actual_changes (0-1; 1 = exactly right)"),
    ("reply_problem", "VARCHAR", "Why the reply was not played as written (one line; NULL when it was)"),
    (
        "expert_action",
        "VARCHAR",
        "The environment expert's action for the state the turn started in, whatever was played (scripted teachers; "
        "DAgger rounds record it as the label); NULL when not asked for",
    ),
]

LLM_CALLS: list[Column] = [
    ("run_id", "VARCHAR NOT NULL", "Trace run id"),
    ("seed", "BIGINT NOT NULL", "Episode seed"),
    ("turn", "INTEGER NOT NULL", "Turn index"),
    ("call_index", "INTEGER NOT NULL", "Index of the call within the turn"),
    ("model", "VARCHAR", "Model name sent"),
    ("messages", "JSON", "Messages sent"),
    ("response", "JSON", "Raw response body"),
    ("reasoning", "VARCHAR", "Reasoning text (reasoning field or <think>)"),
    ("tool_calls", "JSON", "Tool calls returned"),
    ("prompt_tokens", "INTEGER", "Usage: prompt tokens"),
    ("completion_tokens", "INTEGER", "Usage: completion tokens"),
    ("reasoning_tokens", "INTEGER", "Usage: reasoning tokens"),
    ("latency_s", "DOUBLE", "Seconds from request to response, retries included"),
    ("retries", "INTEGER", "Retries made"),
    ("error", "VARCHAR", "Error, when the call failed"),
    ("cost", "DOUBLE", "USD; NULL for a model without a price"),
]

TABLES: dict[str, list[Column]] = {
    "runs": RUNS,
    "episodes": EPISODES,
    "steps": STEPS,
    "llm_calls": LLM_CALLS,
}

# Only episodes carries a key: steps and llm_calls are written in the same transaction as their episode, so
# the episode key alone makes "(run, seed) exactly once, never partial" hold, and no index slows bulk appends.
TABLE_CONSTRAINTS = {"episodes": ", PRIMARY KEY (run_id, seed)"}


def column_names(table: str) -> list[str]:
    return [c[0] for c in TABLES[table]]


def ddl() -> list[str]:
    """CREATE TABLE statements for every table, then ADD COLUMN IF NOT EXISTS for each plain column.

    The second part upgrades a store written by an older version in place (a column added since is NULL for
    the episodes stored before it); inserts name their columns, so the physical column order does not matter.
    """
    out = []
    for table, cols in TABLES.items():
        body = ",\n  ".join(f"{name} {typ}" for name, typ, _ in cols)
        out.append(f"CREATE TABLE IF NOT EXISTS {table} (\n  {body}{TABLE_CONSTRAINTS.get(table, '')}\n)")
    for table, cols in TABLES.items():
        out.extend(
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {typ}"
            for name, typ, _ in cols
            if "NOT NULL" not in typ and "PRIMARY KEY" not in typ
        )
    return out


def markdown() -> str:
    """The schema as Markdown tables (pasted into README)."""
    parts = []
    for table, cols in TABLES.items():
        parts.append(f"**{table}**\n\n| column | type | meaning |\n|---|---|---|")
        parts.extend(f"| {n} | {t.replace(' PRIMARY KEY', '').replace(' NOT NULL', '')} | {m} |" for n, t, m in cols)
        parts.append("")
    return "\n".join(parts)
