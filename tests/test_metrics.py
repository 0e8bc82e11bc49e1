"""Metric functions against hand-computed values; bootstrap intervals; permutation tests; custom metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from episode_factory import CRAFTER_ACHIEVEMENTS, episode, random_episodes, write_run
from scipy import stats

from crafter_exp import metrics as M
from crafter_exp.store.traces import TraceStore

ACH4 = ("a", "b", "c", "d")


@pytest.fixture
def four() -> pd.DataFrame:
    """Four episodes whose every metric is computed by hand below."""
    return pd.DataFrame(
        [
            episode(
                "r",
                0,
                ["a", "b", "c"],
                steps=10,
                turns=5,
                reward=3.0,
                invalid=1,
                parse_failures=0,
                actions={"noop": 2, "do": 3},
                prompt_tokens=100,
                completion_tokens=20,
                cost=0.01,
            ),
            episode(
                "r",
                1,
                ["a"],
                steps=20,
                turns=10,
                reward=1.0,
                invalid=0,
                parse_failures=2,
                repeated=4,
                actions={"noop": 5, "do": 5},
                prompt_tokens=50,
                completion_tokens=10,
            ),
            episode(
                "r", 2, [], steps=5, turns=5, reward=0.0, invalid=5, parse_failures=5, repeated=4, actions={"noop": 5}
            ),
            episode(
                "r",
                3,
                ["a", "b", "c", "d"],
                steps=10,
                turns=10,
                reward=3.5,
                invalid=2,
                parse_failures=1,
                actions={"do": 10},
                prompt_tokens=30,
                cost=0.03,
            ),
        ]
    )


HAND = {
    "mean_achievements": 2.0,
    "achievement_rate": 50.0,  # k=3: episodes 0 and 3
    "crafter_score": math.exp((math.log(76) + math.log(51) + math.log(51) + math.log(26)) / 4) - 1,
    "progression": (75 + 25 + 0 + 100) / 4,
    "distinct_achievements": 4.0,
    "mean_reward": 7.5 / 4,
    "efficiency": (3 / 5 + 1 / 10 + 0 + 3.5 / 10) / 4,
    "invalid_action_rate": (10 + 0 + 100 + 20) / 4,
    "parse_failure_rate": (0 + 20 + 100 + 10) / 4,
    "repeated_action_rate": (0 + 40 + 80 + 0) / 4,
    "episode_length": 45 / 4,
    "tokens_per_episode": (120 + 60 + 0 + 30) / 4,
    "cost_per_episode": 0.02,  # mean over the episodes with a known cost
    "achievement/a": 75.0,
    "achievement/b": 50.0,
    "achievement/c": 50.0,
    "achievement/d": 25.0,
    "action/noop": 40.0,  # 12 of 30 actions
    "action/do": 60.0,
}


def test_metrics_match_hand_computed_values(four):
    values = M.compute(four, ACH4, k=3)
    assert set(values) == set(HAND)  # success_rate / steps_to_success do not apply: left out, not NaN
    for name, expected in HAND.items():
        assert values[name] == pytest.approx(expected), name
    assert M.compute(four, ACH4, k=1)["achievement_rate"] == 75.0
    assert M.per_achievement_rates(four, ACH4).to_dict() == {"a": 75.0, "b": 50.0, "c": 50.0, "d": 25.0}
    assert M.action_distribution(four).to_dict() == {"do": 60.0, "noop": 40.0}


def test_crafter_score_definition():
    assert M.crafter_score([0.0] * 22) == 0.0  # nothing unlocked: S = exp(mean ln 1) - 1 = 0
    assert M.crafter_score([100.0] * 22) == pytest.approx(100.0)
    assert M.crafter_score([50.0, 0.0]) == pytest.approx(math.sqrt(51) - 1)  # geometric, not arithmetic, mean
    nothing = pd.DataFrame([episode("r", s, []) for s in range(5)])
    values = M.compute(nothing, CRAFTER_ACHIEVEMENTS)
    assert values["crafter_score"] == 0.0 and values["progression"] == 0.0 and values["distinct_achievements"] == 0
    # progression is over all 22 achievements (BALROG), not only those seen
    one = pd.DataFrame([episode("r", 0, ["collect_wood", "place_table"])])
    assert M.compute(one, CRAFTER_ACHIEVEMENTS)["progression"] == pytest.approx(100 * 2 / 22)
    # Crafter score over ALL 22: one achievement at 100 % -> exp(ln(101) / 22) - 1
    wood = pd.DataFrame([episode("r", 0, ["collect_wood"])])
    assert M.compute(wood, CRAFTER_ACHIEVEMENTS)["crafter_score"] == pytest.approx(math.exp(math.log(101) / 22) - 1)


def test_success_metrics_alfworld():
    df = pd.DataFrame(
        [
            episode("r", 0, ["won"], env="alfworld", steps=8, success=True, task_type="pick"),
            episode("r", 1, [], env="alfworld", steps=50, success=False, task_type="pick"),
            episode("r", 2, ["won"], env="alfworld", steps=12, success=True, task_type="clean"),
        ]
    )
    values = M.compute(df, ("won",))
    assert values["success_rate"] == pytest.approx(200 / 3)
    assert values["steps_to_success"] == 10.0
    assert values["success/pick"] == 50.0 and values["success/clean"] == 100.0


def test_duckdb_round_trip_gives_same_metrics(tmp_path, four):
    """The store returns list columns as arrays, JSON as text, NULL booleans as <NA>: same numbers."""
    store = TraceStore(tmp_path / "t.duckdb")
    write_run(store, "r", four.to_dict("records"))
    back = store.episodes(["r"])
    assert M.compute(back, ACH4) == pytest.approx(M.compute(four, ACH4))
    summary = M.summary(back, ACH4)
    assert summary["episodes"] == 4 and all(math.isfinite(v) for v in summary.values())


def test_bootstrap_contains_point_and_is_seeded():
    rng = np.random.default_rng(3)
    df = pd.DataFrame(random_episodes("r", 3.0, range(30), rng))
    a = M.bootstrap(df, CRAFTER_ACHIEVEMENTS, resamples=1000, seed=7)
    assert {"mean_achievements", "crafter_score", "distinct_achievements", "action/do"} <= set(a["metric"])
    assert ((a["ci_low"] <= a["value"] + 1e-9) & (a["value"] <= a["ci_high"] + 1e-9)).all()
    pd.testing.assert_frame_equal(a, M.bootstrap(df, CRAFTER_ACHIEVEMENTS, resamples=1000, seed=7))
    other = M.bootstrap(df, CRAFTER_ACHIEVEMENTS, resamples=1000, seed=8)
    assert not np.allclose(a["ci_low"], other["ci_low"])
    # the interval of a mean agrees with scipy's percentile bootstrap
    mean = a.set_index("metric").loc["mean_achievements"]
    ref = stats.bootstrap(
        (df["num_achievements"].to_numpy(float),),
        np.mean,
        n_resamples=5000,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    assert mean["ci_low"] == pytest.approx(ref.low, abs=0.25)
    assert mean["ci_high"] == pytest.approx(ref.high, abs=0.25)
    assert mean["ci_high"] - mean["ci_low"] > 0.3  # a real interval, not a point


def test_significance_flags_clear_difference_not_null():
    rng = np.random.default_rng(0)
    seeds = range(1000, 1020)
    weak = pd.DataFrame(random_episodes("weak", 1.0, seeds, rng))
    strong = pd.DataFrame(random_episodes("strong", 5.0, seeds, rng))
    same = pd.DataFrame(random_episodes("same", 1.0, seeds, rng))
    clear = M.significance(weak, strong, CRAFTER_ACHIEVEMENTS, permutations=4999, seed=0).set_index("metric")
    assert clear.loc["mean_achievements", "p"] < 0.01 and clear.loc["crafter_score", "p"] < 0.01
    assert clear.loc["mean_achievements", "diff"] > 0
    assert clear["test"].iloc[0].startswith("paired")
    null = M.significance(weak, same, CRAFTER_ACHIEVEMENTS, permutations=4999, seed=0).set_index("metric")
    assert null.loc["mean_achievements", "p"] > 0.05 and null.loc["crafter_score", "p"] > 0.05
    identical = M.significance(weak, weak.assign(run_id="copy"), CRAFTER_ACHIEVEMENTS, permutations=999)
    assert (identical["p"] == 1.0).all()  # no difference at all: every permutation is as extreme


def test_permutation_p_values_match_scipy():
    rng = np.random.default_rng(1)
    a = pd.DataFrame(random_episodes("a", 2.0, range(25), rng))
    b = pd.DataFrame(random_episodes("b", 2.8, range(25), rng))
    ours = M.significance(a, b, CRAFTER_ACHIEVEMENTS, permutations=9999, seed=0).set_index("metric")
    x, y = a["num_achievements"].to_numpy(float), b["num_achievements"].to_numpy(float)
    diff = lambda u, v, axis: np.mean(v, axis=axis) - np.mean(u, axis=axis)  # noqa: E731
    paired = stats.permutation_test(
        (x, y), diff, permutation_type="samples", n_resamples=9999, rng=np.random.default_rng(0)
    ).pvalue
    assert ours.loc["mean_achievements", "p"] == pytest.approx(paired, abs=0.02)

    c = pd.DataFrame(random_episodes("c", 2.8, range(100, 130), rng))  # other seeds: unpaired
    ours = M.significance(a, c, CRAFTER_ACHIEVEMENTS, permutations=9999, seed=0).set_index("metric")
    assert ours.loc["mean_achievements", "test"].startswith("permutation (episodes shuffled")
    z = c["num_achievements"].to_numpy(float)
    independent = stats.permutation_test(
        (x, z), diff, permutation_type="independent", n_resamples=9999, rng=np.random.default_rng(0)
    ).pvalue
    assert ours.loc["mean_achievements", "p"] == pytest.approx(independent, abs=0.02)
    with pytest.raises(ValueError, match="same seeds"):
        M.significance(a, c, CRAFTER_ACHIEVEMENTS, paired=True)


def test_adjust_pvalues():
    p = [0.01, 0.04, 0.03, 0.5]
    assert M.adjust_pvalues(p, "bh") == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert M.adjust_pvalues(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert M.adjust_pvalues(p, "none") == pytest.approx(p)
    with pytest.raises(ValueError, match="correction"):
        M.adjust_pvalues(p, "bonferonni")


def long_episodes(df: pd.DataFrame) -> dict[str, float]:
    return {"long_episodes": 100.0 * float((df["steps"] >= 15).mean())}


def test_custom_metrics_by_target(four, monkeypatch):
    from omegaconf import OmegaConf

    four = four.assign(termination=["death", "max_steps", "death", "max_steps"])
    specs = OmegaConf.create(
        [
            {"_target_": "crafter_exp.metrics.termination_rates", "kinds": ["death"]},
            {"_target_": f"{__name__}.long_episodes"},
        ]
    )
    custom = M.load_custom_metrics(specs)
    values = M.compute(four, ACH4, custom=custom)
    assert values["termination/death"] == 50.0
    assert values["long_episodes"] == 25.0  # only the 20-step episode
    table = M.bootstrap(four, ACH4, resamples=200, custom=custom, custom_resamples=50).set_index("metric")
    assert table.loc["termination/death", "ci_low"] <= 50.0 <= table.loc["termination/death", "ci_high"]
    tests = M.significance(
        four, four.assign(run_id="x"), ACH4, permutations=200, custom=custom, custom_resamples=50
    ).set_index("metric")
    assert tests.loc["termination/death", "p"] == 1.0

    with pytest.raises(ValueError, match="cannot be loaded"):
        M.load_custom_metrics([{"_target_": "crafter_exp.metrics.no_such_function"}])
    with pytest.raises(ValueError, match="_target_"):
        M.load_custom_metrics([{"fn": "x"}])
    bad = M.load_custom_metrics([{"_target_": "builtins.len"}])
    with pytest.raises(ValueError, match="must return"):
        M.compute(four, ACH4, custom=bad)


def test_free_text_actions_keep_the_most_played():
    """ALFWorld-style commands: hundreds of distinct actions -> the 19 most played + (other), shares sum to 100."""
    rows = [
        episode(
            "r",
            s,
            [],
            env="alfworld",
            actions={**{f"go to shelf {i}": 1 for i in range(40)}, "look": 10 + s, "inventory": 5},
        )
        for s in range(3)
    ]
    df = pd.DataFrame(rows)
    assert len(M.top_actions(df)) == M.MAX_ACTIONS - 1 and {"look", "inventory"} <= set(M.top_actions(df))
    shares = M.action_distribution(df)
    assert len(shares) == M.MAX_ACTIONS and M.OTHER_ACTIONS in shares.index
    assert shares.sum() == pytest.approx(100.0)
    values = M.compute(df, ("won",))
    assert sum(v for k, v in values.items() if k.startswith("action/")) == pytest.approx(100.0)
    assert values["action/look"] == pytest.approx(100 * 33 / (120 + 33 + 15))
