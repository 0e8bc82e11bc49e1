"""How long the statistics of a compare take: intervals and tests for every metric, side by side with scipy.

    python benchmarks/compare.py [--episodes 20 200] [--runs 4]

Prints, per run size: the seeded bootstrap (2000 resamples, every metric at once), the permutation test of one
run against the baseline (9999 permutations, every metric at once), scipy.stats.permutation_test doing the same
test for ONE per-episode metric, the ratio, and a whole compare() (tables, report, figures; MLflow off).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from episode_factory import CRAFTER_ACHIEVEMENTS, random_episodes, write_run  # noqa: E402

from crafter_exp import metrics as M  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    print(
        f"{'episodes/run':>12} {'metrics':>7} {'bootstrap 2000':>15} {'perm 9999 (all)':>16} "
        f"{'scipy perm (1)':>15} {'ratio/metric':>12} {'compare() x' + str(args.runs):>14}"
    )
    for n in args.episodes:
        rng = np.random.default_rng(0)
        runs = [pd.DataFrame(random_episodes(f"r{i}", 1.0 + i, range(n), rng)) for i in range(args.runs)]
        table, t_boot = timed(lambda: M.bootstrap(runs[0], CRAFTER_ACHIEVEMENTS, resamples=2000))
        _, t_perm = timed(lambda: M.significance(runs[0], runs[1], CRAFTER_ACHIEVEMENTS, permutations=9999))
        x = runs[0]["num_achievements"].to_numpy(float)
        y = runs[1]["num_achievements"].to_numpy(float)
        _, t_scipy = timed(
            lambda: stats.permutation_test(
                (x, y),
                lambda u, v, axis: np.mean(v, axis=axis) - np.mean(u, axis=axis),
                permutation_type="samples",
                n_resamples=9999,
                vectorized=True,
                rng=np.random.default_rng(0),
            )
        )
        with tempfile.TemporaryDirectory() as home:
            from crafter_exp.config import compose_config
            from crafter_exp.stages.compare import compare
            from crafter_exp.store.traces import TraceStore

            store = TraceStore(Path(home) / "data" / "traces.duckdb")
            for i, df in enumerate(runs):
                write_run(store, f"r{i}", df.to_dict("records"))
            cfg = compose_config([f"paths.home={home}", "tracking.enabled=false"])
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                _, t_compare = timed(lambda: compare(cfg, [f"r{i}" for i in range(args.runs)]))
        metrics = len(table)
        print(
            f"{n:>12} {metrics:>7} {t_boot:>14.2f}s {t_perm:>15.2f}s {t_scipy:>14.3f}s "
            f"{(t_perm / metrics) / t_scipy:>12.2f} {t_compare:>13.1f}s"
        )


if __name__ == "__main__":
    main()
