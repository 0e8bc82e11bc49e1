"""The DuckDB trace store: one file per project, one writer at a time, connections held only briefly.

DuckDB lets one process open a file for writing and then locks out every other process, readers included. So
every operation opens the file, does its work (one transaction for a write) and closes it: a notebook or the
filter stage can read while a long rollout is appending between batches. Opening retries for up to LOCK_WAIT_S
when another process holds the lock (saying so after a second), then fails with one line naming the holder.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import duckdb
import pandas as pd
import pyarrow as pa

from crafter_exp.errors import StageFailed, UserError
from crafter_exp.files import write_text_atomic
from crafter_exp.store import schema

LOCK_WAIT_S = 60.0
log = logging.getLogger(__name__)


def _lock_holder(message: str) -> str:
    """'process 1234 (/usr/bin/python3)' from DuckDB's lock error, or 'another process'."""
    found = re.search(r"lock is held in (.+?) \(PID (\d+)\)", message)
    return f"process {found.group(2)} ({found.group(1)})" if found else "another process"


@dataclass
class EpisodeRecord:
    """One finished episode, ready to store: column dicts for `episodes`, `steps` and `llm_calls`."""

    episode: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)


def _json(value: Any) -> Optional[str]:
    return None if value is None else json.dumps(value, default=str)


