"""Benchmark: episodes lost to transient malformed 200s (HTML bodies, `choices: []`), side by side in one run.

12 Crafter episodes x 30 steps through the real rollout stage (`model=openai`) against the loopback fake server
(tests/fake_openai_server.py), a seeded fraction of whose replies are malformed. Rows per fault rate:
- `max_retries=0`: no client retries, the policy re-asks at once up to `max_consecutive_errors` (3) times — what
  every malformed 200 got before it was handed to the client's retry loop;
- default (`max_retries=5`): the client retries it with backoff, as a 5xx.
Then the cost of the check the transport makes on every 200 (parse + look for choices), per call.

    python benchmarks/malformed_replies.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def row(rate: float, retries: int, episodes: int, steps: int) -> dict:
    from fake_openai_server import FakeOpenAIServer

    from crafter_exp.config import compose_config
    from crafter_exp.stages.rollout import rollout
    from crafter_exp.store.traces import TraceStore

    with tempfile.TemporaryDirectory() as home, FakeOpenAIServer(record_bodies=False) as srv:
        srv.flaky(rate, seed=1)
        cfg = compose_config(
            [
                f"paths.home={home}",
                "ray.num_workers=0",
                "rollout.progress=false",
                "tracking.enabled=false",
                "model=openai",
                f"model.base_url={srv.base_url}",
                "model.model=fake-model",
                "model.probe=false",
                f"model.max_retries={retries}",
                "model.concurrency=12",
                f"env.episodes={episodes}",
                f"env.max_steps={steps}",
            ]
        )
        t0 = time.perf_counter()
        result = rollout(cfg)
        wall = time.perf_counter() - t0
        store = TraceStore(cfg.paths.db)
        eps = store.query(f"SELECT termination, steps FROM episodes WHERE run_id = '{result.run_id}'")
        faults = sum(r["fault"] is not None for r in srv.requests)
        return {
            "lost": int((eps.termination == "api_error").sum()),
            "episodes": len(eps),
            "steps": int(eps.steps.sum()),
            "requests": len(srv.requests),
            "faults": faults,
            "wall": wall,
        }


def check_cost(calls: int = 20000) -> float:
    import json

    from fake_openai_server import FakeOpenAIServer, Reply

    from crafter_exp.policies.openai_policy import malformed_reason

    body = {"model": "m", "messages": [{"role": "user", "content": "word " * 60}]}
    with FakeOpenAIServer() as srv:  # a real reply body, as the server sends it
        content = json.dumps(srv.completion(body, Reply(content="<think>Try do.</think>\n<action>do</action>")))
    content = content.encode()
    t0 = time.perf_counter()
    for _ in range(calls):
        malformed_reason(content)
    return (time.perf_counter() - t0) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    row(0.0, 5, 2, 5)  # warm-up: imports, world generation, DuckDB
    print(f"{args.episodes} episodes x {args.steps} steps; malformed 200s: half non-JSON, half no choices")
    print(f"{'rate':>5} {'handling':<38} {'lost':>5} {'steps':>6} {'faults':>6} {'requests':>8} {'wall s':>7}")
    for rate in (0.1, 0.3):
        for retries, label in ((0, "max_retries=0 (re-asked at once, 3x)"), (5, "default (client retry + backoff)")):
            r = row(rate, retries, args.episodes, args.steps)
            print(
                f"{rate:>5.0%} {label:<38} {r['lost']:>2}/{r['episodes']:<2} {r['steps']:>6} {r['faults']:>6} "
                f"{r['requests']:>8} {r['wall']:>7.1f}"
            )
    print(f"check per 200 reply: {check_cost() * 1e6:.1f} us (client cost per call: ~1.4 ms, llm_concurrency.py)")


if __name__ == "__main__":
    main()
