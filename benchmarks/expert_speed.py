"""Benchmark the Crafter teacher's speed against an earlier version of it, checking both decide the same.

Each expert plays the same episodes on the real env (seed, steps, epsilon: with that probability a random action
replaces the expert's, from a stream of its own); their action sequences must be identical, else the script stops
with exit code 1 at the first difference.
The baseline is `crafter_exp/envs/crafter/expert.py` at a git revision (default: the last one before the array
planner). Times are CPU seconds of this process (steadier than wall time under other load); "loop" = expert +
env step (game + text rendering): what a teacher rollout runs at per process.

    python benchmarks/expert_speed.py                       # 10 seeds x 300 steps, epsilon 0 and 0.1
    python benchmarks/expert_speed.py --seeds 3 --steps 1000 --epsilons 0
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crafter_exp.config import CrafterEnvConfig
from crafter_exp.envs import make_env
from crafter_exp.envs.crafter import expert as current
from crafter_exp.envs.crafter.actions import ACTIONS

ROOT = Path(__file__).resolve().parents[1]
EXPERT_PACKAGE = "crafter_exp/envs/crafter/expert"  # a single expert.py before the split
BASELINE_REV = "59a7efa"
SEED0 = 1_000_000


def load_baseline(rev: str):
    """The expert as of git revision `rev`, imported from a temp copy (a single module before the split into a
    package, the package's modules after it, renamed so that they do not replace the working tree's)."""
    name = f"expert_baseline_{rev.replace('~', '_').replace('^', '_')}"
    git = lambda *args: subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    files = git("ls-tree", "--name-only", f"{rev}:{EXPERT_PACKAGE}").split() if _is_dir(rev) else []
    folder = Path(tempfile.mkdtemp()) / name
    if files:
        folder.mkdir()
        for file in files:
            source = git("show", f"{rev}:{EXPERT_PACKAGE}/{file}").replace(EXPERT_PACKAGE.replace("/", "."), name)
            (folder / file).write_text(source)
        path = folder / "__init__.py"
    else:
        path = folder.with_suffix(".py")
        path.write_text(git("show", f"{rev}:{EXPERT_PACKAGE}.py"))
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(folder)] if files else None
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _is_dir(rev: str) -> bool:
    kind = subprocess.run(
        ["git", "cat-file", "-t", f"{rev}:{EXPERT_PACKAGE}"], cwd=ROOT, capture_output=True, text=True
    )
    return kind.stdout.strip() == "tree"


def play(seed: int, steps: int, epsilon: float, module) -> dict:
    """One episode of `module`'s expert (with probability epsilon a random action instead): actions played and
    CPU seconds spent in the expert and in the env."""
    env = make_env(CrafterEnvConfig(max_steps=steps))
    env.reset(seed)
    agent, rng = module.CrafterExpert(), random.Random(seed)
    explore = random.Random(f"explore:{seed}")
    clock = time.process_time
    expert_s = env_s = 0.0
    actions = []
    for _ in range(steps):
        t0 = clock()
        action = agent.act(env.view, rng)
        t1 = clock()
        actions.append(action)
        if explore.random() < epsilon:
            action = explore.choice(ACTIONS)
        done = env.step(action).done
        t2 = clock()
        expert_s, env_s = expert_s + t1 - t0, env_s + t2 - t1
        if done:
            break
    return {"actions": actions, "expert": expert_s, "env": env_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--baseline", default=BASELINE_REV, help="git revision of the expert to compare with")
    args = parser.parse_args()
    experts = {f"before ({args.baseline})": load_baseline(args.baseline), "after (working tree)": current}
    for module in experts.values():
        play(SEED0, 5, 0.0, module)  # warm-up: the compiled planner is loaded from numba's cache (or compiled)
    total_steps, seconds = 0, {label: [0.0, 0.0] for label in experts}  # expert, env
    for epsilon in args.epsilons:
        for seed in range(SEED0, SEED0 + args.seeds):
            results = {label: play(seed, args.steps, epsilon, module) for label, module in experts.items()}
            (label0, first), *others = results.items()
            for label, result in others:
                if result["actions"] != first["actions"]:
                    step = next(
                        (i for i, (a, b) in enumerate(zip(first["actions"], result["actions"])) if a != b),
                        min(len(first["actions"]), len(result["actions"])),
                    )
                    raise SystemExit(
                        f"DIFFERENT DECISIONS: seed {seed} epsilon {epsilon} step {step}: "
                        f"{label0} {first['actions'][step : step + 1]} vs {label} {result['actions'][step : step + 1]}"
                    )
            total_steps += len(first["actions"])
            for label, result in results.items():
                seconds[label][0] += result["expert"]
                seconds[label][1] += result["env"]
    episodes = args.seeds * len(args.epsilons)
    print(
        f"{episodes} episodes ({args.seeds} seeds from {SEED0} x epsilons {args.epsilons}, <= {args.steps} steps): "
        f"{total_steps} steps, same action at every step"
    )
    print(f"{'':<24}{'expert steps/s':>16}{'expert ms/step':>16}{'env ms/step':>13}{'loop steps/s':>14}")
    for label, (expert_s, env_s) in seconds.items():
        print(
            f"{label:<24}{total_steps / expert_s:16.0f}{1000 * expert_s / total_steps:16.3f}"
            f"{1000 * env_s / total_steps:13.3f}{total_steps / (expert_s + env_s):14.0f}"
        )
    (before, before_env), (after, after_env) = seconds.values()
    print(f"speed-up: expert x{before / after:.1f}, loop x{(before + before_env) / (after + after_env):.1f}")


if __name__ == "__main__":
    main()
