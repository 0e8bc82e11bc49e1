"""Where the single DuckDB writer binds: how many env steps per second the driver can store, next to how many
one rollout actor produces.

    python benchmarks/store_writer.py                 # ~1 minute
    python benchmarks/store_writer.py --batches 20 --episodes-per-batch 8

Real episodes are played first (Crafter, random policy, in this process) so the rows carry real observation text
and info JSON; then copies of them under fresh seeds are appended batch by batch to a new store, exactly as the
rollout stage's `on_batch` does (one transaction per batch: episodes + steps + llm_calls, opened and closed each
time). Printed side by side: the writer's steps/s (wall and this process's CPU time) and one actor's play rate
measured on the same episodes, and their ratio = how many actors one writer keeps up with.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

from crafter_exp.config import CrafterEnvConfig, RandomModelConfig
from crafter_exp.policies import make_policy
from crafter_exp.runner.play import play_batch
from crafter_exp.store.traces import TraceStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes-per-batch", type=int, default=8, help="episodes per append (ray.episodes_per_task)")
    parser.add_argument("--batches", type=int, default=30, help="appends measured")
    parser.add_argument("--max-steps", type=int, default=300, help="steps per episode (env.max_steps)")
    args = parser.parse_args()

    env_cfg = CrafterEnvConfig(max_steps=args.max_steps)
    policy = make_policy(RandomModelConfig(), 0)
    policy.start()
    meta = {"run_id": "bench", "env": "crafter", "policy": "random", "model": "random", "provider": "local"}
    seeds = list(range(args.episodes_per_batch))
    t0, c0 = time.perf_counter(), time.process_time()
    played = play_batch(env_cfg, policy, seeds, meta)
    play_wall, play_cpu = time.perf_counter() - t0, time.process_time() - c0
    steps_per_batch = sum(r.episode["steps"] for r in played)
    print(
        f"played {len(played)} episodes, {steps_per_batch} steps: one actor {steps_per_batch / play_wall:.0f} "
        f"steps/s wall, {steps_per_batch / play_cpu:.0f} steps/s CPU"
    )

    with tempfile.TemporaryDirectory() as tmp:
        store = TraceStore(Path(tmp) / "traces.duckdb")
        store.register_run({"run_id": "bench", "config_hash": "h"})
        wall = cpu = 0.0
        for b in range(args.batches):
            batch = copy.deepcopy(played)
            for r in batch:  # fresh seeds: every append stores new episodes
                seed = b * len(batch) + r.episode["seed"] + 1_000
                r.episode["seed"] = seed
                for row in r.steps + r.calls:
                    row["seed"] = seed
            t0, c0 = time.perf_counter(), time.process_time()
            assert store.append(batch) == len(batch)
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
        size_mb = store.path.stat().st_size / 1e6
    stored = steps_per_batch * args.batches
    print(
        f"stored {args.batches} batches x {len(played)} episodes = {stored} steps: writer {stored / wall:.0f} "
        f"steps/s wall, {stored / cpu:.0f} steps/s CPU; {wall / args.batches * 1000:.0f} ms per append; "
        f"file {size_mb:.1f} MB ({size_mb * 1e6 / stored:.0f} bytes/step)"
    )
    print(
        f"ratio (CPU): one writer keeps up with {stored / cpu / (steps_per_batch / play_cpu):.1f} actors playing "
        f"at full speed"
    )


if __name__ == "__main__":
    main()
