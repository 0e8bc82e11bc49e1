"""Benchmark the Crafter teacher: the hand-coded expert (epsilon 0 and 0.1) against uniform random actions.

Prints mean +- sem distinct achievements and BALROG progression (achievements / 22) over held-out seeds
(1_000_000+), at 1,000 and 300 steps, and the per-achievement unlock rates. Runs on 2 processes.

    python benchmarks/teacher.py                 # 20 seeds, 1000 and 300 steps
    python benchmarks/teacher.py --seeds 5 --steps 300
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import time
from statistics import mean, stdev

from crafter import constants

from crafter_exp.envs.crafter.expert import CrafterExpert
from crafter_exp.envs.crafter.view import local_view

ACHIEVEMENTS = tuple(constants.achievements)
ACTIONS = tuple(constants.actions)
SEED0 = 1_000_000


def _game():
    """Our reproducible fast game when available, else stock crafter (same worlds, same dynamics)."""
    try:
        from crafter_exp.envs.crafter.game import CrafterGame

        return CrafterGame(), True
    except Exception:  # noqa: BLE001 - the env module may be mid-change; stock crafter is equivalent here
        import crafter

        return crafter.Env(), False


def play(args: tuple[int, int, float, str]) -> dict:
    """One episode: (seed, steps, epsilon, policy) -> {achievements, steps, died, seconds}."""
    seed, steps, epsilon, policy = args
    game, ours = _game()
    if ours:
        game.reset_to(seed)
    else:
        import crafter

        game = crafter.Env(seed=seed)
        game.reset()
    expert = CrafterExpert()
    rng = random.Random(seed)
    pick = random.Random(seed * 7919 + 1)
    t0 = time.perf_counter()
    done, n, info = False, 0, {}
    while not done and n < steps:
        view = local_view(game)
        if policy == "random":
            action = pick.choice(ACTIONS)
        else:
            action = expert.act(view, rng)
            if pick.random() < epsilon:
                action = pick.choice(ACTIONS)
        _, _, done, info = game.step(ACTIONS.index(action))
        n += 1
    unlocked = sorted(k for k, v in info.get("achievements", {}).items() if v > 0)
    return {
        "seed": seed,
        "achievements": unlocked,
        "steps": n,
        "died": bool(done and n < steps and info["inventory"]["health"] <= 0),
        "seconds": time.perf_counter() - t0,
    }


def summarize(label: str, results: list[dict]) -> None:
    counts = [len(r["achievements"]) for r in results]
    sem = stdev(counts) / len(counts) ** 0.5 if len(counts) > 1 else 0.0
    deaths = sum(r["died"] for r in results)
    steps = sum(r["steps"] for r in results)
    secs = sum(r["seconds"] for r in results)
    print(
        f"{label:<28} achievements {mean(counts):5.2f} +- {sem:4.2f}   progression {100 * mean(counts) / 22:5.1f} %"
        f" +- {100 * sem / 22:3.1f}   deaths {deaths}/{len(results)}   {steps / secs:6.0f} steps/s/proc"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 300])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--no-random", action="store_true")
    args = parser.parse_args()
    seeds = [SEED0 + i for i in range(args.seeds)]
    configs = [(steps, eps, "expert") for steps in args.steps for eps in args.epsilons]
    if not args.no_random:
        configs += [(steps, 0.0, "random") for steps in args.steps]
    jobs = [(s, steps, eps, pol) for steps, eps, pol in configs for s in seeds]
    t0 = time.perf_counter()
    with mp.Pool(args.processes) as pool:
        results = pool.map(play, jobs, chunksize=1)
    print(f"{len(seeds)} held-out seeds ({SEED0}+), {args.processes} processes, {time.perf_counter() - t0:.0f} s")
    by_config = {}
    for job, res in zip(jobs, results):
        by_config.setdefault(job[1:], []).append(res)
    for (steps, eps, pol), res in by_config.items():
        label = f"{pol} eps={eps:g} {steps} steps" if pol == "expert" else f"random {steps} steps"
        summarize(label, res)
    print("\nper-achievement unlock rate (% of episodes)")
    keys = list(by_config)
    header = "".join(f"{(('rnd' if k[2] == 'random' else f'e{k[1]:g}') + '/' + str(k[0])):>10}" for k in keys)
    print(f"{'achievement':<20}{header}")
    for ach in ACHIEVEMENTS:
        row = "".join(f"{100 * mean(ach in r['achievements'] for r in by_config[k]):10.0f}" for k in keys)
        print(f"{ach:<20}{row}")


if __name__ == "__main__":
    main()
