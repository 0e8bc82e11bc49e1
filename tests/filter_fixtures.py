"""Hand-built trace databases for the filter/export tests: every episode's numbers are chosen so the right answer
of each criterion is known in advance."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pandas as pd

from crafter_exp.store.traces import EpisodeRecord, TraceStore


def make_episode(
    run_id: str,
    seed: int,
    *,
    turns: int = 4,
    unlock: Optional[dict[int, list[str]]] = None,
    reward: Optional[list[float]] = None,
    parse_fail: tuple[int, ...] = (),
    success: Any = None,
    model: str = "teacher",
    provider: str = "local",
    task_type: Optional[str] = None,
    termination: str = "max_steps",
    cost: Optional[float] = 0.0,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    invalid: int = 0,
    repeated: int = 0,
    env: str = "crafter",
    reply: Optional[Any] = None,
    observation: Optional[Any] = None,
) -> EpisodeRecord:
    """One episode; `unlock[turn]` = achievements first unlocked at that turn; reward defaults to +1 per unlock."""
    unlock = unlock or {}
    achievements = [a for t in sorted(unlock) for a in unlock[t]]
    rewards = reward or [float(len(unlock.get(t, []))) for t in range(turns)]
    steps = []
    for t in range(turns):
        obs = observation(seed, t) if callable(observation) else f"obs s{seed} t{t}"
        rep = reply(seed, t) if callable(reply) else f"<think>r{seed}.{t}</think>\n<action>do</action>"
        steps.append(
            {
                "run_id": run_id,
                "seed": seed,
                "turn": t,
                "step": t,
                "observation": obs,
                "reply": rep,
                "reasoning": None,
                "tool_calls": None,
                "actions": ["noop"] if t in parse_fail else ["do"],
                "parse_ok": t not in parse_fail,
                "valid": True,
                "reward": rewards[t],
                "unlocked": unlock.get(t, []),
                "info": {"t": t},
                "done": t == turns - 1,
            }
        )
    episode = {
        "run_id": run_id,
        "seed": seed,
        "env": env,
        "policy": "scripted",
        "model": model,
        "provider": provider,
        "task_type": task_type,
        "steps": turns,
        "turns": turns,
        "total_reward": float(sum(rewards)),
        "achievements": achievements,
        "num_achievements": len(achievements),
        "success": success,
        "termination": termination,
        "invalid_actions": invalid,
        "parse_failures": len(parse_fail),
        "repeated_actions": repeated,
        "action_counts": {"do": turns},
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "reasoning_tokens": 0,
        "llm_calls": 0,
        "cost": cost,
        "wall_time_s": 0.1,
    }
    return EpisodeRecord(episode=episode, steps=steps)


def register_run(
    store: TraceStore,
    run_id: str,
    *,
    name: str = "exp",
    env: str = "crafter",
    prompt: Optional[dict[str, Any]] = None,
    stage: str = "rollout",
    created: Optional[str] = None,
) -> None:
    prompt = (
        prompt
        if prompt is not None
        else {
            "template": "standard",
            "history": 0,
            "system_prompt_file": None,
            "action_mode": "text",
            "max_actions_per_turn": 1,
        }
    )
    store.register_run(
        {
            "run_id": run_id,
            "name": name,
            "stage": stage,
            "env": env,
            "policy": "scripted",
            "model": "teacher",
            "provider": "local",
            "seed_start": 0,
            "episodes": 0,
            "config": {"model": {"prompt": prompt}, "env": {"name": env}},
            "config_hash": "h",
            "code_version": "test",
            "created_at": pd.Timestamp(created) if created else pd.Timestamp.now(),
        }
    )


def build_store(path: Path, episodes: list[EpisodeRecord], run_id: str = "run-a", **run_kw: Any) -> TraceStore:
    store = TraceStore(path)
    register_run(store, run_id, **run_kw)
    store.append(episodes)
    return store
