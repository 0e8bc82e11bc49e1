"""Benchmark: LLM-agent rollouts with many requests in flight vs one call at a time, side by side in one run.

64 Crafter episodes x 20 steps through the real rollout stage (`model=openai`) against the loopback fake
chat-completions server (tests/fake_openai_server.py, run in its own process) answering each request after
100 ms. Rows: one call at a time (concurrency 1), one process with 64 in flight (each episode at its own pace, and in
lockstep), and Ray 2 workers x 32 in flight.
steps/s = environment steps / wall time of the stage (actor start, env construction, world generation and DuckDB
writes included; this process is warmed up first).
Then the client-side cost per call at 0 ms server latency: sequential round trip through `OpenAIPolicy.act`, and
CPU-bound throughput with 64 in flight.

    python benchmarks/llm_concurrency.py                 # full run (~3 min, most of it the sequential row)
    python benchmarks/llm_concurrency.py --episodes 16   # quicker
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """The fake server in a separate process (so its threads don't share the client's GIL)."""

    def __init__(self, latency: float):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "fake_openai_server.py"),
                "--port",
                str(self.port),
                "--latency",
                str(latency),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert "serving" in (self.proc.stdout.readline() or ""), "fake server did not start"
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def rollout_row(
    label: str, base_url: str, home: Path, episodes: int, steps: int, workers: int, concurrency: int
) -> dict:
    from crafter_exp.config import compose_config
    from crafter_exp.stages.rollout import rollout

    cfg = compose_config(
        [
            f"paths.home={home}",
            "tracking.enabled=false",
            "rollout.progress=false",
            f"name={label}",
            "model=openai",
            f"model.base_url={base_url}",
            "model.model=fake-model",
            f"model.concurrency={concurrency}",
            f"ray.num_workers={workers}",
            f"ray.episodes_per_task={max(1, concurrency)}",
            f"env.episodes={episodes}",
            f"env.max_steps={steps}",
        ]
    )
    t0 = time.perf_counter()
    result = rollout(cfg)
    wall = time.perf_counter() - t0
    total_steps = int(result.metrics["episode_length"] * result.metrics["episodes"])
    assert result.new_episodes == episodes, result
    return {"label": label, "episodes": episodes, "steps": total_steps, "wall_s": wall, "steps_s": total_steps / wall}


def decisions_only(base_url: str, episodes: int, steps: int, seq_calls: int) -> dict:
    """policy.act alone (no environment, no Ray): lockstep turns of `episodes` with 64 in flight vs one at a time."""
    from crafter_exp.config import OpenAIModelConfig
    from crafter_exp.policies.base import Turn
    from crafter_exp.policies.openai_policy import OpenAIPolicy

    turns = [
        Turn(
            episode=i,
            observation=f"You see grass and a tree. Health 9/9. (episode {i})",
            actions=["noop", "do"],
            instructions="Play Crafter.",
        )
        for i in range(episodes)
    ]
    out = {}
    for label, conc, n_turns, batch in [("64 in flight", 64, steps, episodes), ("one at a time", 1, seq_calls, 1)]:
        policy = OpenAIPolicy(OpenAIModelConfig(base_url=base_url, model="fake-model", concurrency=conc), 0)
        policy.start()
        try:
            t0 = time.perf_counter()
            for k in range(n_turns):
                decisions = policy.act(turns[:batch] if batch > 1 else [turns[k % episodes]])
                assert all(d.error is None for d in decisions)
            out[label] = n_turns * batch / (time.perf_counter() - t0)
        finally:
            policy.close()
    return out


def episode_setup_seconds(n: int = 16) -> tuple[float, float]:
    """(construction, reset) seconds per episode: what the runner pays before an episode's first turn."""
    from crafter_exp.config import compose_config
    from crafter_exp.envs import make_env

    cfg = compose_config([]).env
    make_env(cfg).reset(10_000)  # imports, compilation, caches: paid once per process
    t0 = time.perf_counter()
    envs = [make_env(cfg) for _ in range(n)]
    t1 = time.perf_counter()
    for seed, env in enumerate(envs):
        env.reset(seed)
    return (t1 - t0) / n, (time.perf_counter() - t1) / n


