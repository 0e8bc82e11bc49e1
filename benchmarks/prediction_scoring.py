"""World-model prediction scoring: what it costs per turn next to a Crafter step, and what trivial predictors score.

Plays the scripted teacher (epsilon 0.1) and the random policy on held-out seeds and, at every turn, scores three
predictions the way the rollout does (`parse_changes` + `state_change` + `prediction_f1`):
- `no change` (the persistence baseline: a model must beat it for its predictions to mean anything);
- `wood +1` (a fixed guess);
- the oracle: the actual change written out as `name +N, ...` (must score 1.0: checks the parser reads what the
  grammar says).
Times are CPU seconds of this process: scoring one turn vs one env step (game + text rendering).

    python benchmarks/prediction_scoring.py                     # 10 seeds x 300 steps
    python benchmarks/prediction_scoring.py --seeds 3 --steps 100
"""

from __future__ import annotations

import argparse
import random
import time

from crafter_exp.config import CrafterEnvConfig
from crafter_exp.envs import make_env, prediction_f1
from crafter_exp.envs.crafter.actions import ACTIONS
from crafter_exp.parsing import parse_changes

SEED0 = 1_000_000


def written(changes: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:+d}" for k, v in changes.items()) or "no change"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    env = make_env(CrafterEnvConfig())
    for policy in ("teacher", "random"):
        rng = random.Random(0)
        f1 = {"no change": [], "wood +1": [], "oracle": []}
        f1_changed = {k: [] for k in f1}  # the same over the turns where something changed
        changed = 0
        step_cpu = score_cpu = 0.0
        turns = 0
        for seed in range(SEED0, SEED0 + args.seeds):
            obs = env.reset(seed)
            for _ in range(args.steps):
                if policy == "teacher":
                    action = rng.choice(ACTIONS) if rng.random() < 0.1 else env.expert_action()
                else:
                    action = rng.choice(ACTIONS)
                t0 = time.process_time()
                result = env.step(action)
                t1 = time.process_time()
                actual = env.state_change(obs, result.observation, result.unlocked)
                f1["no change"].append(
                    prediction_f1(parse_changes("no change", env.prediction_quantity, env.achievements), actual)
                )
                t2 = time.process_time()
                f1["wood +1"].append(
                    prediction_f1(parse_changes("wood +1", env.prediction_quantity, env.achievements), actual)
                )
                f1["oracle"].append(
                    prediction_f1(parse_changes(written(actual), env.prediction_quantity, env.achievements), actual)
                )
                if actual:
                    for k, v in f1.items():
                        f1_changed[k].append(v[-1])
                step_cpu += t1 - t0
                score_cpu += t2 - t1
                changed += bool(actual)
                turns += 1
                obs = result.observation
                if result.done:
                    break
        mean = {k: 100.0 * sum(v) / len(v) for k, v in f1.items()}
        print(
            f"{policy}: {turns} turns, {100.0 * changed / turns:.1f} % of turns changed something; "
            f"prediction_f1 x100: no change {mean['no change']:.1f}, wood +1 {mean['wood +1']:.1f}, "
            f"oracle {mean['oracle']:.1f}"
        )
        changed_mean = {k: 100.0 * sum(v) / max(len(v), 1) for k, v in f1_changed.items()}
        print(
            f"  prediction_f1_changed x100: no change {changed_mean['no change']:.1f}, "
            f"wood +1 {changed_mean['wood +1']:.1f}, oracle {changed_mean['oracle']:.1f}"
        )
        print(
            f"  CPU per turn: env step {1e6 * step_cpu / turns:.0f} us, scoring {1e6 * score_cpu / turns:.0f} us "
            f"({score_cpu / step_cpu:.2f}x a step)"
        )
        assert mean["oracle"] == 100.0, "the parser does not read the actual change written out"
    env.close()


if __name__ == "__main__":
    main()
