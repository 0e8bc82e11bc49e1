"""Env throughput: stock `crafter.Env` vs `CrafterTextEnv`, side by side in one run, then Ray scaling 2 vs 1.

    python benchmarks/env_throughput.py                # ~2.5 minutes
    python benchmarks/env_throughput.py --seconds 10 --no-ray

Both sides play the same seeds with the same uniformly random actions (episode k: seed k, actions from
RandomState(k)), resets included, on one core; the two are measured in alternating slices so that other load on
the machine hits both alike, and both wall-clock and CPU-time (this process only) rates are printed: on a shared
machine the CPU-time figures are the one-core figures. Ours includes building the text observation every step
(the real cost a rollout pays). Stock is measured twice: as installed here (opensimplex uses numba) and with
numba's JIT disabled (pure-Python noise: the 1.1 s resets of the issue's 145 steps/s measurement), the latter
in a subprocess. Ray: plain actors each playing episodes of CrafterTextEnv; the same total work on 1 actor,
then on 2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import crafter
import numpy as np

from crafter_exp.config import CrafterEnvConfig
from crafter_exp.envs.crafter import ACTIONS, CrafterTextEnv


class StockRunner:
    """Stock `crafter.Env`, one object reused (building one loads its textures: ~25 ms, left out to be fair to
    stock); before each episode its seed and reset counter are set so that the episode plays the world of
    `crafter.Env(seed=k).reset()`, the same world ours plays."""

    name = "stock"

    def __init__(self):
        self.env = crafter.Env(seed=0)

    def episode(self, seed: int) -> int:
        env = self.env
        env._seed, env._episode = seed, 0
        env.reset()
        rng, steps, done = np.random.RandomState(seed), 0, False
        while not done:
            _, _, done, _ = env.step(rng.randint(len(ACTIONS)))
            steps += 1
        return steps


class OursRunner:
    name = "ours"

    def __init__(self, obs_format: str = "compact"):
        self.env = CrafterTextEnv(CrafterEnvConfig(obs_format=obs_format))
        self.words = []

    def episode(self, seed: int) -> int:
        self.env.reset(seed)
        rng, steps, done = np.random.RandomState(seed), 0, False
        while not done:
            result = self.env.step(ACTIONS[rng.randint(len(ACTIONS))])
            self.words.append(len(result.observation.text.split()))
            done = result.done
            steps += 1
        return steps


def alternate(runners, seconds: float, slice_seconds: float = 2.0) -> dict[str, tuple[int, float, float]]:
    """Give each runner `seconds` in alternating slices; every runner plays the seeds 0, 1, 2, ... in order.

    Returns {name: (steps, wall seconds, cpu seconds)}.
    """
    totals = {r.name: [0, 0.0, 0.0, 0] for r in runners}  # steps, wall, cpu, next seed
    while min(t[1] for t in totals.values()) < seconds:
        for runner in runners:
            total = totals[runner.name]
            wall, cpu = time.perf_counter(), time.process_time()
            while time.perf_counter() - wall < slice_seconds:
                total[0] += runner.episode(total[3])
                total[3] += 1
            total[1] += time.perf_counter() - wall
            total[2] += time.process_time() - cpu
    return {name: (steps, wall, cpu) for name, (steps, wall, cpu, _) in totals.items()}


def stock_without_numba(seconds: float) -> tuple[float, float]:
    """Stock with pure-Python simplex noise (numba JIT off), in a subprocess: (wall, cpu) steps/s."""
    code = (
        "import json, sys; sys.path.insert(0, %r)\n"
        "from env_throughput import StockRunner, alternate\n"
        "steps, wall, cpu = alternate([StockRunner()], %r, %r)['stock']\n"
        "print(json.dumps([steps / wall, steps / cpu]))\n"
    ) % (os.path.dirname(os.path.abspath(__file__)), seconds, seconds)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    wall, cpu = json.loads(out.stdout.strip().splitlines()[-1])
    return wall, cpu


def reset_times(seeds) -> tuple[float, float]:
    stock, ours = [], []
    env = CrafterTextEnv(CrafterEnvConfig())
    env.reset(10**6)  # warm (numba cache load)
    for seed in seeds:
        s = crafter.Env(seed=seed)
        t = time.perf_counter()
        s.reset()
        stock.append(time.perf_counter() - t)
        t = time.perf_counter()
        env.reset(seed)
        ours.append(time.perf_counter() - t)
    return statistics.median(stock), statistics.median(ours)


def step_only_rate(seconds: float) -> float:
    """Ours without resets: steps/s of CPU time inside episodes (resets excluded from the clock)."""
    env, steps, elapsed, seed = CrafterTextEnv(CrafterEnvConfig()), 0, 0.0, 0
    while elapsed < seconds:
        env.reset(seed)
        rng, done = np.random.RandomState(seed), False
        start = time.process_time()
        while not done:
            done = env.step(ACTIONS[rng.randint(len(ACTIONS))]).done
            steps += 1
        elapsed += time.process_time() - start
        seed += 1
    return steps / elapsed


CHUNK = 4
"""Episodes per task: work is handed to whichever worker is free, a few episodes at a time, as the rollout pool does."""


def _chunks(seeds: list[int]) -> list[list[int]]:
    return [seeds[i : i + CHUNK] for i in range(0, len(seeds), CHUNK)]


def ray_scaling(episodes: int, rounds: int = 3) -> tuple[float, float, float, float]:
    """Steps/s of the same work on 1 actor and on 2 (rounds alternate 1, 2, 1, 2, ... so load drifts hit both).

    Also returns how many cores the two actors actually got (their CPU seconds / wall seconds; 2.0 on an idle
    machine) and the per-core efficiency of 2 actors relative to 1 (steps per actor CPU-second; 1.0 = the
    actors do not slow each other down). On a shared machine the wall-clock ratio measures the other load as
    much as Ray; 2 x efficiency is then the scaling a free second core gives. (Linux autogroup scheduling,
    on here, shares CPU fairly between sessions, and Ray's workers sit in one session: while other sessions
    keep the cores busy, two workers get about one worker's share, whatever Ray does.)
    """
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=1)
    class Worker:
        def __init__(self):
            self.runner = OursRunner()
            self.runner.episode(10**6)  # warm-up outside the clock

        def play(self, seeds):
            cpu = time.process_time()
            steps = sum(self.runner.episode(s) for s in seeds)
            return steps, time.process_time() - cpu

    def play(workers, seeds) -> tuple[int, float]:
        """Every chunk to the first free worker; returns (steps, worker CPU seconds)."""
        todo, free, inflight, steps, cpu = _chunks(seeds), list(workers), {}, 0, 0.0
        while todo or inflight:
            while todo and free:
                worker = free.pop()
                inflight[worker.play.remote(todo.pop(0))] = worker
            done, _ = ray.wait(list(inflight), num_returns=1)
            free.append(inflight.pop(done[0]))
            chunk_steps, chunk_cpu = ray.get(done[0])
            steps, cpu = steps + chunk_steps, cpu + chunk_cpu
        return steps, cpu

    try:
        workers = [Worker.remote() for _ in range(2)]
        ray.get([w.play.remote([]) for w in workers])  # actors up and warm
        return _alternate_one_two(lambda n, seeds: play(workers[:n], seeds), episodes, rounds)
    finally:
        ray.shutdown()


def _process_play(seeds: list[int]) -> tuple[int, float]:
    runner = _PROCESS_RUNNER["runner"]
    cpu = time.process_time()
    return sum(runner.episode(s) for s in seeds), time.process_time() - cpu


_PROCESS_RUNNER: dict = {}


def _process_init() -> None:
    _PROCESS_RUNNER["runner"] = OursRunner()
    _PROCESS_RUNNER["runner"].episode(10**6)


def process_scaling(episodes: int, rounds: int = 3) -> tuple[float, float, float, float]:
    """The same measurement with plain worker processes (multiprocessing, no Ray): what 2 cores give here at best."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, initializer=_process_init) as one, ctx.Pool(2, initializer=_process_init) as two:
        for pool, n in ((one, 1), (two, 2)):  # start and warm every worker outside the clock
            pool.map(_process_play, [[]] * n, chunksize=1)
            time.sleep(1.0)

        def play(n: int, seeds: list[int]) -> tuple[int, float]:
            out = list((one if n == 1 else two).imap_unordered(_process_play, _chunks(seeds)))
            return sum(s for s, _ in out), sum(c for _, c in out)

        return _alternate_one_two(play, episodes, rounds)


def _alternate_one_two(play, episodes: int, rounds: int) -> tuple[float, float, float, float]:
    """(1-worker steps/s, 2-worker steps/s, cores the 2 workers got, per-core efficiency 2 vs 1)."""
    totals = {1: [0, 0.0, 0.0], 2: [0, 0.0, 0.0]}  # steps, wall, worker cpu
    per_round = max(1, episodes // rounds)
    for r in range(rounds):
        seeds = list(range(r * per_round, (r + 1) * per_round))
        for n in (1, 2):
            start = time.perf_counter()
            steps, cpu = play(n, seeds)
            totals[n][1] += time.perf_counter() - start
            totals[n][0] += steps
            totals[n][2] += cpu
    one, two = (totals[n][0] / totals[n][1] for n in (1, 2))
    per_core_one, per_core_two = (totals[n][0] / totals[n][2] for n in (1, 2))
    return one, two, totals[2][2] / totals[2][1], per_core_two / per_core_one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="measured seconds per side (stock, ours)")
    parser.add_argument("--ray-episodes", type=int, default=300, help="episodes for each Ray measurement")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--no-pure-python", action="store_true", help="skip stock with numba's JIT disabled")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")

    stock_reset, ours_reset = reset_times(range(20))
    print(
        f"reset (median of 20): stock {stock_reset * 1000:.1f} ms, ours {ours_reset * 1000:.1f} ms "
        f"({stock_reset / ours_reset:.1f}x)"
    )

    ours = OursRunner()
    ours.episode(10**6)  # warm-up
    ours.words.clear()
    results = alternate([StockRunner(), ours], args.seconds)
    (s_steps, s_wall, s_cpu), (o_steps, o_wall, o_cpu) = results["stock"], results["ours"]
    print(f"random actions, resets included, one core ({s_steps} stock steps, {o_steps} ours):")
    for label, s_time, o_time in (("wall clock", s_wall, o_wall), ("CPU time  ", s_cpu, o_cpu)):
        stock_rate, ours_rate = s_steps / s_time, o_steps / o_time
        print(
            f"  {label}: stock {stock_rate:.0f} steps/s, ours {ours_rate:.0f} steps/s: "
            f"{ours_rate / stock_rate:.1f}x (goal >= 12x)"
        )
    if not args.no_pure_python:
        p_wall, p_cpu = stock_without_numba(args.seconds)
        print(
            f"  stock with pure-Python noise (numba JIT off, as in the issue's 145 steps/s): "
            f"{p_wall:.0f} steps/s wall, {p_cpu:.0f} CPU: ours is {o_steps / o_wall / p_wall:.1f}x (wall), "
            f"{o_steps / o_cpu / p_cpu:.1f}x (CPU)"
        )
    print(f"ours without resets: {step_only_rate(min(args.seconds, 5)):.0f} steps/s (CPU time)")
    words = ours.words
    print(
        f"compact observation: {statistics.mean(words):.1f} words on average (whitespace split), "
        f"median {statistics.median(words):.0f}, max {max(words)}"
    )
    full = OursRunner("full")
    for seed in range(5):
        full.episode(seed)
    print(f"full observation: {statistics.mean(full.words):.1f} words on average")

    if not args.no_ray:
        print(
            f"2 workers vs 1, {args.ray_episodes} episodes each way, {CHUNK} episodes per task to the first free worker:"
        )
        for label, measure in (
            ("Ray actors", ray_scaling),
            ("plain processes (no Ray; the machine's ceiling)", process_scaling),
        ):
            one, two, cores, efficiency = measure(args.ray_episodes)
            print(
                f"  {label}: 1 worker {one:.0f} steps/s, 2 workers {two:.0f} steps/s: {two / one:.2f}x wall clock"
                f"{' (goal >= 1.8x)' if measure is ray_scaling else ''}"
            )
            print(
                f"    the 2 workers got {cores:.2f} cores of CPU time; per-core efficiency 2 vs 1: {efficiency:.2f} "
                f"(CPU-time scaling {2 * efficiency:.2f}x)"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
