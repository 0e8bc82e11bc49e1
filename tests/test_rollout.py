"""Rollouts: Ray actors, a killed actor, resume, determinism across processes, MLflow tracking."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import mlflow
import pytest
from conftest import project_overrides

from crafter_exp.config import compose_config
from crafter_exp.stages.rollout import rollout
from crafter_exp.store.traces import TraceStore


def config(home, *extra, workers=0):
    return compose_config(project_overrides(home, workers) + ["env.max_steps=60", *extra])


def test_rollout_stores_whole_episodes_and_tracks_them(project):
    cfg = config(project, "env.episodes=3", "model=random")
    result = rollout(cfg)
    store = TraceStore(cfg.paths.db)
    episodes = store.episodes([result.run_id])
    assert episodes.seed.tolist() == [0, 1, 2]
    steps = store.query("SELECT seed, count(*) AS n, max(turn) AS last FROM steps GROUP BY seed ORDER BY seed")
    assert steps.n.tolist() == episodes.turns.tolist() == [60, 60, 60]
    assert (episodes.termination == "max_steps").all()

    mlflow.set_tracking_uri(cfg.tracking.uri)
    run = mlflow.get_run(result.mlflow_run_id)
    assert run.data.tags["stage"] == "rollout"
    assert run.data.params["env.max_steps"] == "60"
    assert run.data.metrics["episodes"] == 3
    assert run.inputs.dataset_inputs[0].dataset.name == result.run_id


def test_rerun_plays_only_missing_seeds(project):
    first = rollout(config(project, "env.episodes=2", "model=random"))
    again = rollout(config(project, "env.episodes=2", "model=random"))
    more = rollout(config(project, "env.episodes=4", "model=random"))
    assert (first.new_episodes, again.new_episodes, more.new_episodes) == (2, 0, 2)
    assert first.run_id == more.run_id
    assert TraceStore(project / "data" / "traces.duckdb").done_seeds(first.run_id) == {0, 1, 2, 3}


def test_same_seed_same_episode_in_ray_workers_and_in_process(project, ray_local):
    local = rollout(config(project, "env.episodes=2", "rollout.run_id=local"))
    remote = rollout(config(project, "env.episodes=2", "rollout.run_id=remote", workers=2))
    store = TraceStore(project / "data" / "traces.duckdb")
    a = store.query("SELECT seed, turn, actions, reward, info FROM steps WHERE run_id='local' ORDER BY seed, turn")
    b = store.query("SELECT seed, turn, actions, reward, info FROM steps WHERE run_id='remote' ORDER BY seed, turn")
    assert local.metrics["mean_achievements"] == remote.metrics["mean_achievements"]
    assert a.astype(str).equals(b.astype(str))


def _worker_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "ray::RolloutWorker.play"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.slow
def test_killed_actor_is_replaced_and_every_seed_lands_once(project, ray_local):
    cfg = config(project, "env.episodes=8", "ray.episodes_per_task=2", "model=random", "env.max_steps=300", workers=2)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", rollout(cfg)))
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        pids = _worker_pids()
        if pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    thread.join(timeout=300)
    assert killed is not None, "no rollout actor was seen playing"
    result = outcome["result"]
    store = TraceStore(cfg.paths.db)
    counts = store.query(
        "SELECT seed, count(*) AS n FROM episodes WHERE run_id = ? GROUP BY seed ORDER BY seed", [result.run_id]
    )
    assert counts.seed.tolist() == list(range(8)) and (counts.n == 1).all()
    partial = store.query(
        "SELECT e.seed FROM episodes e JOIN (SELECT seed, count(*) AS n FROM steps WHERE run_id = ? GROUP BY seed) s "
        "USING (seed) WHERE e.run_id = ? AND s.n <> e.turns",
        [result.run_id, result.run_id],
    )
    assert partial.empty


def test_evaluation_records_the_experts_action_and_its_agreement(project):
    """stage=eval asks the expert every turn (played as before); expert_agreement = turns that played its action."""
    from crafter_exp import metrics
    from crafter_exp.envs import env_achievements

    teacher = rollout(
        config(project, "model=scripted", "model.epsilon=0"), stage="eval", seed_start=1_000_000, episodes=2
    )
    rand = rollout(config(project, "model=random"), stage="eval", seed_start=1_000_000, episodes=2)
    plain = rollout(config(project, "env.episodes=2", "model=random"))  # a rollout asks no expert by default
    store = TraceStore(project / "data" / "traces.duckdb")
    eps = store.episodes([teacher.run_id, rand.run_id, plain.run_id]).set_index("run_id")
    steps = store.query("SELECT run_id, actions, expert_action FROM steps")
    for run in (teacher.run_id, rand.run_id):
        mine = steps[steps.run_id == run]
        assert mine.expert_action.notna().all() and eps.loc[run, "expert_turns"].sum() == len(mine)
        agreed = sum(list(a)[:1] == [e] for a, e in zip(mine.actions, mine.expert_action))
        assert eps.loc[run, "expert_agreed"].sum() == agreed
    assert (
        steps[steps.run_id == plain.run_id].expert_action.isna().all()
        and (eps.loc[plain.run_id, "expert_turns"] == 0).all()
    )
    achievements = env_achievements("crafter")
    assert metrics.compute(eps.loc[[teacher.run_id]].reset_index(), achievements)["expert_agreement"] == 100.0
    assert metrics.compute(eps.loc[[rand.run_id]].reset_index(), achievements)["expert_agreement"] < 30.0
    assert "expert_agreement" not in metrics.compute(eps.loc[[plain.run_id]].reset_index(), achievements)
    # the same episodes as without the expert asked: the random policy's eval equals a plain rollout of those seeds
    again = rollout(
        config(project, "model=random", "rollout.record_expert=false", "rollout.run_id=noexpert"),
        seed_start=1_000_000,
        episodes=2,
    )
    a = store.query("SELECT seed, turn, actions FROM steps WHERE run_id = ? ORDER BY seed, turn", [rand.run_id])
    b = store.query("SELECT seed, turn, actions FROM steps WHERE run_id = ? ORDER BY seed, turn", [again.run_id])
    assert [list(x) for x in a.actions] == [list(x) for x in b.actions]
    # a filter that trains on the expert's labels makes any teacher's rollout record them (here random's)
    labelled = rollout(
        config(project, "env.episodes=1", "model=random", "filter.target=expert", "rollout.run_id=labelled")
    )
    rows = store.query("SELECT expert_action FROM steps WHERE run_id = ?", [labelled.run_id])
    assert len(rows) > 0 and rows.expert_action.notna().all()