def overhead(base_url: str, calls: int) -> dict:
    """Per-call client cost at 0 ms server latency."""
    from crafter_exp.config import OpenAIModelConfig
    from crafter_exp.policies.base import Turn
    from crafter_exp.policies.openai_policy import OpenAIPolicy

    turn = Turn(episode=0, observation="You see grass. Health 9/9.", actions=["noop", "do"], instructions="Play.")
    policy = OpenAIPolicy(OpenAIModelConfig(base_url=base_url, model="fake-model", concurrency=64), 0)
    policy.start()
    try:
        policy.act([turn] * 20)  # warm up connections
        walls, lats = [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            [d] = policy.act([turn])
            walls.append(time.perf_counter() - t0)
            lats.append(d.calls[0].latency_s)
        cpu0, t0 = time.process_time(), time.perf_counter()
        n_batches = max(1, calls // 64)
        for _ in range(n_batches):
            policy.act([turn] * 64)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        policy.close()
    return {
        "act_ms": 1000 * statistics.median(walls),
        "call_ms": 1000 * statistics.median(lats),
        "conc_calls_s": 64 * n_batches / wall,
        "conc_cpu_ms": 1000 * cpu / (64 * n_batches),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.1, help="server seconds per answer")
    parser.add_argument("--calls", type=int, default=500, help="calls for the 0 ms overhead figures")
    parser.add_argument("--seq-calls", type=int, default=100, help="calls for the decisions-only sequential rate")
    args = parser.parse_args()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")

    import ray

    from crafter_exp.policies.openai_policy import OpenAIPolicy
    from crafter_exp.runner.pool import ensure_ray

    ensure_ray(None, 2)  # started before timing: a cluster is up before a real run too
    construct, reset = episode_setup_seconds()  # also warms this process (imports), as for every row below
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(args.latency) as srv:
        home = Path(tmp)
        print(
            f"{args.episodes} episodes x {args.steps} steps, server answers in {args.latency * 1000:.0f} ms, "
            f"{os.cpu_count()} CPUs",
            flush=True,
        )
        for label, workers, conc in [
            ("ray-2x32", 2, 32),
            ("inproc-64", 0, 64),
            ("lockstep-64", 0, 64),
            ("sequential", 0, 1),
        ]:
            # lockstep-64: the same, but every episode waits for the slowest reply of each turn (the runner's
            # path for batching policies), to show what playing each episode at its own pace gives
            OpenAIPolicy.decides_per_turn = label != "lockstep-64"
            row = rollout_row(label, srv.base_url, home, args.episodes, args.steps, workers, conc)
            rows.append(row)
            print(
                f"  {label:<11} {row['steps']:>5} steps in {row['wall_s']:7.1f} s = {row['steps_s']:7.1f} steps/s",
                flush=True,
            )
        base = rows[-1]["steps_s"]
        print("speed-up over one call at a time (end to end):")
        for row in rows[:-1]:
            print(f"  {row['label']:<11} {row['steps_s'] / base:6.1f}x  (goal >= 30x)")
        setup = construct + reset
        floor = args.episodes * setup / 2 + args.steps * args.latency
        print(
            f"  episode setup: {construct * 1000:.0f} ms env construction + {reset * 1000:.0f} ms reset; with it, "
            f"no schedule on 2 cores beats {args.episodes * args.steps / floor:.0f} steps/s = "
            f"{args.episodes * args.steps / floor / base:.0f}x (setups over 2 cores + {args.steps} turns x "
            f"{args.latency * 1000:.0f} ms); Ray rows also pay actor start (imports) in each worker"
        )
        d = decisions_only(srv.base_url, args.episodes, args.steps, args.seq_calls)
        print(
            f"decisions only (policy.act, no env, one process): 64 in flight {d['64 in flight']:.0f} decisions/s, "
            f"one at a time {d['one at a time']:.1f}/s ({args.seq_calls} calls): "
            f"{d['64 in flight'] / d['one at a time']:.1f}x"
        )
    ray.shutdown()

    with ServerProcess(0.0) as srv:
        o = overhead(srv.base_url, args.calls)
    print(f"client-side cost per call at 0 ms server latency ({args.calls} calls):")
    print(
        f"  sequential round trip: act() {o['act_ms']:.2f} ms, of which the HTTP call {o['call_ms']:.2f} ms "
        f"(fake server's own handling ~0.2 ms included)"
    )
    print(f"  64 in flight: {o['conc_calls_s']:.0f} calls/s, client CPU {o['conc_cpu_ms']:.2f} ms per call")


if __name__ == "__main__":
    main()
