"""The episode loop: play a batch of seeds, in lockstep (one `policy.act` per turn for every live episode) or, for
policies that decide turn by turn, each episode at its own pace.

Lockstep lets a policy batch (one forward pass for many episodes); per-turn futures let API calls overlap without
the slowest reply of a turn holding up every episode (and the envs step while other replies are on their way).
Knows environments and policies through their interfaces only; returns finished `EpisodeRecord`s, stores nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Optional

from crafter_exp.envs import Observation, TextEnv, make_env, prediction_f1
from crafter_exp.parsing import parse_changes, parse_prediction, parse_reply_why
from crafter_exp.policies import Decision, Policy, Turn
from crafter_exp.prompts import invalid_note, tool_result, with_note
from crafter_exp.store.traces import EpisodeRecord

if TYPE_CHECKING:
    from crafter_exp.config import EnvConfig


@dataclass
class _Episode:
    seed: int
    env: TextEnv
    obs: Observation
    start: float
    steps: int = 0
    reward: float = 0.0
    achievements: list[str] = field(default_factory=list)
    history: list[tuple[str, str, Any, str]] = field(default_factory=list)
    """(observation shown, reply, tool calls, tool result) of each earlier turn."""
    shown: str = ""
    """The observation text the policy is shown next (the env's, after the invalid-reply note when that is on)."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    actions: Counter = field(default_factory=Counter)
    invalid: int = 0
    parse_failures: int = 0
    repeated: int = 0
    last_actions: Optional[list[str]] = None
    termination: Optional[str] = None
    predictions: int = 0
    prediction_scores: list[float] = field(default_factory=list)
    prediction_scores_changed: list[float] = field(default_factory=list)  # of turns where something changed
    expert: Optional[str] = None
    """The env expert's action for the state of the turn being decided (asked for by the policy or `record_expert`)."""

    def __post_init__(self) -> None:
        self.shown = self.shown or self.obs.text


def _call_rows(run_id: str, seed: int, turn: int, decision: Decision) -> list[dict[str, Any]]:
    return [
        {"run_id": run_id, "seed": seed, "turn": turn, "call_index": i, **vars(call)}
        for i, call in enumerate(decision.calls)
    ]


def _finish(ep: _Episode, run_meta: dict[str, Any]) -> EpisodeRecord:
    calls = ep.calls
    costs = [c["cost"] for c in calls]
    info = ep.env.episode_info()
    episode = {
        **{k: run_meta.get(k) for k in ("run_id", "env", "policy", "model", "provider")},
        "seed": ep.seed,
        "task_type": info.get("task_type"),
        "steps": ep.steps,
        "turns": len(ep.rows),
        "total_reward": ep.reward,
        "achievements": list(ep.achievements),
        "num_achievements": len(ep.achievements),
        "success": info.get("success"),
        "termination": ep.termination,
        "invalid_actions": ep.invalid,
        "parse_failures": ep.parse_failures,
        "repeated_actions": ep.repeated,
        "expert_turns": sum(r["expert_action"] is not None for r in ep.rows),
        "expert_agreed": sum(
            r["expert_action"] is not None and r["actions"][:1] == [r["expert_action"]] for r in ep.rows
        ),
        "action_counts": dict(ep.actions),
        "prompt_tokens": sum(c["prompt_tokens"] or 0 for c in calls),
        "completion_tokens": sum(c["completion_tokens"] or 0 for c in calls),
        "reasoning_tokens": sum(c["reasoning_tokens"] or 0 for c in calls),
        "llm_calls": len(calls),
        # no calls costs nothing; one call without a price makes the total unknown (NULL), never a false zero
        "cost": None if any(c is None for c in costs) else float(sum(costs)),
        "wall_time_s": time.perf_counter() - ep.start,
        **_prediction_totals(ep),
    }
    ep.env.close()
    return EpisodeRecord(episode=episode, steps=ep.rows, calls=calls)


def _prediction_totals(ep: _Episode) -> dict[str, Any]:
    scored = ep.prediction_scores
    # does this env score predictions at all (None: no score columns, rather than a count of 0)
    scores = ep.env.state_change(ep.obs, ep.obs, []) is not None
    return {
        "predictions": ep.predictions,
        "predictions_scored": len(scored) if scores else None,
        "predictions_exact": sum(1 for f1 in scored if f1 == 1.0) if scores else None,
        "prediction_f1": sum(scored) / len(scored) if scored else None,
        "prediction_f1_changed": sum(changed) / len(changed) if (changed := ep.prediction_scores_changed) else None,
    }


def _score_prediction(
    ep: _Episode, row: dict[str, Any], before: Observation, unlocked: list[str], parse_ok: bool
) -> None:
    """The turn's <prediction> and how well it foresaw the change the environment then showed (columns of row)."""
    prediction = parse_prediction(row["reply"])
    actual = ep.env.state_change(before, ep.obs, unlocked)
    # a reply whose action did not parse played the fallback, not the action its prediction was about: not scored
    predicted = (
        parse_changes(prediction, ep.env.prediction_quantity, ep.env.achievements)
        if actual is not None and parse_ok
        else None
    )
    f1 = prediction_f1(predicted, actual) if predicted is not None and actual is not None else None
    ep.predictions += prediction is not None
    if f1 is not None:
        ep.prediction_scores.append(f1)
        if actual:
            ep.prediction_scores_changed.append(f1)
    row.update(prediction=prediction, predicted_changes=predicted, actual_changes=actual, prediction_f1=f1)


def _play_turn(
    ep: _Episode, decision: Decision, max_actions: int, max_steps: int, run_id: str, invalid_feedback: bool = False
) -> None:
    env = ep.env
    turn = len(ep.rows)
    ep.calls.extend(_call_rows(run_id, ep.seed, turn, decision))
    row: dict[str, Any] = {
        "run_id": run_id,
        "seed": ep.seed,
        "turn": turn,
        "step": ep.steps,
        "observation": ep.shown,
        "reply": decision.reply,
        "reasoning": decision.reasoning,
        "tool_calls": decision.tool_calls,
        "expert_action": ep.expert,
    }
    if decision.error is not None:
        # the policy already retried; the episode ends here and the filter excludes it by default
        ep.termination = "api_error"
        ep.rows.append(
            {
                **row,
                "actions": [],
                "parse_ok": False,
                "valid": True,
                "reward": 0.0,
                "unlocked": [],
                "info": {"error": decision.error},
                "done": True,
                "reply_problem": f"no reply: {decision.error}",
            }
        )
        return
    actions, ok, problem = parse_reply_why(
        decision.reply,
        decision.tool_calls,
        env.canonical_action,
        max_actions,
        reasoning=decision.reasoning,
        truncated=decision.finish_reason == "length",
    )
    if not actions:
        actions = [env.fallback_action or (ep.obs.actions[0] if ep.obs.actions else "")]
    if not ok:
        ep.parse_failures += 1
    if actions == ep.last_actions:
        ep.repeated += 1
    ep.last_actions = actions
    reward, unlocked, valid, done = 0.0, [], True, False
    played = []
    before = ep.obs
    for action in actions:
        result = env.step(action)
        played.append(action)
        ep.steps += 1
        ep.actions[action] += 1
        reward += result.reward
        valid = valid and result.valid
        ep.invalid += 0 if result.valid else 1
        if not result.valid and problem is None:
            problem = f"{action!r} could not be done (not admissible now)"
        for name in result.unlocked:
            if name not in ep.achievements:
                ep.achievements.append(name)
                unlocked.append(name)
        ep.obs = result.observation
        if result.done:
            done, ep.termination = True, result.termination or "done"
            break
        if ep.steps >= max_steps:
            done, ep.termination = True, "max_steps"
            break
    ep.reward += reward
    told = problem if invalid_feedback else None  # off: the agent is told nothing, not even in a tool result
    ep.history.append((row["observation"], decision.reply, decision.tool_calls, tool_result(played, told)))
    ep.shown = with_note(ep.obs.text, invalid_note(told, played) if told else None)
    _score_prediction(ep, row, before, unlocked, ok)
    ep.rows.append(
        {
            **row,
            "actions": played,
            "parse_ok": ok,
            "valid": valid,
            "reward": reward,
            "unlocked": unlocked,
            "info": ep.obs.info,
            "done": done,
            "reply_problem": problem,
        }
    )


def _turn(ep: _Episode, policy: Policy, record_expert: bool = False) -> Turn:
    ep.expert = ep.env.expert_action() if policy.needs_expert or record_expert else None
    return Turn(
        episode=ep.seed,
        observation=ep.shown,
        actions=ep.obs.actions,
        instructions=ep.env.instructions,
        history=ep.history,
        expert_action=ep.expert if policy.needs_expert else None,
    )


def play_batch(
    env_cfg: EnvConfig,
    policy: Policy,
    seeds: list[int],
    run_meta: dict[str, Any],
    max_actions: int = 1,
    invalid_feedback: bool = False,
    worlds: Optional[list[int]] = None,
    record_expert: bool = False,
) -> list[EpisodeRecord]:
    """Play one episode per seed; returns the finished episodes in seed order.

    `invalid_feedback`: start the next observation with a note saying the last reply was invalid and why
    (`model.prompt.invalid_feedback`).
    `worlds`: the world each episode plays, when it is not its seed (several episodes of one world — RL groups —
    need distinct keys: `seeds` are then the keys, unique, and the records carry them as their seed).
    `record_expert`: store the environment expert's action for every turn's state (`steps.expert_action`) whatever
    the policy plays: the labels of DAgger rounds (`rl=dagger`).

    Policies that decide turn by turn (`submit`, e.g. API calls) play every episode at its own pace: an episode takes
    its next turn as soon as its reply arrives. The others play in lockstep: one `act` for all live episodes a turn.
    """
    live: list[_Episode] = []
    for seed, world in zip(seeds, worlds if worlds is not None else seeds):
        env = make_env(env_cfg)  # a fresh env per seed: the seed alone names the world
        live.append(_Episode(seed=seed, env=env, obs=env.reset(world), start=time.perf_counter()))
        policy.reset(seed)
    play_turn = partial(
        _play_turn,
        max_actions=max_actions,
        max_steps=env_cfg.max_steps,
        run_id=run_meta["run_id"],
        invalid_feedback=invalid_feedback,
    )
    play = _each_at_its_pace if policy.decides_per_turn else _lockstep
    finished = play(live, policy, play_turn, run_meta, partial(_turn, record_expert=record_expert))
    return [finished[s] for s in seeds]


def _lockstep(
    live: list[_Episode],
    policy: Policy,
    play_turn: Callable[..., None],
    run_meta: dict[str, Any],
    turn_of: Callable[[_Episode, Policy], Turn] = _turn,
) -> dict[int, EpisodeRecord]:
    finished: dict[int, EpisodeRecord] = {}
    while live:
        turns = [turn_of(ep, policy) for ep in live]
        decisions = policy.act(turns)
        if len(decisions) != len(turns):
            raise RuntimeError(f"policy returned {len(decisions)} decisions for {len(turns)} turns")
        still = []
        for ep, decision in zip(live, decisions):
            play_turn(ep, decision)
            if ep.termination is None:
                still.append(ep)
            else:
                finished[ep.seed] = _finish(ep, run_meta)
        live = still
    return finished


def _each_at_its_pace(
    live: list[_Episode],
    policy: Policy,
    play_turn: Callable[..., None],
    run_meta: dict[str, Any],
    turn_of: Callable[[_Episode, Policy], Turn] = _turn,
) -> dict[int, EpisodeRecord]:
    finished: dict[int, EpisodeRecord] = {}
    pending: dict[Future, _Episode] = {}
    try:
        for ep in live:
            pending[policy.submit(turn_of(ep, policy))] = ep
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                ep = pending.pop(future)
                play_turn(ep, future.result())
                if ep.termination is None:
                    pending[policy.submit(turn_of(ep, policy))] = ep
                else:
                    finished[ep.seed] = _finish(ep, run_meta)
    except BaseException:  # Ctrl-C or a failing policy: no request outlives the batch
        for future in pending:
            future.cancel()
        raise
    return finished
