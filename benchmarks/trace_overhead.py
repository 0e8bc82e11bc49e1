"""Benchmark: the cost of MLflow traces (tracking.traces) on a rollout, traces off vs on, side by side in one run.

The same rollout through the real stage (tracking on: a real sqlite MLflow store in a temp folder), once with
`tracking.traces=off` and once with `tracking.traces=llm` (a trace per episode, a span per turn), alternating,
`--repeats` times each. Policies: `model=openai` against the loopback fake chat-completions server
(tests/fake_openai_server.py, its own process) answering after `--latency` seconds, and, with `--checkpoint`,
`model=hf_local` playing a trained student (batched CPU decoding: the fastest LLM turns this project has, so the
largest relative cost). Wall time includes the trace flush at the end of the rollout.

    python benchmarks/trace_overhead.py                                   # fake server, 0.05 s latency
    python benchmarks/trace_overhead.py --checkpoint data/checkpoints/default/<hash>
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from llm_concurrency import ServerProcess  # noqa: E402  (the fake server in its own process)


def run(home: Path, name: str, model: list[str], traces: str, episodes: int, steps: int) -> dict:
    from crafter_exp.config import compose_config
    from crafter_exp.stages.rollout import rollout

    cfg = compose_config(
        [
            f"paths.home={home}",
            f"tracking.uri=sqlite:///{home}/mlflow.db",
            "rollout.progress=false",
            f"name={name}",
            "ray.num_workers=0",
            f"env.episodes={episodes}",
            f"env.max_steps={steps}",
            f"tracking.traces={traces}",
            "tracking.trace_episodes=null",  # every episode: the per-span cost, not the default cap
            *model,
        ]
    )
    t0, c0 = time.perf_counter(), time.process_time()
    result = rollout(cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0  # CPU: every thread (the trace writer too)
    turns = int(result.metrics["episode_length"] * result.metrics["episodes"])
    return {"wall": wall, "cpu": cpu, "turns": turns, "traced": int(result.metrics.get("traced_episodes", 0))}


def compare(label: str, home: Path, model: list[str], episodes: int, steps: int, repeats: int) -> None:
    rows: dict[str, list[dict]] = {"off": [], "llm": []}
    slug = model[0].split("=")[1]  # run names: model=openai -> openai
    run(home, f"warm-{slug}", model, "off", 2, 5)  # imports, store and experiment creation, model load
    for i in range(repeats):
        for mode in ("off", "llm") if i % 2 == 0 else ("llm", "off"):
            rows[mode].append(run(home, f"{slug}-{mode}-{i}", model, mode, episodes, steps))
    off = statistics.median(r["wall"] for r in rows["off"])
    on = statistics.median(r["wall"] for r in rows["llm"])
    cpu_off = statistics.median(r["cpu"] for r in rows["off"])
    cpu_on = statistics.median(r["cpu"] for r in rows["llm"])
    turns = rows["llm"][0]["turns"]
    print(f"{label}: {episodes} episodes x {steps} steps ({turns} turns = spans), median of {repeats}")
    print(f"  traces off  {off:7.2f} s  {turns / off:8.1f} turns/s  CPU {cpu_off:6.2f} s")
    print(
        f"  traces llm  {on:7.2f} s  {turns / on:8.1f} turns/s  CPU {cpu_on:6.2f} s  "
        f"({rows['llm'][0]['traced']} traces)"
    )
    print(
        f"  overhead    {on - off:+7.2f} s  = {1000 * (on - off) / turns:.2f} ms per span, "
        f"{100 * (on - off) / off:+.1f} % ({on / off:.2f}x); CPU {1000 * (cpu_on - cpu_off) / turns:.2f} ms per span"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--checkpoint", default=None, help="a trained hf_local checkpoint folder (optional row)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        with ServerProcess(args.latency) as srv:
            compare(
                f"openai, fake server {args.latency:g} s latency",
                home,
                [
                    "model=openai",
                    f"model.base_url={srv.base_url}",
                    "model.model=fake-model",
                    f"model.concurrency={args.episodes}",
                ],
                args.episodes,
                args.steps,
                args.repeats,
            )
        if args.checkpoint:
            compare(
                "hf_local student",
                home,
                ["model=hf_local", f"model.path={Path(args.checkpoint).resolve()}"],
                args.episodes,
                args.steps,
                args.repeats,
            )


if __name__ == "__main__":
    main()
