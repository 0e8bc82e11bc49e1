"""Write a dataset's data files, streamed chunk by chunk under temporary names; the caller publishes them
(renames) once all are complete, or discards them, and writes `manifest.json` last (it marks the folder complete).

Chunks of episodes (FilterConfig.chunk_steps steps) are rendered by DuckDB on `threads` cursors in parallel and
written in order. Memory: `threads` + 1 chunks at a time, plus, with `dedupe`, a 16-byte digest per distinct
example (the one part that grows with the dataset; dedupe is off by default).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from crafter_exp import prompts
from crafter_exp.export.formats import (
    CHAT,
    JSONL_FORMATS,
    TEXT,
    TOOLS_COLUMNS,
    Statement,
    multi_turn_line,
    per_turn_line,
    system_chat,
    system_text,
    target_out_sql,
)
from crafter_exp.export.layout import Layout
from crafter_exp.filtering.select import Db, arrow_table, map_chunks, run_params, session
from crafter_exp.filtering.steps import (
    STEP_COLUMNS,
    as_arrow,
    chunk_params,
    chunk_sql,
    chunk_steps,
    chunks,
    step_params,
)

if TYPE_CHECKING:
    from crafter_exp.config import FilterConfig

JSONL_FILE = "train.jsonl"
VAL_JSONL_FILE = "val.jsonl"
# `weight` is OpenAI's per-message training weight: 0 on context replies, 1 on learned ones, null on the others
# (and on a per-turn example's target: absent means learned). Chat templates ignore the extra key.
MESSAGES_TYPE = '[{"role":"VARCHAR","content":"VARCHAR","weight":"INTEGER"}]'


@dataclass
class ExportPlan:
    """Everything the writer needs: the episodes to export (in order, with ep_order, last_kept and split),
    the chosen turns when subsetting, and the prompt layout."""

    db: Db
    """The trace store, or an open read session on it."""
    fcfg: FilterConfig
    episodes: pd.DataFrame
    layout: Layout
    subset: Optional[pd.DataFrame] = None
    data_source: str = "crafter_exp"


@dataclass
class Written:
    files: list[str]
    examples: int
    episodes: int
    digest: str
    dedupe_dropped: int = 0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    per_episode: Optional[np.ndarray] = None
    """Examples written per episode (by ep_order)."""
    tmp_files: list[tuple[str, Path]] = field(default_factory=list)
    """(final name, temporary path) of each data file: the caller renames them (`publish`) or drops them."""

    def publish(self, out_dir: Path) -> None:
        for name, tmp in self.tmp_files:
            tmp.replace(out_dir / name)
        self.tmp_files = []

    def discard(self) -> None:
        for _, tmp in self.tmp_files:
            tmp.unlink(missing_ok=True)
        self.tmp_files = []


class _Deduper:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.seen: set[bytes] = set()
        self.dropped = 0

    def keep(self, text: str) -> bool:
        if not self.enabled:
            return True
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if key in self.seen:
            self.dropped += 1
            return False
        self.seen.add(key)
        return True


def _tools_json(plan: ExportPlan) -> str:
    max_actions = max(1, int(getattr(plan.layout.prompt, "max_actions_per_turn", 1) or 1))
    return json.dumps([prompts.interact_tool(None, max_actions)], ensure_ascii=False)


def _relations(plan: ExportPlan, st: Statement, chunk_columns: tuple[str, ...] = (), lags: bool = True) -> str:
    columns = STEP_COLUMNS + TOOLS_COLUMNS if plan.fcfg.format == "openai_tools" else STEP_COLUMNS
    base = chunk_sql(plan.fcfg, columns, chunk_columns=chunk_columns)
    target = target_out_sql(plan.fcfg.target, plan.layout.prompt.template)
    return (
        base + f", r AS (SELECT *, {target} AS target_out, {st.fragment_columns()} FROM w)"
        f", h AS (SELECT *{st.lag_columns() if lags else ''} FROM r)\n"
    )


CHUNK_BYTES = 32 << 20
"""Rendered bytes a chunk of steps may hold: the chunk's step count shrinks for big examples (a long system prompt,
a history window), so memory stays bounded whatever the example size."""


def _chunk_steps(plan: ExportPlan, rs: Any) -> int:
    """Steps per chunk: FilterConfig.chunk_steps, fewer when an example is large (estimated from a sample)."""
    fcfg = plan.fcfg
    first = plan.episodes.iloc[0]
    row = rs.con.execute(
        "SELECT avg(len(observation)) + avg(len(reply)) FROM steps WHERE run_id = $run_id AND seed = $seed",
        {"run_id": str(first["run_id"]), "seed": int(first["seed"])},
    ).fetchall()
    pair = float(row[0][0] or 200.0) + 64  # + JSON framing of a user/assistant pair
    system = len(plan.layout.system or "") + 64
    if fcfg.multi_turn:
        per_step = pair + system / max(float(plan.episodes["turns"].mean()), 1.0)
    else:
        per_step = system + (plan.layout.history + 1) * pair + (600 if fcfg.format == "openai_tools" else 0)
    if fcfg.format == "parquet":
        per_step *= 3  # messages, prompt text and the CSV copy
    return int(max(500, min(fcfg.chunk_steps, CHUNK_BYTES // per_step)))


def _semi(plan: ExportPlan) -> str:
    """Restrict to the chosen (episode, turn) pairs when subsetting."""
    return " SEMI JOIN subset USING (ep_order, turn)" if plan.subset is not None else ""


def _register(con: Any, plan: ExportPlan, chunk: pd.DataFrame, columns: tuple[str, ...]) -> None:
    con.register("chunk", as_arrow(chunk[["run_id", "seed", "ep_order", *columns]]))
    if plan.subset is not None:
        orders = chunk["ep_order"].to_numpy()
        con.register("subset", as_arrow(plan.subset[plan.subset["ep_order"].isin(orders)]))


def _hasher(first_name: str) -> Any:
    """The running form of `dataset_digest` for a dataset of one file, fed while writing."""
    h = hashlib.sha256()
    h.update(first_name.encode() + b"\x00")
    return h


def dataset_digest(paths: list[tuple[str, Path]]) -> str:
    """Content hash of a dataset: sha256 over (name, NUL, bytes) of each data file, in manifest order."""
    h = hashlib.sha256()
    for name, path in paths:
        h.update(name.encode() + b"\x00")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:32]


def _in_order(table: pa.Table) -> pa.Table:
    """Rows by (ep_order, turn). A chunk's rows usually come out of DuckDB in storage order, which is that order;
    checking is cheaper than an ORDER BY, and a sort happens only when needed."""
    if table.num_rows < 2:
        return table
    key = table.column("ep_order").to_numpy().astype(np.int64) * (1 << 32) + table.column("turn").to_numpy()
    if np.all(key[1:] >= key[:-1]):
        return table
    return table.take(pa.array(np.argsort(key, kind="stable")))


def _line_bytes(col: pa.Array) -> bytes | memoryview:
    """The concatenated values of a string column (each line already ends with a newline), without a copy."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        if col.null_count == 0 and len(col):
            width = np.int32 if pa.types.is_string(col.type) else np.int64
            offsets = np.frombuffer(col.buffers()[1], dtype=width)
            return memoryview(col.buffers()[2])[offsets[col.offset] : offsets[col.offset + len(col)]]
    return "".join(v for v in col.to_pylist() if v is not None).encode()


