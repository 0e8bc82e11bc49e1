"""A real multi-node Ray cluster (head + 2 worker nodes on this machine, `ray.cluster_utils.Cluster`).

The rollout runs as the CLI does, in its own process joined to the cluster with `ray.address=`; actors play on the
nodes, the driver stores. One worker node is removed while its actor plays: its batch is replayed on the node left
free, and every episode is stored exactly once, whole, with the node that played it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT, project_overrides

from crafter_exp.store.traces import TraceStore

# The scripted teacher lives for most of `max_steps` (~0.5 s an episode), one seed a task: each actor plays a dozen
# batches back to back, so when the test sees a worker node's first episode stored (a poll, maybe a wait for the
# store's lock) that node's actor is busy with its next batch, and there is queue left to replay it on. (With the
# random agent's 0.1 s episodes the queue could drain before the poll saw anything, and the node left idle.)
EPISODES = 32


@pytest.fixture
def cluster(monkeypatch):
    from ray.cluster_utils import Cluster

    # raylets start the workers with their own environment: make them import this checkout
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    # 1 CPU per node and 2 actors: the actors sit on two different nodes and a third is free for a replacement
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(2):
            c.add_node(num_cpus=1)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()


def _stored_nodes(store: TraceStore) -> list[str]:
    if not store.path.exists():
        return []
    try:
        df = store.query("SELECT node FROM episodes WHERE node IS NOT NULL")
    except Exception:  # tables not created yet
        return []
    return df.node.tolist()


@pytest.mark.slow
def test_rollout_spreads_over_nodes_and_survives_a_removed_node(project, cluster):
    store = TraceStore(project / "data" / "traces.duckdb")
    head = cluster.head_node.node_id
    workers = {n.node_id: n for n in cluster.list_all_nodes() if n.node_id != head}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crafter_exp",
            "stage=rollout",
            "model=scripted",
            f"env.episodes={EPISODES}",
            "env.max_steps=400",
            "ray.episodes_per_task=1",
            "rollout.run_id=cluster",
            f"ray.address={cluster.address}",
            *project_overrides(project, workers=2),
            "tracking.enabled=false",
        ],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    removed = None
    try:
        deadline = time.monotonic() + 240
        while removed is None and proc.poll() is None and time.monotonic() < deadline:
            on_workers = [n for n in _stored_nodes(store) if n in workers]
            if on_workers:  # that node's actor is playing its next batch now: take the node away
                removed = on_workers[0]
                cluster.remove_node(workers[removed], allow_graceful=False)
            time.sleep(0.3)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    assert removed is not None, "no episode from a worker node was seen before the run ended"
    # the pool saw the actor die with its node and replayed its batch
    assert "replaying seeds" in output, output[-3000:]

    episodes = store.query("SELECT seed, node, turns FROM episodes WHERE run_id = 'cluster' ORDER BY seed")
    assert episodes.seed.tolist() == list(range(EPISODES))  # all there; the key makes each (run, seed) unique
    nodes = set(episodes.node)
    assert len(nodes) >= 2 and nodes <= {head, *workers}
    assert removed in nodes  # it played (and stored) episodes before it went
    steps = store.query("SELECT seed, count(*) AS n FROM steps WHERE run_id = 'cluster' GROUP BY seed ORDER BY seed")
    assert steps.n.tolist() == episodes.turns.tolist()  # none partial, none doubled by the replay


def test_a_store_written_before_the_node_column_is_upgraded_in_place(tmp_path):
    import duckdb
    from test_store import record

    from crafter_exp.store import schema

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))  # the episodes table as it was, without `node`
    for stmt in schema.ddl():
        if stmt.startswith("CREATE"):
            con.execute(stmt.replace("  node VARCHAR,\n", ""))
    con.execute("INSERT INTO episodes (run_id, seed, steps) VALUES ('old', 0, 5)")
    con.close()
    store = TraceStore(path)
    store.register_run({"run_id": "new", "config_hash": "h"})  # init() adds the missing column
    played = record("new", 1)
    played.episode["node"] = "abc123"
    assert store.append([played]) == 1
    rows = store.query("SELECT run_id, coalesce(node, '-') AS node, steps FROM episodes ORDER BY run_id")
    assert rows.to_dict("records") == [
        {"run_id": "new", "node": "abc123", "steps": 3},
        {"run_id": "old", "node": "-", "steps": 5},
    ]
