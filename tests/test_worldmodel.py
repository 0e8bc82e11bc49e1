"""World-model predictions as data: the `<prediction>` of a `world_model` reply parsed into its own column, scored
against the change the environment showed next, reported by compare, selected on by the filter, kept or dropped by
the SFT export.

Unit part: the parser, the F1, Crafter's state change. End-to-end part: real rollouts with model=openai against the
loopback server (tests/fake_openai_server.py) replying right, wrong and unscorable predictions, into a real DuckDB
store, then compare, filter and export over it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from pathlib import Path

import pytest
from conftest import project_overrides
from fake_openai_server import FakeOpenAIServer, Reply

from crafter_exp import prompts
from crafter_exp.config import CrafterEnvConfig, FilterConfig, PromptConfig, compose_config
from crafter_exp.envs import env_instructions, make_env, prediction_f1
from crafter_exp.envs.base import TextEnv
from crafter_exp.errors import UserError
from crafter_exp.filtering.criteria import check_filter_config
from crafter_exp.parsing import parse_changes, parse_prediction
from crafter_exp.store import schema
from crafter_exp.store.traces import TraceStore

KEY_ENV = "CRAFTER_EXP_TEST_WM_KEY"


@pytest.fixture(scope="module")
def crafter():
    env = make_env(CrafterEnvConfig())
    yield env
    env.close()


# ----------------------------------------------------------------------------------------------------- parsing


def test_prediction_text_is_the_tag_outside_think():
    reply = (
        "<think>maybe <prediction>wood +9</prediction></think>\n<prediction> wood +1 </prediction>\n<action>do</action>"
    )
    assert parse_prediction(reply) == "wood +1"
    assert parse_prediction("<think>x</think><action>do</action>") is None
    assert parse_prediction("<prediction>  </prediction><action>do</action>") is None
    assert parse_prediction(None) is None
    assert parse_prediction("<PREDICTION>a</PREDICTION> <prediction>b</prediction>") == "a\nb"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("wood +1", {"wood": 1}),
        ("wood +1, energy -1", {"wood": 1, "energy": -1}),
        ("+1 wood; -2 food", {"wood": 1, "food": -2}),
        ("wood +1 stone -1", {"wood": 1, "stone": -1}),
        ("I expect wood: +2 and water -1", {"wood": 2, "drink": -1}),
        ("wood pickaxe +1, wood -1", {"wood_pickaxe": 1, "wood": -1}),
        ("unlock collect_wood, wood +1", {"wood": 1, "collect_wood": 1}),
        ("health \u22122", {"health": -2}),
        ("no change", {}),
        ("Nothing changes.", {}),
        ("I step closer to the tree; no change in inventory.", {}),
        ("wood +1, wood -1", {}),
        ("Much the same view.", None),
        ("tree +1", None),  # not a quantity: free text
        ("unlock wood", None),  # `unlock` names achievements only
        ("", None),
    ],
)
def test_changes_read_off_a_crafter_prediction(crafter, text, expected):
    assert parse_changes(text, crafter.prediction_quantity, crafter.achievements) == expected


def test_f1_of_predicted_vs_actual_changes():
    assert prediction_f1({}, {}) == 1.0  # no change, rightly
    assert prediction_f1({"wood": 1}, {"wood": 1}) == 1.0
    assert prediction_f1({"wood": 2}, {"wood": 1}) == 0.0  # the amount counts
    assert prediction_f1({"wood": -1}, {"wood": 1}) == 0.0  # so does the sign
    assert prediction_f1({"wood": 1}, {}) == 0.0
    assert prediction_f1({}, {"food": -1}) == 0.0
    # 1 right of 2 predicted, 1 of 1 actual: 2 * 1 / (2 + 1)
    assert prediction_f1({"wood": 1, "energy": -1}, {"wood": 1}) == pytest.approx(2 / 3)
    # 1 right of 1 predicted, 1 of 3 actual: 2 * 1 / (1 + 3)
    assert prediction_f1({"wood": 1}, {"wood": 1, "collect_wood": 1, "food": -1}) == pytest.approx(0.5)


# -------------------------------------------------------------------------------------- the env's state change


def test_crafter_state_change_is_inventory_vitals_and_unlocks(crafter):
    """Play the expert until the first wood: that turn changed wood by +1 and unlocked collect_wood; every turn's
    change is exactly the inventory difference the observations' info shows, plus the unlocks."""
    obs = crafter.reset(3)
    seen_wood = False
    for _ in range(300):
        result = crafter.step(crafter.expert_action())
        change = crafter.state_change(obs, result.observation, result.unlocked)
        before, after = obs.info["inventory"], result.observation.info["inventory"]
        diff = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        assert change == {**diff, **{a: 1 for a in result.unlocked}}
        if "collect_wood" in result.unlocked:
            assert change["wood"] == 1 and change["collect_wood"] == 1
            seen_wood = True
            break
        obs = result.observation
    assert seen_wood, "the expert found no wood in 300 steps"
    obs = crafter.reset(3)
    assert crafter.state_change(obs, obs, []) == {}