def _arrow_table(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows -> an Arrow table in the schema's column order (JSON columns serialised to text)."""
    cols: dict[str, list[Any]] = {}
    for name, typ, _ in schema.TABLES[table]:
        values = [row.get(name) for row in rows]
        if typ.startswith("JSON"):
            values = [v if isinstance(v, str) or v is None else _json(v) for v in values]
        cols[name] = values
    return pa.table(cols)


class TraceStore:
    """Reads and writes the trace database at `path`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; waits up to LOCK_WAIT_S for another process's lock."""
        if read_only and not self.path.exists():
            raise UserError(f"trace database not found: {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        deadline = start + LOCK_WAIT_S
        waiting = False
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as exc:  # "Could not set lock on file": another process has it
                if "lock" not in str(exc).lower():
                    raise
                holder = _lock_holder(str(exc))
                if time.monotonic() > deadline:
                    raise StageFailed(
                        f"trace store {self.path} stayed locked by {holder} for {LOCK_WAIT_S:g} s: DuckDB lets one "
                        "process at a time open it for writing (a reader locks writers out too); close the program "
                        "holding it (a notebook, a DuckDB shell) or wait for it, then rerun"
                    ) from None
                if not waiting and time.monotonic() - start > 1.0:  # a writer's short transaction: no news
                    waiting = True
                    log.warning("trace store %s is locked by %s; waiting up to %g s", self.path, holder, LOCK_WAIT_S)
                time.sleep(0.2)
        try:
            yield con
        except (duckdb.InterruptException, RuntimeError) as exc:
            # DuckDB turns a Ctrl-C that lands during a query into its own error (the transaction is rolled back):
            # it is the user's interrupt, so it goes on as one (exit 130, "rerun to resume"), not as a crash
            if isinstance(exc, duckdb.InterruptException) or str(exc) == "Query interrupted":
                raise KeyboardInterrupt from exc
            raise
        finally:
            con.close()

    def init(self) -> None:
        """Create the tables if missing; a store written before a column was added gains it (schema.ddl)."""
        with self.connect() as con:
            for stmt in schema.ddl():
                con.execute(stmt)

    # ------------------------------------------------------------------------------------------------ runs

    def get_run(self, run_id: str) -> Optional[dict[str, Any]]:
        if not self.path.exists():
            return None
        with self.connect(read_only=True) as con:
            df = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).df()
        return None if df.empty else df.iloc[0].to_dict()

    def register_run(self, run: dict[str, Any]) -> dict[str, Any]:
        """Insert a run, or return the stored one. A stored run with another config_hash is an error."""
        self.init()
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            existing = con.execute("SELECT * FROM runs WHERE run_id = ?", [run["run_id"]]).df()
            if not existing.empty:
                con.execute("COMMIT")
                stored = existing.iloc[0].to_dict()
                if run.get("config_hash") and stored.get("config_hash") != run["config_hash"]:
                    raise UserError(
                        f"run id {run['run_id']!r} already exists with a different config; "
                        "choose another rollout.run_id (or name) to start a new run"
                    )
                return stored
            row = dict(run)
            row.setdefault("created_at", pd.Timestamp.now())
            con.register("new_run", _arrow_table("runs", [row]))
            cols = ", ".join(schema.column_names("runs"))
            con.execute(f"INSERT INTO runs ({cols}) SELECT {cols} FROM new_run")
            con.execute("COMMIT")
            return row

    def set_run_field(self, run_id: str, column: str, value: Any) -> None:
        if column not in schema.column_names("runs"):
            raise UserError(f"no column {column!r} in runs")
        with self.connect() as con:
            con.execute(f"UPDATE runs SET {column} = ? WHERE run_id = ?", [value, run_id])

    def runs(self) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame(columns=schema.column_names("runs"))
        with self.connect(read_only=True) as con:
            return con.execute("SELECT * FROM runs ORDER BY created_at").df()

    # -------------------------------------------------------------------------------------------- episodes

    def done_seeds(self, run_id: str) -> set[int]:
        if not self.path.exists():
            return set()
        with self.connect(read_only=True) as con:
            rows = con.execute("SELECT seed FROM episodes WHERE run_id = ?", [run_id]).fetchall()
        return {int(r[0]) for r in rows}

    def append(self, records: list[EpisodeRecord]) -> int:
        """Store finished episodes in one transaction; episodes already stored are skipped. Returns how many new."""
        if not records:
            return 0
        now = pd.Timestamp.now()
        episodes = [dict(r.episode, created_at=r.episode.get("created_at", now)) for r in records]
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                keys = pa.table({"run_id": [e["run_id"] for e in episodes], "seed": [e["seed"] for e in episodes]})
                con.register("new_keys", keys)
                present = {
                    (r, int(s))
                    for r, s in con.execute(
                        "SELECT e.run_id, e.seed FROM episodes e JOIN new_keys k USING (run_id, seed)"
                    ).fetchall()
                }
                fresh = [r for r, e in zip(records, episodes) if (e["run_id"], int(e["seed"])) not in present]
                if fresh:
                    tables = {
                        "episodes": [e for e in episodes if (e["run_id"], int(e["seed"])) not in present],
                        "steps": [s for r in fresh for s in r.steps],
                        "llm_calls": [c for r in fresh for c in r.calls],
                    }
                    for table, rows in tables.items():
                        if rows:
                            con.register(f"new_{table}", _arrow_table(table, rows))
                            cols = ", ".join(schema.column_names(table))
                            con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM new_{table}")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return len(fresh)

    def episodes(self, run_ids: list[str]) -> pd.DataFrame:
        """Episodes of these runs (in the given run order, then by seed)."""
        with self.connect(read_only=True) as con:
            return con.execute(
                "SELECT e.* FROM episodes e JOIN (SELECT unnest(?) AS run_id, generate_subscripts(?, 1) AS ord) r "
                "USING (run_id) ORDER BY r.ord, e.seed",
                [run_ids, run_ids],
            ).df()

    def query(self, sql: str, params: Optional[list[Any]] = None) -> pd.DataFrame:
        """Read-only SQL over the store."""
        with self.connect(read_only=True) as con:
            return con.execute(sql, params or []).df()

    def export_json(self, run_id: str, path: str | Path) -> Path:
        """The run as the reference workflows' JSON (per episode: final_achievements, total_reward, turns)."""
        df = self.episodes([run_id])
        out = [
            {
                "episode_id": f"{run_id}-{int(r.seed)}",
                "seed": int(r.seed),
                "model": r.model,
                "final_achievements": list(r.achievements),
                "num_achievements": int(r.num_achievements),
                "total_reward": float(r.total_reward),
                "turns": int(r.turns),
                "steps": int(r.steps),
                "termination": r.termination,
                "success": None if pd.isna(r.success) else bool(r.success),
            }
            for r in df.itertuples()
        ]
        return write_text_atomic(path, json.dumps(out, indent=1))
