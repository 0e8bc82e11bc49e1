"""A small synthetic chat dataset with a learnable observation -> action rule (for tests and benchmarks).

The rule needs the observation: face a resource -> `do`; otherwise move towards the nearest listed object. A model
that ignores the observation scores about 1/5 (five actions occur); one that reads it can reach 100 %.
It is written like the filter stage's output: `train.jsonl` + `manifest.json` (format, files, digest, prompt).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Optional

from crafter_exp.files import write_json_atomic

OBJECTS = ("tree", "stone", "water", "grass", "cow", "sand", "coal")
DIRECTIONS = {"north": "move_up", "south": "move_down", "east": "move_right", "west": "move_left"}
SYSTEM = "Reply with one action name only."
BARE_PROMPT = {
    "template": "bare",
    "history": 0,
    "system_prompt_file": None,
    "action_mode": "text",
    "max_actions_per_turn": 1,
}


def synthetic_observation(rng: random.Random) -> tuple[str, str]:
    """(observation text, the rule's action)."""
    objs = rng.sample(OBJECTS, rng.randint(2, 4))
    dists = sorted(rng.randint(1, 6) for _ in objs)
    lines = [f"{o} {d} steps {rng.choice(list(DIRECTIONS))}" for o, d in zip(objs, dists)]
    # a resource in front 1 time in 5, so no single action covers more than ~20-25 % of the data
    facing = rng.choice(("tree", "stone")) if rng.random() < 0.2 else rng.choice(("grass", "sand", "water"))
    health = rng.randint(1, 9)
    obs = "nearest:\n" + "\n".join(lines) + f"\nfacing {facing}\nhealth {health}/9"
    if facing in ("tree", "stone"):
        return obs, "do"
    nearest_dir = lines[0].rsplit(" ", 1)[1]
    return obs, DIRECTIONS[nearest_dir]


def synthetic_messages(obs: str, action: Optional[str] = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": obs}]
    if action is not None:
        msgs.append({"role": "assistant", "content": action})
    return msgs


def write_synthetic_dataset(folder: str | Path, n: int, seed: int = 0, fmt: str = "jsonl") -> Path:
    """Write `n` examples (+ manifest.json last) into `folder`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        obs, action = synthetic_observation(rng)
        rows.append({"messages": synthetic_messages(obs, action)})
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = "train.parquet"
        pq.write_table(pa.Table.from_pylist([{"messages": json.dumps(r["messages"])} for r in rows]), folder / name)
    else:
        name = "train.jsonl"
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest: dict[str, Any] = {
        "format": "parquet" if fmt == "parquet" else "openai_chat",
        "files": [name],
        "examples": n,
        "episodes": 0,
        "digest": f"synthetic-{n}-{seed}",
        "source_runs": [],
        "env": "crafter",
        "prompt": BARE_PROMPT,
    }
    write_json_atomic(folder / "manifest.json", manifest)
    return folder
