"""Benchmark the Crafter teacher: the hand-coded expert (epsilon 0 and 0.1) against uniform random actions.

Prints mean +- sem distinct achievements and BALROG progression (achievements / 22) over held-out seeds
(1_000_000+), at 1,000 and 300 steps, and the per-achievement unlock rates. Runs on 2 processes.

    python benchmarks/teacher.py                 # 20 seeds, 1000 and 300 steps
    python benchmarks/teacher.py --seeds 5 --steps 300
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from statistics import mean, stdev

from crafter_exp.config import CrafterEnvConfig, RandomModelConfig, ScriptedModelConfig
from crafter_exp.envs import env_achievements, make_env
from crafter_exp.parsing import parse_reply
from crafter_exp.policies.base import Turn
from crafter_exp.policies.scripted import RandomPolicy, ScriptedPolicy

ACHIEVEMENTS = env_achievements("crafter")
SEED0 = 1_000_000


def play(args: tuple[int, int, float, str]) -> dict:
    """One episode on the real env with the real policy: (seed, steps, epsilon, policy) -> summary."""
    seed, steps, epsilon, policy_name = args
    env = make_env(CrafterEnvConfig(max_steps=steps))
    if policy_name == "random":
        policy = RandomPolicy(RandomModelConfig(), seed=0)
    else:
        policy = ScriptedPolicy(ScriptedModelConfig(epsilon=epsilon), seed=0)
    t0 = time.perf_counter()
    obs = env.reset(seed)
    policy.reset(seed)
    unlocked, n, termination = set(), 0, None
    while n < steps:
        expert = env.expert_action() if policy.needs_expert else None
        turn = Turn(episode=seed, observation=obs.text, actions=obs.actions, instructions="", expert_action=expert)
        (decision,) = policy.act([turn])
        actions, _ = parse_reply(decision.reply, decision.tool_calls, env.canonical_action)
        result = env.step(actions[0] if actions else "noop")
        unlocked.update(result.unlocked)
        obs, n = result.observation, n + 1
        if result.done:
            termination = result.termination
            break
    return {
        "seed": seed,
        "achievements": sorted(unlocked),
        "steps": n,
        "died": termination == "death",
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
