"""Which episodes and turns a filter keeps: source runs, episode criteria, `limit`, and the per-turn count pass.

All reads go through short read-only connections (`reader`): a rollout appending to the same store waits at most
one chunk's query for the lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

import duckdb
import numpy as np
import pandas as pd

from crafter_exp.errors import UserError
from crafter_exp.filtering.criteria import (
    COUNTED,
    QUALITY,
    SORT_SQL,
    Criterion,
    combined,
    common_params,
    episode_criteria,
    used_params,
)
from crafter_exp.filtering.steps import as_arrow, chunk_params, chunk_sql, chunk_steps, chunks, step_params
from crafter_exp.store.traces import TraceStore

if TYPE_CHECKING:
    from crafter_exp.config import FilterConfig

T = TypeVar("T")
R = TypeVar("R")

EPISODE_COLUMNS = (
    "run_id",
    "seed",
    "env",
    "model",
    "provider",
    "task_type",
    "steps",
    "turns",
    "total_reward",
    "achievements",
    "success",
    "termination",
    "invalid_actions",
    "parse_failures",
    "repeated_actions",
    "prompt_tokens",
    "completion_tokens",
    "cost",
)


@dataclass
class SourceRun:
    run_id: str
    env: str
    stage: str
    model: Optional[str]
    config: dict[str, Any] = field(default_factory=dict)
    episodes: int = 0
    """Episodes stored for the run (part of the dataset's hash: more episodes, a new dataset)."""


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
GLIBC_MAX_MMAP_THRESHOLD = 32 << 20
"""Where glibc's dynamic mmap threshold ends up (64-bit) in a program that frees large blocks, e.g. training."""


@contextmanager
def large_frees_to_os(threshold: int = 1 << 20) -> Iterator[None]:
    """While inside, serve allocations >= `threshold` bytes by mmap, so that freeing them gives the memory back at once.

    glibc raises its mmap threshold each time a large block is freed, after which the chunk-sized buffers of a long
    export (query results, Arrow batches) come from the heap, fragment it, and peak RSS creeps up with the size of
    the export (measured: 310 / 450 / 500 MB at 0.1 / 1 / 3 M steps; with a fixed 1 MB threshold the 3 M-step
    export peaked at 420 MB and stayed flat). On leaving, the thresholds go where glibc's own adjustment takes a
    program that frees large blocks: with 1 MB left in place, a training stage later in the same process (the
    pipeline) mapped and zeroed its activations afresh every step, 14x the page faults, 3x the system time and
    13 % fewer tokens/s. A no-op where the C library is not glibc.
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(threshold))
    try:
        yield
    finally:
        libc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(GLIBC_MAX_MMAP_THRESHOLD))
        libc.mallopt(ctypes.c_int(M_TRIM_THRESHOLD), ctypes.c_int(2 * GLIBC_MAX_MMAP_THRESHOLD))


def _glibc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - glibc has it, musl and macOS do not
        return libc
    except (OSError, AttributeError):
        return None


class ReadSession:
    """Read-only access to the store for one stage run: one connection, renewed
    - once held for `hold_s` seconds, with a pause in between, so a rollout waiting to append gets the lock within
      seconds while a long export goes on, and
    - after `renew_steps` steps of work (`charge`): DuckDB keeps what a connection has read and allocated until it
      closes, so renewing it keeps the peak memory of a long export at that of a short one.
    DuckDB's own memory is capped too (`memory_limit`)."""

    def __init__(
        self,
        store: TraceStore,
        memory_limit: str = "256MB",
        hold_s: float = 5.0,
        pause_s: float = 0.3,
        renew_steps: int = 200_000,
    ):
        self.store = store
        self.memory_limit = memory_limit
        self.hold_s = hold_s
        self.pause_s = pause_s
        self.renew_steps = renew_steps
        self._cm: Any = None
        self._con: Optional[duckdb.DuckDBPyConnection] = None
        self._opened = 0.0
        self._charged = 0

    def _held_too_long(self) -> bool:
        return self._con is not None and time.monotonic() - self._opened > self.hold_s

    def expired(self) -> bool:
        """The next `con` opens a new connection."""
        return self._held_too_long() or (self._con is not None and self._charged >= self.renew_steps)

    def charge(self, steps: int) -> None:
        """Count work done on the current connection."""
        self._charged += steps

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self.expired():
            pause = self._held_too_long()
            self.close()
            if pause:
                time.sleep(self.pause_s)
        if self._con is None:
            self._cm = self.store.connect(read_only=True)
            self._con = self._cm.__enter__()
            self._con.execute("SET memory_limit = $limit", {"limit": self.memory_limit})
            self._opened = time.monotonic()
            self._charged = 0
        return self._con

    def close(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
        self._cm, self._con = None, None

    def __enter__(self) -> ReadSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


Db = Union[TraceStore, ReadSession]


@contextmanager
def session(db: Db, memory_limit: str = "256MB") -> Iterator[ReadSession]:
    """`db` itself when it is a session already, else a session for the duration of the block."""
    if isinstance(db, ReadSession):
        yield db
        return
    with ReadSession(db, memory_limit) as s:
        yield s


def run_params(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    return con.execute(sql, used_params(sql, params))


def map_chunks(
    rs: ReadSession,
    items: Iterable[T],
    work: Callable[[duckdb.DuckDBPyConnection, T], R],
    workers: int = 2,
    cost: Callable[[T], int] = lambda item: 0,
) -> Iterator[tuple[T, R]]:
    """`work(cursor, item)` for each item, `workers` at a time on their own cursors (DuckDB runs them in parallel
    outside the GIL: a chunk touches one or two row groups, which one thread scans), results in item order.
    At most `workers` results are held at once; the connection is renewed only between items with none in flight."""

    def call(cur: duckdb.DuckDBPyConnection, item: T) -> R:
        try:
            return work(cur, item)
        finally:
            cur.close()

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[tuple[T, Future[R]]] = deque()
        for item in items:
            if rs.expired():
                while pending:
                    done, future = pending.popleft()
                    yield done, future.result()
            pending.append((item, pool.submit(call, rs.con.cursor(), item)))
            rs.charge(cost(item))
            while len(pending) >= max(1, workers):
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def arrow_table(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> Any:
    """A query's whole result as an Arrow table."""
    relation = con.sql(sql, params=used_params(sql, params))
    return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()


def resolve_runs(db: Db, name: str, runs: Sequence[str] = ()) -> list[SourceRun]:
    """The source runs: each entry a run id or an experiment name (its latest rollout run); none = `name`'s."""
    store = db.store if isinstance(db, ReadSession) else db
    if not store.path.exists():
        raise UserError(f"trace database not found: {store.path} (run stage=rollout first)")
    with session(db) as rs:
        table = rs.con.execute("SELECT * FROM runs ORDER BY created_at").df()
    wanted = list(runs) or [name]
    out: list[SourceRun] = []
    for entry in wanted:
        row = table[table["run_id"] == entry]
        if row.empty:
            by_name = table[(table["name"] == entry) & (table["stage"] == "rollout")]
            if by_name.empty:
                known = ", ".join(table["run_id"].astype(str).tolist()[-10:]) or "none"
                what = "trace run or experiment name" if runs else "rollout run for name"
                raise UserError(f"no {what} {entry!r} in {store.path} (latest runs: {known})")
            row = by_name[by_name["run_id"] == _newest_complete_rollout(db, by_name, entry)]
        r = row.iloc[0]
        if r["run_id"] in {s.run_id for s in out}:
            continue
        config = r["config"]
        config = json.loads(config) if isinstance(config, str) else (config or {})
        out.append(SourceRun(str(r["run_id"]), str(r["env"]), str(r["stage"]), r.get("model"), config))
    with session(db) as rs:
        counts = dict(
            rs.con.execute(
                "SELECT run_id, count(*) FROM episodes WHERE list_contains($runs::VARCHAR[], run_id) GROUP BY run_id",
                {"runs": [s.run_id for s in out]},
            ).fetchall()
        )
    for s in out:
        s.episodes = int(counts.get(s.run_id, 0))
    envs = sorted({s.env for s in out})
    if len(envs) > 1:
        raise UserError(f"source runs come from several envs ({', '.join(envs)}); filter one env at a time")
    return out


def _newest_complete_rollout(db: Db, runs: pd.DataFrame, name: str) -> str:
    """An experiment name's newest rollout run holding all its episodes (crafter_exp.paths' rule: never a partial
    output); one line naming the unfinished ones when there is none."""
    from crafter_exp.paths import newest_complete_run

    with session(db) as rs:
        done = dict(
            rs.con.execute(
                "SELECT run_id, count(*) FROM episodes WHERE list_contains($runs::VARCHAR[], run_id) GROUP BY run_id",
                {"runs": runs["run_id"].astype(str).tolist()},
            ).fetchall()
        )
    found = newest_complete_run(runs, done, name)
    if found is None:
        partial = ", ".join(f"{r.run_id} ({done.get(r.run_id, 0)}/{r.episodes} episodes)" for r in runs.itertuples())
        raise UserError(
            f"no complete rollout run for name {name!r}: {partial}; rerun its stage=rollout to finish it, "
            "or name a run in filter.runs=[...]"
        )
    return found


_RUNS_JOIN = (
    "JOIN (SELECT unnest($runs::VARCHAR[]) AS run_id, generate_subscripts($runs::VARCHAR[], 1) AS run_order)"
    " r USING (run_id)"
)


def episode_frame(
    db: Db, fcfg: FilterConfig, run_ids: Sequence[str], criteria: Optional[list[Criterion]] = None
) -> tuple[pd.DataFrame, list[Criterion]]:
    """Every episode of the runs (light columns) with its quality, counted achievements and one boolean column
    per criterion (`pass_<name>`) plus `pass_all` — the basis of the stats table."""
    criteria = episode_criteria(fcfg) if criteria is None else criteria
    where, params = combined(criteria)
    flags = "".join(f', ({c.sql}) AS "pass_{c.name}"' for c in criteria)
    sql = (
        f"SELECT {', '.join('e.' + c for c in EPISODE_COLUMNS)}, r.run_order, {COUNTED} AS counted_achievements,"
        f" {QUALITY} AS quality{flags}, ({where}) AS pass_all FROM episodes e {_RUNS_JOIN}"
        " ORDER BY r.run_order, e.seed"
    )
    params = {**params, **common_params(fcfg), "runs": list(run_ids)}
    with session(db, fcfg.memory_limit) as rs:
        df = run_params(rs.con, sql, params).df()
    return df, criteria


def select_episodes(db: Db, fcfg: FilterConfig, run_ids: Sequence[str]) -> pd.DataFrame:
    """Episodes passing every criterion, the best `limit` of them by `sort_by`, in export order (run, seed).

    Columns: EPISODE_COLUMNS + run_order, counted_achievements, quality, ep_order (0..n-1, the export order).
    """
    criteria = episode_criteria(fcfg)
    where, params = combined(criteria)
    params = {**params, **common_params(fcfg), "runs": list(run_ids)}
    limit = ""
    if fcfg.limit is not None:
        limit = " LIMIT $limit"
        params["limit"] = int(fcfg.limit)
    sql = (
        f"SELECT * FROM (SELECT {', '.join('e.' + c for c in EPISODE_COLUMNS)}, r.run_order,"
        f" {COUNTED} AS counted_achievements, {QUALITY} AS quality FROM episodes e {_RUNS_JOIN}"
        f" WHERE {where} ORDER BY {SORT_SQL[fcfg.sort_by]}, r.run_order, e.seed{limit})"
        " ORDER BY run_order, seed"
    )
    with session(db, fcfg.memory_limit) as rs:
        df = run_params(rs.con, sql, params).df()
    df["ep_order"] = np.arange(len(df), dtype=np.int64)
    return df


# ------------------------------------------------------------------------------------------- step count pass


def _episode_keys(episodes: pd.DataFrame, seed: int) -> np.ndarray:
    """A seeded 64-bit key per episode (stable across processes and library versions: blake2b)."""
    out = np.empty(len(episodes), dtype=np.uint64)
    for i, (run_id, s) in enumerate(zip(episodes["run_id"], episodes["seed"])):
        digest = hashlib.blake2b(f"{seed}\x00{run_id}\x00{int(s)}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


@dataclass
class StepCounts:
    kept: np.ndarray
    """Turns kept per episode (indexed by ep_order)."""
    last_kept: np.ndarray
    """Last kept turn per episode (-1 when none)."""
    subset: Optional[pd.DataFrame] = None
    """With max_examples (one example per turn): the chosen (ep_order, turn) pairs."""

    @property
    def examples(self) -> int:
        return int(self.kept.sum())


def count_steps(db: Db, fcfg: FilterConfig, episodes: pd.DataFrame, subset: Optional[int] = None) -> StepCounts:
    """Kept turns per episode, chunk by chunk; with `subset`, also a seeded choice of that many kept turns
    (the `subset` smallest hashes of (seed, run, episode seed, turn): memory O(subset), not O(dataset))."""
    n = len(episodes)
    kept = np.zeros(n, dtype=np.int64)
    last = np.full(n, -1, dtype=np.int64)
    keys = _episode_keys(episodes, fcfg.seed) if subset else None
    best_key = np.empty(0, dtype=np.uint64)
    best_ep = np.empty(0, dtype=np.int64)
    best_turn = np.empty(0, dtype=np.int64)
    base = chunk_sql(fcfg, columns=("run_id", "seed", "turn", "parse_ok", "reward", "unlocked"))
    count_sql = base + (
        "\nSELECT ep_order, count(*) FILTER (WHERE keep) AS kept,"
        " coalesce(max(turn) FILTER (WHERE keep), -1) AS last FROM w GROUP BY ep_order"
    )
    turns_sql = base + "\nSELECT ep_order, turn FROM w WHERE keep"
    params = step_params(fcfg)

    def work(con: duckdb.DuckDBPyConnection, chunk: pd.DataFrame) -> tuple[dict, Optional[dict]]:
        con.register("chunk", as_arrow(chunk[["run_id", "seed", "ep_order"]]))
        p = {**params, **chunk_params(chunk)}
        got = run_params(con, count_sql, p).fetchnumpy()
        return got, (run_params(con, turns_sql, p).fetchnumpy() if subset else None)

    with session(db, fcfg.memory_limit) as rs:
        for _, (got, rows) in map_chunks(rs, chunks(episodes, fcfg.chunk_steps), work, fcfg.threads, chunk_steps):
            idx = got["ep_order"].astype(np.int64)
            kept[idx] = got["kept"]
            last[idx] = got["last"]
            if rows is not None:
                ep = rows["ep_order"].astype(np.int64)
                turn = rows["turn"].astype(np.int64)
                with np.errstate(over="ignore"):
                    k = _mix(keys[ep] ^ (turn.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)))
                best_key = np.concatenate([best_key, k])
                best_ep = np.concatenate([best_ep, ep])
                best_turn = np.concatenate([best_turn, turn])
                if len(best_key) > subset:
                    top = np.argpartition(best_key, subset - 1)[:subset]
                    best_key, best_ep, best_turn = best_key[top], best_ep[top], best_turn[top]
    chosen = None
    if subset:
        chosen = pd.DataFrame({"ep_order": best_ep, "turn": best_turn}).sort_values(["ep_order", "turn"])
    return StepCounts(kept, last, chosen)


def choose_episodes(episodes: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """Seeded choice of `n` episodes (boolean mask), by the same stable hash as the per-turn subset."""
    keys = _mix(_episode_keys(episodes, seed))
    mask = np.zeros(len(episodes), dtype=bool)
    mask[np.argsort(keys, kind="stable")[:n]] = True
    return mask


def split_episodes(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """True = validation, for n episodes (seeded; at least one on each side when val_fraction > 0 and n >= 2)."""
    is_val = np.zeros(n, dtype=bool)
    if val_fraction <= 0 or n < 2:
        return is_val
    n_val = min(max(1, int(round(val_fraction * n))), n - 1)
    is_val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return is_val
