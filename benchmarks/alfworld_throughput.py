"""ALFWorld episodes per minute with the hand-coded expert, through the real rollout stage: 1 vs 2 Ray workers.

Every configuration plays the same valid_seen seeds (`model=scripted model.epsilon=0`) into its own fresh trace
store, so each one is a whole rollout (actor start, game listing, resets, steps, DuckDB writes). Ray is started
once before the timings. Also printed: the expert's success rate and steps to success per task type, and the
in-process speed of stock TextWorld text generation against `env.fast_text` (memoised parses, same text).

    python benchmarks/alfworld_throughput.py                      # 16 episodes, workers 1 and 2, fast_text A/B on 6
    python benchmarks/alfworld_throughput.py --episodes 8 --workers 1 2 --text-ab 0
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import duckdb


def overrides(home: Path, episodes: int, workers: int, per_task: int, extra: list[str]) -> list[str]:
    model = [o for o in extra if o.startswith("model=")] or ["model=scripted", "model.epsilon=0"]
    return [
        "stage=rollout",
        "name=bench",
        "env=alfworld",
        "env.split=eval_in_distribution",
        f"env.episodes={episodes}",
        "env.seed=0",
        *model,
        f"ray.num_workers={workers}",
        f"ray.episodes_per_task={per_task}",
        f"paths.home={home}",
        "tracking.enabled=false",
        "rollout.progress=false",
        *[o for o in extra if not o.startswith("model=")],
    ]


def timed_rollout(episodes: int, workers: int, per_task: int, extra: list[str]) -> tuple[float, object]:
    """(wall seconds, episodes DataFrame); in-process runs (workers 0) also get `cpu_s`, this process's CPU time."""
    from crafter_exp.config import compose_config
    from crafter_exp.stages.rollout import rollout

    home = Path(tempfile.mkdtemp(prefix="alfbench-"))
    cfg = compose_config(overrides(home, episodes, workers, per_task, extra))
    start, cpu = time.perf_counter(), time.process_time()
    result = rollout(cfg)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    with duckdb.connect(cfg.paths.db, read_only=True) as db:
        df = db.execute("SELECT task_type, success, steps FROM episodes WHERE run_id = ?", [result.run_id]).df()
    df.attrs["cpu_s"] = cpu if workers == 0 else None
    return seconds, df


def line(label: str, seconds: float, df) -> str:
    steps = int(df["steps"].sum())
    cpu = df.attrs.get("cpu_s")
    cpu_text = f"   {cpu / len(df):5.2f} CPU s/episode" if cpu else ""
    return (
        f"{label:<34} {len(df) / seconds * 60:6.1f} episodes/min   {steps / seconds:5.1f} steps/s   "
        f"{seconds:6.1f} s   success {100 * df['success'].mean():5.1f} %{cpu_text}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--per-task", type=int, default=4, help="episodes an actor plays together (lockstep)")
    parser.add_argument("--text-ab", type=int, default=6, help="episodes for the in-process fast_text A/B (0: skip)")
    parser.add_argument("--random", type=int, default=0, help="also play N episodes of model=random (success rate)")
    args = parser.parse_args()

    from crafter_exp.runner.pool import ensure_ray

    t0 = time.perf_counter()
    ensure_ray(None, max(args.workers))
    print(
        f"ray started in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} (other processes share these cores)"
    )
    print(
        f"{args.episodes} valid_seen episodes (seeds 0..{args.episodes - 1}), expert (epsilon 0), "
        f"max 50 steps, {args.per_task} episodes per actor task\n"
    )

    results = {}
    for workers in args.workers:
        seconds, df = timed_rollout(args.episodes, workers, args.per_task, [])
        results[workers] = (seconds, df)
        print(line(f"{workers} Ray worker(s)", seconds, df))
    if 1 in results and 2 in results:
        print(f"{'2 workers / 1 worker':<34} {results[1][0] / results[2][0]:6.2f}x episodes/min")

    if args.text_ab:
        print(f"\nin-process (no Ray), {args.text_ab} episodes:")
        ab = {}
        for fast in (False, True):
            seconds, df = timed_rollout(args.text_ab, 0, args.text_ab, [f"env.fast_text={str(fast).lower()}"])
            ab[fast] = seconds
            print(line(f"env.fast_text={str(fast).lower()}", seconds, df))
        print(f"{'fast_text speed-up':<34} {ab[False] / ab[True]:6.2f}x")

    if args.random:
        seconds, df = timed_rollout(args.random, max(args.workers), args.per_task, ["model=random"])
        print("\n" + line(f"random, {max(args.workers)} worker(s)", seconds, df))

    _, df = results[max(results)]
    print("\nexpert per task type (valid_seen seeds above):")
    by = df.groupby("task_type").agg(episodes=("success", "size"), success=("success", "mean"))
    solved = df[df["success"]].groupby("task_type")["steps"].mean()
    for task, row in by.iterrows():
        print(
            f"  {task:<34} {int(row.episodes):3d} episodes   success {100 * row.success:5.1f} %   "
            f"steps to success {solved.get(task, float('nan')):5.1f}"
        )


if __name__ == "__main__":
    main()
