"""The DuckDB trace store: schema, whole episodes exactly once, no partial writes, readers between batches."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import pytest

from crafter_exp.store import schema
from crafter_exp.store.traces import EpisodeRecord, TraceStore


def record(run_id: str, seed: int, turns: int = 3, achievements=("collect_wood",)) -> EpisodeRecord:
    steps = [
        {
            "run_id": run_id,
            "seed": seed,
            "turn": t,
            "step": t,
            "observation": f"obs {t}",
            "reply": "do",
            "actions": ["do"],
            "parse_ok": True,
            "valid": True,
            "reward": 1.0 if t == 0 else 0.0,
            "unlocked": list(achievements) if t == 0 else [],
            "info": {"inventory": {"wood": t}},
            "done": t == turns - 1,
        }
        for t in range(turns)
    ]
    episode = {
        "run_id": run_id,
        "seed": seed,
        "env": "crafter",
        "model": "m",
        "steps": turns,
        "turns": turns,
        "total_reward": 1.0,
        "achievements": list(achievements),
        "num_achievements": len(achievements),
        "termination": "max_steps",
        "action_counts": {"do": turns},
        "cost": None,
    }
    return EpisodeRecord(episode, steps, [])


def test_schema_tables_match_ddl(tmp_path):
    store = TraceStore(tmp_path / "t.duckdb")
    store.init()
    con = duckdb.connect(str(store.path), read_only=True)
    for table, columns in schema.TABLES.items():
        got = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        assert got == [c[0] for c in columns], table
    con.close()
    assert "| achievements | VARCHAR[] |" in schema.markdown()


def test_append_is_exactly_once_and_lists_are_queryable(tmp_path):
    store = TraceStore(tmp_path / "t.duckdb")
    store.register_run({"run_id": "r", "config_hash": "h"})
    assert store.append([record("r", 1), record("r", 2)]) == 2
    assert store.append([record("r", 2), record("r", 3)]) == 1  # seed 2 already there: skipped whole
    assert store.done_seeds("r") == {1, 2, 3}
    steps = store.query("SELECT count(*) AS n FROM steps WHERE run_id = 'r'")
    assert int(steps.n[0]) == 9
    hits = store.query("SELECT seed FROM episodes WHERE list_has_all(achievements, ['collect_wood']) ORDER BY seed")
    assert hits.seed.tolist() == [1, 2, 3]


def test_failed_append_leaves_nothing(tmp_path):
    store = TraceStore(tmp_path / "t.duckdb")
    store.init()
    bad = record("r", 5)
    bad.steps[1]["turn"] = "not a number"  # fails inside the transaction, after the episode row was inserted
    with pytest.raises(Exception):
        store.append([record("r", 4), bad])
    assert store.done_seeds("r") == set()
    assert int(store.query("SELECT count(*) AS n FROM steps").n[0]) == 0


def test_run_with_other_config_is_refused(tmp_path):
    store = TraceStore(tmp_path / "t.duckdb")
    store.register_run({"run_id": "r", "config_hash": "a"})
    assert store.register_run({"run_id": "r", "config_hash": "a"})["run_id"] == "r"
    with pytest.raises(ValueError, match="different config"):
        store.register_run({"run_id": "r", "config_hash": "b"})


def test_another_process_reads_between_appends(tmp_path):
    store = TraceStore(tmp_path / "t.duckdb")
    store.register_run({"run_id": "r", "config_hash": "h"})
    store.append([record("r", 1)])
    code = (
        "import duckdb,sys; con=duckdb.connect(sys.argv[1], read_only=True);"
        "print(con.execute('select count(*) from episodes').fetchone()[0])"
    )
    out = subprocess.run([sys.executable, "-c", code, str(store.path)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "1", out.stderr
    store.append([record("r", 2)])  # and the writer can write again after the reader left


def test_export_json_has_reference_shape(tmp_path):
    import json

    store = TraceStore(tmp_path / "t.duckdb")
    store.register_run({"run_id": "r", "config_hash": "h"})
    store.append([record("r", 7, achievements=("collect_wood", "place_table"))])
    data = json.loads(store.export_json("r", tmp_path / "out" / "r.json").read_text())
    assert data[0]["final_achievements"] == ["collect_wood", "place_table"]
    assert data[0]["total_reward"] == 1.0 and data[0]["turns"] == 3


def test_an_interrupted_query_is_the_users_interrupt(tmp_path):
    """DuckDB turns a Ctrl-C during a query into its own error; the store hands it on as KeyboardInterrupt (exit 130,
    'rerun to resume'), not as a crash."""
    import threading

    store = TraceStore(tmp_path / "t.duckdb")
    with pytest.raises(KeyboardInterrupt):
        with store.connect() as con:
            threading.Timer(0.3, con.interrupt).start()
            con.execute("SELECT count(*) FROM range(10000000000) a")