def test_alfworld_does_not_score_predictions():
    if importlib.util.find_spec("alfworld") is None:
        pytest.skip("alfworld not installed")
    from crafter_exp.envs.alfworld import AlfworldTextEnv

    # ALFWorld's state is free text (no quantities): predictions are stored as text only, never scored
    assert AlfworldTextEnv.state_change is TextEnv.state_change
    assert AlfworldTextEnv.prediction_quantity is TextEnv.prediction_quantity


def test_min_prediction_f1_out_of_range_is_one_clear_error():
    with pytest.raises(UserError, match=r"filter.min_prediction_f1 must be in \[0, 1\], got 1.5"):
        check_filter_config(FilterConfig(min_prediction_f1=1.5))


def test_a_store_from_before_the_prediction_columns_gets_them(tmp_path):
    store = TraceStore(tmp_path / "old.duckdb")
    store.init()
    with store.connect() as con:
        for table, column in (("steps", "prediction"), ("steps", "prediction_f1"), ("episodes", "prediction_f1")):
            con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    store.init()
    with store.connect(read_only=True) as con:
        for table in ("steps", "episodes"):
            names = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
            assert set(schema.column_names(table)) <= set(names)


# ------------------------------------------------------------------------------------------------ end to end

FIXED = {
    # a few noops from the start change nothing in Crafter: "wood +1, energy -1" is wrong on every turn
    "wrong": "<think>wait</think>\n<prediction>wood +1, energy -1</prediction>\n<action>noop</action>",
    "vague": "<think>wait</think>\n<prediction>Much the same view.</prediction>\n<action>noop</action>",
    # the action does not parse (the fallback is played): its prediction is stored, not scored
    "unparsed": "<think>wait</think>\n<prediction>no change</prediction>\n<action>dance</action>",
}
MOVES = {"north": "move_up", "south": "move_down", "east": "move_right", "west": "move_left"}


def walk_to_a_tree(observation: str) -> tuple[str, str]:
    """(action, prediction) of a player that walks to the nearest tree (columns first) and chops it: walking changes
    nothing, the first chop gives wood and unlocks collect_wood, later chops give wood."""
    if "Facing: tree" in observation:
        has_wood = "wood" in observation.split("Inventory:")[1]
        return "do", "wood +1" if has_wood else "wood +1, unlock collect_wood"
    m = re.search(r"tree (\d+) (north|south)(?: (\d+) (east|west))?[,.]", observation)
    if m:
        return MOVES[m.group(4) or m.group(2)], "no change"
    m = re.search(r"tree \d+ (east|west)[,.]", observation)
    return (MOVES[m.group(1)], "no change") if m else ("noop", "no change")


def responder(kind: str):
    def respond(body: dict) -> Reply:
        if kind in FIXED:
            return Reply(content=FIXED[kind])
        action, prediction = walk_to_a_tree(body["messages"][-1]["content"])
        if kind == "lazy":
            prediction = "no change"  # right while walking, wrong at every chop
        return Reply(content=f"<think>go</think>\n<prediction>{prediction}</prediction>\n<action>{action}</action>")

    return respond