def write_jsonl(plan: ExportPlan, out_dir: Path, progress: Any = None) -> Written:
    """One of the JSONL formats -> out_dir/train.jsonl, streamed in Arrow batches (lines rendered by DuckDB)."""
    fcfg, fmt = plan.fcfg, plan.fcfg.format
    assert fmt in JSONL_FORMATS
    st = Statement(plan.layout)
    st.params["keep_reasoning"] = bool(fcfg.keep_reasoning)
    # lines end with their newline, so that a batch of them is written as one buffer
    if fcfg.multi_turn:
        line = multi_turn_line(fmt, st, end="chr(10)", tools_json=_tools_json(plan))
        sql = (
            _relations(plan, st, ("last_kept",), lags=False)
            + f"SELECT ep_order, 0 AS turn, {line} AS line FROM h WHERE turn <= last_kept GROUP BY ep_order"
        )
    else:
        line = per_turn_line(fmt, st, _tools_json(plan), end="chr(10)")
        sql = _relations(plan, st) + f"SELECT ep_order, turn, {line} AS line FROM h{_semi(plan)} WHERE keep"
    dedupe = _Deduper(fcfg.dedupe)
    per_episode = np.zeros(len(plan.episodes), dtype=np.int64)
    params = {**step_params(fcfg), **st.params}
    columns = ("last_kept",) if fcfg.multi_turn else ()

    def work(con: Any, chunk: pd.DataFrame) -> pa.Table:
        _register(con, plan, chunk, columns)
        return _in_order(arrow_table(con, sql, {**params, **chunk_params(chunk)}))

    tmp = out_dir / (JSONL_FILE + ".tmp")
    val_tmp = out_dir / (VAL_JSONL_FILE + ".tmp")
    hasher = _hasher(JSONL_FILE)
    # the validation split (filter.val_fraction, by episode) goes to val.jsonl; ep_order -> is it a val episode
    is_val = np.zeros(len(plan.episodes), dtype=bool)  # ep_order numbers the plan's episodes 0..n-1
    is_val[plan.episodes["ep_order"].to_numpy()] = plan.episodes["split"].to_numpy() == "val"
    val_file = open(val_tmp, "wb") if is_val.any() else None
    try:
        with open(tmp, "wb") as f, session(plan.db, fcfg.memory_limit) as rs:
            for chunk, table in map_chunks(
                rs, chunks(plan.episodes, _chunk_steps(plan, rs)), work, fcfg.threads, chunk_steps
            ):
                for batch in table.to_batches():
                    eps = batch.column("ep_order").to_numpy()
                    lines = batch.column("line")
                    if fcfg.dedupe:
                        mask = np.array([dedupe.keep(t) for t in lines.to_pylist()], dtype=bool)
                        eps, lines = eps[mask], lines.filter(pa.array(mask))
                    per_episode += np.bincount(eps, minlength=len(per_episode))
                    if val_file is not None:
                        val = is_val[eps]
                        val_file.write(_line_bytes(lines.filter(pa.array(val))))
                        lines = lines.filter(pa.array(~val))
                    data = _line_bytes(lines)
                    f.write(data)
                    hasher.update(data)
                del table
                if progress is not None:
                    progress.update(chunk_steps(chunk))
    finally:
        if val_file is not None:
            val_file.close()
    if val_file is not None and not per_episode[is_val].any():  # the val episodes kept no turn: no val file
        val_tmp.unlink(missing_ok=True)
        val_file = None
    if val_file is None:
        return Written(
            [JSONL_FILE],
            int(per_episode.sum()),
            int((per_episode > 0).sum()),
            hasher.hexdigest()[:32],
            dedupe.dropped,
            per_episode=per_episode,
            tmp_files=[(JSONL_FILE, tmp)],
        )
    files = [(JSONL_FILE, tmp), (VAL_JSONL_FILE, val_tmp)]
    splits = {
        name: {"examples": int(per_episode[mask].sum()), "episodes": int((per_episode[mask] > 0).sum())}
        for name, mask in (("train", ~is_val), ("val", is_val))
    }
    return Written(
        [JSONL_FILE, VAL_JSONL_FILE],
        int(per_episode.sum()),
        int((per_episode > 0).sum()),
        dataset_digest(files),
        dedupe.dropped,
        splits=splits,
        per_episode=per_episode,
        tmp_files=files,
    )


