"""The episode loop: lockstep for batching policies, each episode at its own pace for per-turn (API) policies."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from crafter_exp.config import CrafterEnvConfig
from crafter_exp.policies import Decision, Policy, Turn
from crafter_exp.runner.play import play_batch

SLOW_SEED, DELAY_S, STEPS = 0, 0.04, 12


class OneSlowEpisode(Policy):
    """Answers `noop` at once, except for one episode whose every reply takes DELAY_S (a slow request)."""

    def __init__(self, per_turn: bool, fail_seed: int | None = None):
        self.decides_per_turn = per_turn
        self.fail_seed = fail_seed
        self.pool = ThreadPoolExecutor(8)

    def decide(self, turn: Turn) -> Decision:
        if turn.episode == self.fail_seed:
            raise RuntimeError(f"endpoint broke on episode {turn.episode}")
        if turn.episode == SLOW_SEED:
            time.sleep(DELAY_S)
        return Decision(reply="noop")

    def act(self, turns: list[Turn]) -> list[Decision]:
        return list(self.pool.map(self.decide, turns))

    def submit(self, turn: Turn):
        return self.pool.submit(self.decide, turn)

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def _play(policy: Policy, seeds=(0, 1, 2, 3)):
    try:
        return play_batch(CrafterEnvConfig(max_steps=STEPS), policy, list(seeds), {"run_id": "r", "env": "crafter"})
    finally:
        policy.close()


def test_per_turn_policy_lets_fast_episodes_finish_without_waiting_for_a_slow_one():
    records = _play(OneSlowEpisode(per_turn=True))
    assert [r.episode["seed"] for r in records] == [0, 1, 2, 3]
    assert all(r.episode["steps"] == STEPS and r.episode["termination"] == "max_steps" for r in records)
    assert all(step["actions"] == ["noop"] for r in records for step in r.steps)
    slow = records[0].episode["wall_time_s"]
    assert slow >= STEPS * DELAY_S
    assert max(r.episode["wall_time_s"] for r in records[1:]) < slow / 3


def test_lockstep_policy_holds_every_episode_to_the_slowest_reply():
    records = _play(OneSlowEpisode(per_turn=False))
    slow = records[0].episode["wall_time_s"]
    assert min(r.episode["wall_time_s"] for r in records[1:]) > slow * 0.8


def test_a_failing_turn_stops_the_batch_with_its_error():
    with pytest.raises(RuntimeError, match="endpoint broke on episode 2"):
        _play(OneSlowEpisode(per_turn=True, fail_seed=2))
