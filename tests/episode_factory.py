"""Hand-built episodes for metric / compare / review tests: rows of the `episodes` table, written to a real store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from crafter_exp.store.traces import EpisodeRecord, TraceStore

# FACTS.md: crafter 1.8.3's 22 achievements
CRAFTER_ACHIEVEMENTS = tuple(
    "collect_coal collect_diamond collect_drink collect_iron collect_sapling collect_stone collect_wood "
    "defeat_skeleton defeat_zombie eat_cow eat_plant make_iron_pickaxe make_iron_sword make_stone_pickaxe "
    "make_stone_sword make_wood_pickaxe make_wood_sword place_furnace place_plant place_stone place_table "
    "wake_up".split()
)


def use_crafter_achievements(monkeypatch) -> tuple[str, ...]:
    """The real `env_achievements("crafter")`; the FACTS list while the Crafter env module has not landed."""
    import crafter_exp.envs as envs

    try:
        return tuple(envs.env_achievements("crafter"))
    except ImportError:
        real = envs.env_achievements
        monkeypatch.setattr(
            envs, "env_achievements", lambda name: CRAFTER_ACHIEVEMENTS if name == "crafter" else real(name)
        )
        return CRAFTER_ACHIEVEMENTS


def episode(
    run_id: str,
    seed: int,
    achievements: Sequence[str] = (),
    *,
    env: str = "crafter",
    model: str = "m",
    steps: int = 100,
    turns: Optional[int] = None,
    reward: Optional[float] = None,
    success: Optional[bool] = None,
    task_type: Optional[str] = None,
    invalid: int = 0,
    parse_failures: int = 0,
    actions: Optional[dict[str, int]] = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cost: Optional[float] = None,
    termination: str = "max_steps",
    repeated: int = 0,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "seed": seed,
        "env": env,
        "policy": "scripted",
        "model": model,
        "provider": "local",
        "task_type": task_type,
        "steps": steps,
        "turns": steps if turns is None else turns,
        "total_reward": float(len(achievements)) if reward is None else reward,
        "achievements": list(achievements),
        "num_achievements": len(achievements),
        "success": success,
        "termination": termination,
        "invalid_actions": invalid,
        "parse_failures": parse_failures,
        "repeated_actions": repeated,
        "action_counts": actions if actions is not None else {"noop": steps // 2, "do": steps - steps // 2},
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "reasoning_tokens": 0,
        "llm_calls": 0,
        "cost": cost,
        "wall_time_s": 0.1,
    }


def random_episodes(
    run_id: str,
    mean_achievements: float,
    seeds: Sequence[int],
    rng: np.random.Generator,
    achievements: Sequence[str] = CRAFTER_ACHIEVEMENTS,
    **kw: Any,
) -> list[dict[str, Any]]:
    """Episodes unlocking Poisson(mean) achievements each (early achievements more likely, as in Crafter)."""
    weights = np.linspace(2.0, 0.2, len(achievements))
    out = []
    for seed in seeds:
        k = int(min(len(achievements), rng.poisson(mean_achievements)))
        names = list(rng.choice(achievements, size=k, replace=False, p=weights / weights.sum()))
        out.append(
            episode(
                run_id,
                int(seed),
                names,
                invalid=int(rng.integers(0, 10)),
                actions={"noop": int(rng.integers(1, 60)), "do": 40 + 5 * k, "move_left": 30},
                **kw,
            )
        )
    return out


def write_run(
    store: TraceStore,
    run_id: str,
    rows: list[dict[str, Any]],
    *,
    env: str = "crafter",
    model: Optional[str] = None,
    name: str = "test",
    stage: str = "eval",
    mlflow_run_id: Optional[str] = None,
) -> str:
    """Register a run and append its episodes (an empty `rows` leaves an empty run)."""
    store.register_run(
        {
            "run_id": run_id,
            "name": name,
            "stage": stage,
            "env": env,
            "policy": "scripted",
            "model": model or run_id,
            "provider": "local",
            "seed_start": 0,
            "episodes": len(rows),
            "config": "{}",
            "config_hash": "",
            "mlflow_run_id": mlflow_run_id,
        }
    )
    store.append([EpisodeRecord(dict(r, run_id=run_id)) for r in rows])
    return run_id
