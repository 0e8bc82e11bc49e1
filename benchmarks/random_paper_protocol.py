"""Benchmark: the random agent under the Crafter paper's protocol, stock `crafter` vs this project, side by side.

Episodes run to their natural end (death or 10,000 steps). Stock: `crafter.Env(seed=s)`, a fresh Env per seed,
uniform random actions. Ours: the evaluate stage with `model=random protocol=crafter_paper` on the same seeds.
Both are scored with the same functions (crafter_exp.metrics: Crafter score with the 1 % offset, as
danijar/crafter analysis/common.py computes it). The paper's scoreboard: random 1.6 %, reward 2.1.

    python benchmarks/random_paper_protocol.py --episodes 100
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def stock(seeds: list[int]) -> pd.DataFrame:
    import crafter

    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        env = crafter.Env(seed=seed)
        env.reset()
        done, total, steps, info = False, 0.0, 0, {}
        while not done:
            _, reward, done, info = env.step(int(rng.integers(env.action_space.n)))
            total += reward
            steps += 1
        unlocked = [name for name, count in info["achievements"].items() if count > 0]
        rows.append(
            {
                "seed": seed,
                "steps": steps,
                "turns": steps,
                "total_reward": total,
                "achievements": unlocked,
                "num_achievements": len(unlocked),
            }
        )
    return pd.DataFrame(rows)


def ours(seeds: list[int], home: Path) -> pd.DataFrame:
    from crafter_exp.config import compose_config
    from crafter_exp.stages.evaluate import evaluate
    from crafter_exp.store.traces import TraceStore

    cfg = compose_config(
        [
            f"paths.home={home}",
            "tracking.enabled=false",
            "rollout.progress=false",
            "ray.num_workers=0",
            "model=random",
            "protocol=crafter_paper",
            f"protocol.episodes={len(seeds)}",
            f"eval.seed={seeds[0]}",
            "env.episodes=0",
        ]
    )
    result = evaluate(cfg)
    return TraceStore(cfg.paths.db).episodes([result.run_id])


def main() -> None:
    from crafter_exp import metrics as M
    from crafter_exp.envs import env_achievements

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1_000_000)
    args = ap.parse_args()
    seeds = list(range(args.seed, args.seed + args.episodes))
    achievements = env_achievements("crafter")
    print(f"random agent, Crafter paper protocol, {args.episodes} episodes (seeds {seeds[0]}..{seeds[-1]})")
    print(f"{'':24}{'score %':>9}{'reward':>9}{'achievements':>14}{'length':>9}{'seconds':>9}")
    print(f"{'paper scoreboard':24}{1.6:>9.2f}{2.1:>9.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, play in (("stock crafter", lambda: stock(seeds)), ("crafter-exp", lambda: ours(seeds, Path(tmp)))):
            t0 = time.perf_counter()
            df = play()
            seconds = time.perf_counter() - t0
            m = M.compute(df, achievements)
            print(
                f"{label:24}{m['crafter_score']:>9.2f}{m['mean_reward']:>9.2f}{m['mean_achievements']:>14.2f}"
                f"{m['episode_length']:>9.0f}{seconds:>9.1f}"
            )


if __name__ == "__main__":
    main()