# ------------------------------------------------------------------------------------------------- parquet


def _parquet_sql(plan: ExportPlan, st: Statement) -> str:
    fcfg = plan.fcfg
    st.use(CHAT)
    st.use(TEXT)
    ds = st.const(plan.data_source)
    if not fcfg.multi_turn:
        chat = st.joined(CHAT, ["'['"], [CHAT.target, "']'"], system_chat)
        prompt = st.prompt_parts(TEXT, system_text)
        response = TEXT.target
        truth = "expert_action" if fcfg.target == "expert" else "array_to_string(actions, chr(10))"
        select = (
            f"SELECT ep_order, turn, split, {ds} AS data_source, {chat} AS messages_json,"
            f" {prompt} AS prompt, {response} AS response, {truth} AS ground_truth,"
            f" run_id, seed, reward FROM h{_semi(plan)} WHERE keep"
        )
        return (
            _relations(plan, st, ("split",)) + f"SELECT *, from_json(messages_json, '{MESSAGES_TYPE}') AS messages"
            f" FROM ({select}) ORDER BY ep_order, turn"
        )
    sys_chat = (st.const(system_chat(st.layout.system)) + " || ','") if st.layout.system is not None else "''"
    sys_text = (st.const(system_text(st.layout.system)) + " || chr(10)") if st.layout.system is not None else "''"
    select = (
        f"SELECT ep_order, max(turn) AS turn, any_value(split) AS split, {ds} AS data_source,"
        f" '[' || {sys_chat} || string_agg(u_chat || ',' || {CHAT.turn}, ',' ORDER BY turn) || ']' AS messages_json,"
        f" {sys_text} || string_agg(CASE WHEN turn < last_kept THEN u_text || chr(10) || a_text ELSE u_text END,"
        f" chr(10) ORDER BY turn) AS prompt,"
        f" max_by(reply_out, turn) AS response, array_to_string(max_by(actions, turn), chr(10)) AS ground_truth,"
        f" any_value(run_id) AS run_id, any_value(seed) AS seed, sum(reward) AS reward"
        f" FROM h WHERE turn <= last_kept GROUP BY ep_order"
    )
    return (
        _relations(plan, st, ("split", "last_kept"), lags=False)
        + f"SELECT *, from_json(messages_json, '{MESSAGES_TYPE}') AS messages FROM ({select}) ORDER BY ep_order"
    )