RUNS = ("sighted", "lazy", *FIXED)


def _cfg(home: Path, srv: FakeOpenAIServer, *extra: str):
    return compose_config(
        project_overrides(home)
        + [
            "model=openai",
            f"model.base_url={srv.base_url}",
            "model.model=fake-model",
            f"model.api_key_env={KEY_ENV}",
            "model.max_retries=1",
            "model.timeout=5",
            "env.episodes=2",
            "env.max_steps=8",
            "tracking.enabled=false",
            "model.prompt.template=world_model",
            "name=wm",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    """Five runs of seeds 0 and 1 x 8 turns into one store, one per kind of reply."""
    from crafter_exp.stages.rollout import rollout

    home = tmp_path_factory.mktemp("wm_home")
    os.environ[KEY_ENV] = "test-key"
    try:
        for run_id in RUNS:
            with FakeOpenAIServer(responder=responder(run_id)) as srv:
                result = rollout(_cfg(home, srv, f"rollout.run_id={run_id}"))
                assert result.new_episodes == 2
                sent = srv.requests[-1]["body"]["messages"][0]["content"]
                assert "`name +N` / `name -N`" in sent  # the prompt says how a scored prediction reads
    finally:
        os.environ.pop(KEY_ENV, None)
    return home


@pytest.mark.slow
def test_rollout_stores_and_scores_predictions(played):
    store = TraceStore(played / "data" / "traces.duckdb")
    steps = store.query("SELECT * FROM steps ORDER BY run_id, seed, turn")
    by_run = {r: steps[steps.run_id == r] for r in RUNS}
    assert all(len(s) == 16 for s in by_run.values())
    sighted, lazy, wrong, vague, unparsed = (by_run[r] for r in RUNS)
    for s in by_run.values():
        # actual_changes is the difference of the inventories the env showed before and after the turn
        infos = [json.loads(i)["inventory"] for i in s["info"]]
        for (_seed, turn, actual), after, before in zip(
            s[["seed", "turn", "actual_changes"]].values, infos, [None] + infos[:-1]
        ):
            if turn > 0:
                diff = {k: v - before[k] for k, v in after.items() if v != before[k]}
                assert {k: v for k, v in json.loads(actual).items() if not k.startswith("collect_")} == diff
    # walking to a tree and chopping it: every prediction right, wood and collect_wood on the first chop
    chops = sighted[sighted.actual_changes.map(json.loads).map(bool)]
    assert len(chops) >= 2 and {seed for seed in chops.seed} == {0, 1}
    assert json.loads(chops.actual_changes.iloc[0]) == {"wood": 1, "collect_wood": 1}
    assert chops.predicted_changes.tolist() == chops.actual_changes.tolist()
    assert sighted.prediction_f1.tolist() == [1.0] * 16
    # the same walk predicting "no change" throughout: right while walking, 0 at each chop
    assert lazy.actions.map(list).tolist() == sighted.actions.map(list).tolist()
    lazy_chops = lazy[lazy.actual_changes.map(json.loads).map(bool)]
    assert lazy_chops.prediction_f1.tolist() == [0.0] * len(chops)
    assert lazy.prediction_f1.sum() == 16 - len(chops)
    # noops: nothing changed, the fixed wrong guess scores 0 on every turn
    assert all(json.loads(a) == {} for a in wrong.actual_changes)
    assert set(wrong.prediction) == {"wood +1, energy -1"} and wrong.prediction_f1.tolist() == [0.0] * 16
    assert [json.loads(p) for p in wrong.predicted_changes] == [{"wood": 1, "energy": -1}] * 16
    assert set(vague.prediction) == {"Much the same view."}
    assert vague.predicted_changes.isna().all() and vague.prediction_f1.isna().all()
    assert (~unparsed.parse_ok).all() and unparsed.prediction_f1.isna().all()
    assert set(unparsed.prediction) == {"no change"}

    eps = store.query(
        "SELECT run_id, predictions, predictions_scored, predictions_exact, prediction_f1, "
        "prediction_f1_changed FROM episodes ORDER BY run_id, seed"
    ).set_index("run_id")
    assert eps.loc["sighted"].values.tolist() == [[8, 8, 8, 1.0, 1.0]] * 2
    lazy_eps = eps.loc["lazy"]
    assert lazy_eps.prediction_f1_changed.tolist() == [0.0, 0.0]
    assert (lazy_eps.predictions_exact.sum(), lazy_eps.prediction_f1.sum() * 8) == (
        16 - len(chops),
        pytest.approx(16 - len(chops)),
    )
    assert eps.loc["wrong"].values[:, :4].tolist() == [[8, 8, 0, 0.0]] * 2
    assert eps.loc["wrong"].prediction_f1_changed.isna().all()  # nothing ever changed
    assert eps.loc["vague", "predictions_scored"].tolist() == [0, 0]
    assert eps.loc["vague", "prediction_f1"].isna().all() and eps.loc["vague", "predictions"].tolist() == [8, 8]


@pytest.mark.slow
def test_compare_reports_prediction_accuracy_per_run(played, capsys):
    from crafter_exp.stages.compare import compare

    cfg = compose_config(
        project_overrides(played)
        + ["tracking.enabled=false", "compare.bootstrap=200", "compare.permutations=199", "compare.figures=false"]
    )
    result = compare(cfg, ["sighted", "lazy", "wrong", "vague"])
    assert result.value("sighted", "prediction_f1") == 100.0 and result.value("wrong", "prediction_f1") == 0.0
    assert result.value("sighted", "prediction_f1_changed") == 100.0
    assert result.value("lazy", "prediction_f1_changed") == 0.0
    assert 50.0 < result.value("lazy", "prediction_f1") < 100.0
    assert result.value("sighted", "prediction_exact_rate") == 100.0
    assert result.value("sighted", "prediction_scored_rate") == 100.0
    assert result.value("vague", "prediction_scored_rate") == 0.0
    assert math.isnan(result.value("vague", "prediction_f1"))  # none scored: not reported
    test = result.test("sighted", "wrong", "prediction_f1")
    assert test is not None and test["diff"] == -100.0
    assert "prediction_f1" in result.files["markdown"].read_text()
    assert "prediction_f1" in capsys.readouterr().out


def _filter_cfg(home: Path, *overrides: str):
    return compose_config(project_overrides(home) + ["tracking.enabled=false", "name=wm", *overrides])


@pytest.mark.slow
def test_filter_selects_on_prediction_f1(played):
    from crafter_exp.stages import filter as F

    runs = "filter.runs=[sighted,lazy,wrong,vague]"
    st = F.stats(_filter_cfg(played, runs, "filter.min_prediction_f1=0.95"))
    assert st.passing_all == 2 and st.criteria["min_prediction_f1"] == 2
    result = F.filter_and_export(
        _filter_cfg(played, runs, "filter.min_prediction_f1=0.95", f"filter.output={played / 'sel'}"), progress=False
    )
    assert result.episodes == 2 and result.examples == 16
    rows = [json.loads(x) for x in (result.path / "train.jsonl").read_text().splitlines()]
    assert sum("<prediction>wood +1" in r["messages"][-1]["content"] for r in rows) >= 2  # the sighted run's chops
    assert F.stats(_filter_cfg(played, runs, "filter.min_prediction_f1=0.5")).passing_all == 4  # + lazy
    assert F.stats(_filter_cfg(played, runs, "filter.min_prediction_f1=0")).passing_all == 6  # + wrong, not vague


@pytest.mark.slow
def test_step_level_filter_keeps_the_turns_predicted_right(played):
    from crafter_exp.stages import filter as F

    store = TraceStore(played / "data" / "traces.duckdb")
    chops = int(store.query("SELECT count(*) AS n FROM steps WHERE run_id = 'lazy' AND prediction_f1 = 0").n[0])
    assert chops >= 2
    result = F.filter_and_export(
        _filter_cfg(
            played, "filter.runs=[lazy]", "filter.step_min_prediction_f1=1", f"filter.output={played / 'right_turns'}"
        ),
        progress=False,
    )
    rows = [json.loads(x)["messages"] for x in (result.path / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 16 - chops and result.episodes == 2
    assert all("<action>do</action>" not in m[-1]["content"] for m in rows)  # every chop was predicted wrong
    with pytest.raises(UserError, match=r"filter.step_min_prediction_f1 must be in \[0, 1\], got -0.5"):
        F.filter_and_export(_filter_cfg(played, "filter.runs=[lazy]", "filter.step_min_prediction_f1=-0.5"))


@pytest.mark.slow
def test_export_keeps_or_drops_predictions(played):
    from crafter_exp.stages import filter as F

    def export(keep: bool):
        result = F.filter_and_export(
            _filter_cfg(
                played,
                "filter.runs=[wrong]",
                f"filter.keep_predictions={keep}",
                f"filter.output={played / f'keep_{keep}'}",
            ),
            progress=False,
        )
        return result, [json.loads(x)["messages"] for x in (result.path / "train.jsonl").read_text().splitlines()]

    kept, kept_rows = export(True)
    dropped, dropped_rows = export(False)
    assert len(kept_rows) == len(dropped_rows) == 16
    world_model = prompts.system_prompt(PromptConfig(template="world_model"), env_instructions("crafter"))
    standard = prompts.system_prompt(PromptConfig(template="standard"), env_instructions("crafter"))
    for msgs in kept_rows:
        assert msgs[0]["content"] == world_model and msgs[-1]["content"] == FIXED["wrong"]
    for msgs in dropped_rows:
        assert msgs[0]["content"] == standard
        assert msgs[-1]["content"] == "<think>wait</think>\n<action>noop</action>"
    # the manifest's prompt is what the student should be played with
    assert kept.manifest["prompt"]["template"] == "world_model"
    assert dropped.manifest["prompt"]["template"] == "standard"


@pytest.mark.slow
@pytest.mark.alfworld
def test_alfworld_predictions_are_stored_not_scored(tmp_path):
    if importlib.util.find_spec("alfworld") is None:
        pytest.skip("alfworld not installed")
    from crafter_exp.envs.alfworld.data import resolve_data_path
    from crafter_exp.stages.rollout import rollout

    try:
        resolve_data_path(None)
    except ValueError:
        pytest.skip("no ALFWorld game data")
    reply = "<think>look first</think>\n<prediction>I see the room again.</prediction>\n<action>look</action>"
    os.environ[KEY_ENV] = "test-key"
    try:
        with FakeOpenAIServer(responder=lambda body: Reply(content=reply)) as srv:
            # seed 72 of valid_seen: a small game (fast reset)
            cfg = _cfg(
                tmp_path,
                srv,
                "env=alfworld",
                "env.split=eval_in_distribution",
                "env.seed=72",
                "env.episodes=1",
                "env.max_steps=2",
                "rollout.run_id=alf",
            )
            assert rollout(cfg).new_episodes == 1
    finally:
        os.environ.pop(KEY_ENV, None)
    store = TraceStore(cfg.paths.db)
    steps = store.query("SELECT * FROM steps ORDER BY turn")
    assert set(steps.prediction) == {"I see the room again."} and steps.parse_ok.all()
    assert steps.predicted_changes.isna().all() and steps.actual_changes.isna().all()
    assert steps.prediction_f1.isna().all()
    ep = store.query(
        "SELECT predictions, predictions_scored IS NULL AS unscored, prediction_f1 IS NULL AS no_f1 FROM episodes"
    ).iloc[0]
    assert ep.predictions == 2 and ep.unscored and ep.no_f1


@pytest.mark.slow
def test_cli_bad_min_prediction_f1_exits_2_with_one_line(played):
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "crafter_exp",
            "stage=filter",
            "filter.runs=[wrong]",
            "name=wm",
            "filter.min_prediction_f1=80",
            "tracking.enabled=false",
            *project_overrides(played),
        ],
        capture_output=True,
        text=True,
        cwd=played,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        "crafter-exp: error: filter.min_prediction_f1 must be in [0, 1], got 80.0"
    )
    assert "Traceback" not in out.stderr and not (played / "data" / "datasets" / "wm").exists()