def _raw_sql(plan: ExportPlan) -> str:
    return (
        chunk_sql(plan.fcfg, chunk_columns=("split",))
        + """
SELECT string_agg(j, ',' || chr(10) ORDER BY ep_order) FROM (
  SELECT w.ep_order, to_json({
    'run_id': any_value(w.run_id), 'seed': any_value(w.seed), 'split': any_value(w.split),
    'model': any_value(e.model), 'task_type': any_value(e.task_type), 'total_reward': any_value(e.total_reward),
    'final_achievements': any_value(e.achievements), 'success': any_value(e.success),
    'termination': any_value(e.termination), 'turns': count(*),
    'steps': list({'turn': w.turn, 'observation': w.observation, 'reply': w.reply, 'actions': w.actions,
                   'reward': w.reward, 'unlocked': w.unlocked, 'parse_ok': w.parse_ok, 'kept': w.keep}
                  ORDER BY w.turn)
  }) AS j
  FROM w JOIN episodes e ON e.run_id = w.run_id AND e.seed = w.seed GROUP BY w.ep_order
)"""
    )


def _parquet_tables(batch: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The AlfWorld/verl parquet row (messages, prompt_data, response_data, ...) and the flat CSV row."""
    n = batch.num_rows
    prompt = batch.column("prompt")
    response = batch.column("response")
    messages_json = batch.column("messages_json")
    import pyarrow.compute as pc

    messages = batch.column("messages")
    extra = pa.StructArray.from_arrays(
        [
            batch.column("run_id").combine_chunks(),
            pc.cast(batch.column("seed"), pa.int64()).combine_chunks(),
            pc.cast(batch.column("turn"), pa.int64()).combine_chunks(),
            batch.column("split").combine_chunks(),
            pc.cast(batch.column("reward"), pa.float64()).combine_chunks(),
        ],
        names=["run_id", "seed", "turn", "split", "reward"],
    )
    parquet = pa.table(
        {
            "data_source": batch.column("data_source"),
            "messages": messages,
            "prompt_data": pa.StructArray.from_arrays([prompt.combine_chunks()], names=["content"]),
            "response_data": pa.StructArray.from_arrays([response.combine_chunks()], names=["content"]),
            "ability": pa.array(["agent"] * n),
            "reward_model": pa.StructArray.from_arrays(
                [pa.array(["rule"] * n), batch.column("ground_truth").combine_chunks()], names=["style", "ground_truth"]
            ),
            "extra_info": extra,
        }
    )
    csv = pa.table(
        {
            "data_source": batch.column("data_source"),
            "messages": messages_json,
            "prompt": prompt,
            "response": response,
            "ground_truth": batch.column("ground_truth"),
            "run_id": batch.column("run_id"),
            "seed": batch.column("seed"),
            "turn": batch.column("turn"),
            "split": batch.column("split"),
        }
    )
    return parquet, csv


def write_parquet(plan: ExportPlan, out_dir: Path, progress: Any = None) -> Written:
    """train/val .parquet (+ .csv) split by episode, and raw_trajectories.json."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    fcfg = plan.fcfg
    st = Statement(plan.layout)
    sql = _parquet_sql(plan, st)
    raw_sql = _raw_sql(plan)
    params = {**step_params(fcfg), **st.params}
    dedupe = _Deduper(fcfg.dedupe)
    writers: dict[str, tuple[Any, Any]] = {}
    tmp_paths: dict[str, Path] = {}
    counts = {s: {"examples": 0, "episodes": 0} for s in ("train", "val")}
    per_episode = np.zeros(len(plan.episodes), dtype=np.int64)
    raw_tmp = out_dir / "raw_trajectories.json.tmp"
    first_raw = True

    def work(con: Any, chunk: pd.DataFrame) -> tuple[pa.Table, Optional[str]]:
        _register(con, plan, chunk, ("split", "last_kept"))
        p = {**params, **chunk_params(chunk)}
        return arrow_table(con, sql, p), run_params(con, raw_sql, p).fetchall()[0][0]

    try:
        with open(raw_tmp, "w", encoding="utf-8") as raw, session(plan.db, fcfg.memory_limit) as rs:
            raw.write("[\n")
            for chunk, (table, text) in map_chunks(
                rs, chunks(plan.episodes, _chunk_steps(plan, rs)), work, fcfg.threads, chunk_steps
            ):
                if text:
                    raw.write(("" if first_raw else ",\n") + text)
                    first_raw = False
                if fcfg.dedupe and table.num_rows:
                    mask = [dedupe.keep(m) for m in table.column("messages_json").to_pylist()]
                    table = table.filter(pa.array(mask))
                if table.num_rows:
                    eps = table.column("ep_order").to_numpy()
                    per_episode += np.bincount(eps, minlength=len(per_episode))
                    parquet, csv = _parquet_tables(table)
                    splits = table.column("split").to_numpy(zero_copy_only=False)
                    for split in ("train", "val"):
                        mask = splits == split
                        if not mask.any():
                            continue
                        if split not in writers:
                            tmp_paths[f"{split}.parquet"] = out_dir / f"{split}.parquet.tmp"
                            tmp_paths[f"{split}.csv"] = out_dir / f"{split}.csv.tmp"
                            writers[split] = (
                                pq.ParquetWriter(tmp_paths[f"{split}.parquet"], parquet.schema),
                                pacsv.CSVWriter(tmp_paths[f"{split}.csv"], csv.schema),
                            )
                        pw, cw = writers[split]
                        pw.write_table(parquet.filter(pa.array(mask)))
                        cw.write_table(csv.filter(pa.array(mask)))
                        counts[split]["examples"] += int(mask.sum())
                if progress is not None:
                    progress.update(chunk_steps(chunk))
            raw.write("\n]\n")
    finally:
        for pw, cw in writers.values():
            pw.close()
            cw.close()
    split_of = plan.episodes["split"].to_numpy()
    for split in ("train", "val"):
        counts[split]["episodes"] = int(((per_episode > 0) & (split_of == split)).sum())
    names = [n for n in ("train.parquet", "val.parquet", "train.csv", "val.csv") if n in tmp_paths]
    files = [(n, tmp_paths[n]) for n in names] + [("raw_trajectories.json", raw_tmp)]
    splits = {s: c for s, c in counts.items() if c["examples"]}
    return Written(
        [n for n, _ in files],
        int(per_episode.sum()),
        int((per_episode > 0).sum()),
        dataset_digest(files),
        dedupe.dropped,
        splits,
        per_episode,
        tmp_files=files,
    )


def write_dataset(plan: ExportPlan, out_dir: Path, progress: Any = None) -> Written:
    """Write the data files under temporary names in `out_dir`; `Written.publish` gives them their names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if plan.fcfg.format == "parquet":
        return write_parquet(plan, out_dir, progress)
    return write_jsonl(plan, out_dir, progress)
