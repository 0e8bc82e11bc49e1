"""env=alfworld: ALFWorld's text games behind the TextEnv interface (needs the `alfworld` extra and the game data).

Episodes run on valid_seen (eval_in_distribution). Resets cost 0.2-2 s (TextWorld translates each game's PDDL),
so the tests play few episodes and reuse one env object where the runner would not.
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import replace

import pytest

from crafter_exp.config import AlfworldEnvConfig

pytestmark = [
    pytest.mark.alfworld,
    pytest.mark.skipif(
        importlib.util.find_spec("alfworld") is None,
        reason="alfworld not installed (optional extra: pip install 'crafter-exp[alfworld]', ~4 min compile)",
    ),
]

SEEN = AlfworldEnvConfig(split="eval_in_distribution")
# valid_seen seeds with small games (fast resets) and short expert solutions, four task types (see the benchmark)
CHEAP = {
    "pick_and_place_simple": 72,
    "pick_clean_then_place_in_recep": 79,
    "look_at_obj_in_light": 28,
    "pick_two_obj_and_place": 4,
}


def _data_available() -> bool:
    from crafter_exp.envs.alfworld.data import resolve_data_path

    try:
        resolve_data_path(None)
    except ValueError:
        return False
    return True


needs_data = pytest.mark.skipif(
    not _data_available(), reason="no ALFWorld game data (set ALFWORLD_DATA; offline copy ../shared/alfworld_data)"
)


@pytest.fixture(scope="module")
def env():
    from crafter_exp.envs.alfworld import AlfworldTextEnv

    e = AlfworldTextEnv(SEEN)
    yield e
    e.close()


def play(env, seed: int, choose) -> tuple[dict, int, int, list]:
    """One episode; `choose(env, obs)` -> command text. Returns (episode_info, steps, invalid steps, results)."""
    obs = env.reset(seed)
    steps = invalid = 0
    results = []
    while True:
        action = env.canonical_action(choose(env, obs)) or env.fallback_action
        result = env.step(action)
        results.append(result)
        steps += 1
        invalid += not result.valid
        obs = result.observation
        if result.done:
            return env.episode_info(), steps, invalid, results


# ------------------------------------------------------------------------------------------- config & data


def test_missing_data_is_one_clear_line(monkeypatch, tmp_path):
    from crafter_exp.envs.alfworld import check_config, data

    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    monkeypatch.setattr(data, "PROJECT_ROOT", tmp_path)  # no ../shared next to the project
    monkeypatch.chdir(tmp_path)  # ... nor next to the working directory
    with pytest.raises(ValueError, match="ALFWORLD_DATA") as err:
        check_config(AlfworldEnvConfig())
    assert "\n" not in str(err.value)

    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="ALFWORLD_DATA='.*nothing'"):
        check_config(AlfworldEnvConfig())
    with pytest.raises(ValueError, match="env.data_path"):
        check_config(AlfworldEnvConfig(data_path=str(tmp_path)))


def test_bad_split_and_task_type_fail_before_work():
    from crafter_exp.envs.alfworld import check_config

    with pytest.raises(ValueError, match="env.split='valid'"):
        check_config(AlfworldEnvConfig(split="valid"))
    with pytest.raises(ValueError, match="env.task_types: unknown \\['pick_and_place'\\]"):
        check_config(AlfworldEnvConfig(task_types=["pick_and_place"]))


def test_held_out_evaluation_plays_the_eval_split():
    from crafter_exp.config import compose_config
    from crafter_exp.envs import env_primary_metric, held_out_env_config

    env_cfg = compose_config(["env=alfworld"]).env
    assert (env_cfg.split, held_out_env_config(env_cfg).split) == ("train", "eval_in_distribution")
    assert held_out_env_config(replace(env_cfg, eval_split=None)).split == "train"
    assert env_primary_metric("alfworld") == "success_rate"
    from crafter_exp.envs.alfworld import check_config

    with pytest.raises(ValueError, match="env.eval_split='seen'"):
        check_config(replace(env_cfg, eval_split="seen"))


@needs_data
def test_splits_list_alfworlds_games_in_a_fixed_mixed_order():
    from crafter_exp.envs.alfworld.data import list_games, resolve_data_path, task_type_of

    root = str(resolve_data_path(None))
    sizes = {s: len(list_games(root, s, ())) for s in ("train", "eval_in_distribution", "eval_out_of_distribution")}
    assert sizes == {"train": 200, "eval_in_distribution": 140, "eval_out_of_distribution": 134}
    games = list_games(root, "eval_in_distribution", ())
    # consecutive seeds mix task types (sorted folder names would give 13 look_at_obj_in_light first)
    assert len({task_type_of(g) for g in games[:12]}) >= 4
    only = list_games(root, "eval_in_distribution", ("pick_heat_then_place_in_recep",))
    assert only and {task_type_of(g) for g in only} == {"pick_heat_then_place_in_recep"}


# ---------------------------------------------------------------------------------------------- episodes


@needs_data
def test_same_seed_same_game_and_text_in_two_env_objects(env):
    from crafter_exp.envs.alfworld import AlfworldTextEnv

    other = AlfworldTextEnv(SEEN)
    try:
        first = other.reset(72)
        for seed in (72, 72 + len(env.games)):
            again = env.reset(seed)
            assert again.text == first.text and again.info["game"] == first.info["game"]
        assert env.reset(59).info["game"] != first.info["game"]
    finally:
        other.close()


@needs_data
def test_closed_envs_recycle_their_textworld_environment():
    from crafter_exp.envs.alfworld import AlfworldTextEnv

    first = AlfworldTextEnv(SEEN)
    first.reset(72)
    engine = first._tw_env
    first.close()
    second = AlfworldTextEnv(SEEN)  # the runner builds one env per episode: no new fast-downward library each time
    try:
        assert second.reset(59).text.startswith("Your task is to:") and second._tw_env is engine
    finally:
        second.close()


@needs_data
def test_observation_has_task_and_admissible_commands(env):
    obs = env.reset(59)
    first, second = obs.text.splitlines()[:2]
    assert first.startswith("Your task is to: ") and second.startswith("Observation: You are in the middle")
    assert "Welcome to TextWorld" not in obs.text
    assert "look" in obs.actions and "inventory" in obs.actions and "help" not in obs.actions
    assert "Admissible commands: " + ", ".join(obs.actions) in obs.text
    assert obs.info["task_type"] and obs.info["game"].startswith("valid_seen/") and obs.info["won"] is False

    from crafter_exp.envs.alfworld import AlfworldTextEnv

    hidden = AlfworldTextEnv(replace(SEEN, show_admissible=False))
    try:
        quiet = hidden.reset(59)
        assert "Admissible" not in quiet.text and quiet.actions == obs.actions
    finally:
        hidden.close()


@needs_data
def test_memory_lists_the_episodes_last_commands_as_played():
    from crafter_exp.envs.alfworld import AlfworldTextEnv

    e = AlfworldTextEnv(replace(SEEN, memory=3))
    try:
        obs = e.reset(59)
        assert "Your last commands" not in obs.text  # nothing played yet
        played = []
        for command in ["look", "Fly Away.", "inventory", "look"]:
            played.append(e.canonical_action(command) or command)
            obs = e.step(played[-1]).observation
        # oldest first, the last three; an inadmissible command is listed as sent (normalised): it was a step
        assert obs.text.splitlines()[1] == "Your last commands: fly away, inventory, look"
        assert obs.text.splitlines()[2].startswith("Observation: ")
        assert "Your last commands" not in e.reset(59).text  # a new episode starts with none
    finally:
        e.close()
    with pytest.raises(ValueError, match="env.memory must be >= 0"):
        from crafter_exp.envs.alfworld import check_config

        check_config(replace(SEEN, memory=-1))


@needs_data
def test_notes_follow_the_expert_through_a_game_and_restart_with_each_episode(env):
    seed = CHEAP["pick_clean_then_place_in_recep"]
    obs = env.reset(seed)
    lines = obs.text.splitlines()
    room = lines[1]
    assert lines[2:6] == [lines[2], "Location: middle of the room", "Holding: nothing", "Seen: nothing the task names"]
    unsearched = lines[2].removeprefix("Not searched: ").split(", ")
    assert unsearched and all(f"a {r}" in room for r in unsearched)  # the room listing, in its order
    took = None
    while True:
        command = env.expert_action()
        result = env.step(command)
        notes = dict(line.split(": ", 1) for line in result.observation.text.splitlines()[2:6])
        if command.startswith("go to "):
            target = command.removeprefix("go to ")
            assert notes["Location"] == target
            if "is closed" not in result.observation.text:
                assert target not in notes["Not searched"].split(", ")
        if command.startswith("take "):
            took = command.split(" from ")[0].removeprefix("take ")
            assert notes["Holding"] == took
        if command.startswith("clean "):
            assert notes["Holding"] == f"{took} (cleaned)"
        if result.done:
            break
    assert result.termination == "success" and notes["Holding"] == "nothing" and took in notes["Seen"]
    again = env.reset(seed).text.splitlines()
    assert again[2:6] == lines[2:6]  # a new episode starts from the room listing again

    from crafter_exp.envs.alfworld import AlfworldTextEnv

    plain = AlfworldTextEnv(replace(SEEN, notes=False))
    try:
        assert not any(line.startswith(("Location:", "Not searched:")) for line in plain.reset(seed).text.splitlines())
    finally:
        plain.close()


@needs_data
def test_commands_admissible_invalid_or_not_commands(env):
    obs = env.reset(59)
    goto = next(a for a in obs.actions if a.startswith("go to"))
    assert env.canonical_action(f"  {goto.upper()}. ") == goto
    assert env.canonical_action("put apple 1 in fridge 1") == "put apple 1 in fridge 1"  # no such move now
    assert env.canonical_action("I think I should look around the room first") is None  # prose, not a command
    assert env.canonical_action("") is None

    before = env.reset(59)
    bad = env.step("take unicorn 1 from desk 1")  # a command, not admissible: nothing happens, a step is spent
    assert bad.valid is False and not bad.done and bad.reward == 0.0
    assert "Observation: Nothing happens." in bad.observation.text
    assert bad.observation.actions == before.actions and bad.observation.info["steps"] == 1
    good = env.step(goto)
    assert good.valid and "Observation: You arrive at" in good.observation.text


@needs_data
def test_replies_parse_through_the_spine_parser(env):
    from crafter_exp.parsing import parse_reply

    obs = env.reset(59)
    goto = next(a for a in obs.actions if a.startswith("go to"))

    def parse(reply, tool_calls=None):
        return parse_reply(reply, tool_calls, env.canonical_action)

    assert parse(f"<think>the card may be there</think>\n<action>{goto.title()}</action>") == ([goto], True)
    assert parse(f"I should look there first.\nACTION: {goto}") == ([goto], True)
    assert parse(f"Let me think.\n{goto}") == ([goto], True)  # bare: the last line
    assert parse("", [{"name": "interact", "arguments": {"actions": [goto]}}]) == ([goto], True)
    # a command that is not admissible parses (it is played and counted invalid); prose does not
    assert parse("<action>open unicorn 1</action>") == (["open unicorn 1"], True)
    assert parse("I am not sure what to do here.") == ([], False)


@needs_data
def test_expert_wins_valid_seen(env):
    wins, steps = [], []
    for task_type, seed in CHEAP.items():
        info, n, invalid, results = play(env, seed, lambda e, o: e.expert_action() or e.fallback_action)
        assert invalid == 0
        wins.append(info["success"])
        if info["success"]:
            last = results[-1]
            assert last.termination == "success" and last.unlocked == ["won"] and last.reward == 1.0
            assert sum(r.reward for r in results) == 1.0
            steps.append(n)
        assert info["task_type"] == task_type
    assert sum(wins) >= 3, wins
    assert env.expert_action() is None  # episode over


@needs_data
def test_random_over_admissible_rarely_wins_and_hits_max_steps(env):
    rng = random.Random(0)
    short = replace(SEEN, max_steps=10)
    env.cfg = short  # the max-steps cap is read per step; the module env is shared, so restore it
    try:
        outcomes = [play(env, seed, lambda e, o: rng.choice(o.actions)) for seed in (59, 72, 35)]
    finally:
        env.cfg = SEEN
    wins = sum(info["success"] for info, *_ in outcomes)
    assert wins <= 1
    for info, n, invalid, results in outcomes:
        assert invalid == 0
        if not info["success"]:
            assert n == 10 and results[-1].termination == "max_steps" and results[-1].done


@needs_data
def test_expert_replays_identically_after_other_episodes(env):
    def trajectory(seed):
        _, _, _, results = play(env, seed, lambda e, o: e.expert_action() or e.fallback_action)
        return [r.observation.text for r in results]

    first = trajectory(21)
    obs = env.reset(124)
    for _ in range(5):  # disturbs the global `random` the expert used to share
        obs = env.step(random.choice(obs.actions)).observation
    assert trajectory(21) == first


@needs_data
def test_fast_text_gives_stock_textworld_text(env):
    from crafter_exp.envs.alfworld import speedups

    def trajectory():
        rng = random.Random(1)
        obs = env.reset(79)
        texts = [obs.text]
        for i in range(6):  # expert and random commands: feedback, containers, inventory texts
            obs = env.step(env.expert_action() if i % 2 else rng.choice(obs.actions)).observation
            texts.append(obs.text)
        return texts

    env._loaded = None  # the game's grammar is parsed at load: load it under each variant
    fast = trajectory()
    speedups.uninstall()
    try:
        env._loaded = None
        stock = trajectory()
    finally:
        speedups.install()
    assert fast == stock


# ------------------------------------------------------------------------------- through the stages (slow)


def _scripted_available() -> bool:
    return importlib.util.find_spec("crafter_exp.policies.scripted") is not None


@needs_data
@pytest.mark.slow
def test_rollout_filter_export_round_trip(project):
    """env=alfworld model=scripted through the real stages: episodes carry success/task_type, the filter selects
    on them, the export's assistant turns are the expert's admissible commands."""
    import json

    import duckdb
    from conftest import project_overrides

    from crafter_exp.config import compose_config
    from crafter_exp.stages.filter import filter_and_export
    from crafter_exp.stages.rollout import rollout

    base = [
        "env=alfworld",
        "env.split=eval_in_distribution",
        "model=scripted",
        "model.epsilon=0",
        "env.episodes=3",
        "env.seed=72",
        "env.max_steps=25",
        "tracking.enabled=false",
        "name=alf",
        *project_overrides(project),
    ]
    cfg = compose_config(["stage=rollout", *base])
    result = rollout(cfg)
    assert result.new_episodes == 3
    with duckdb.connect(cfg.paths.db, read_only=True) as db:
        rows = db.execute(
            "SELECT seed, success, task_type, steps, turns, invalid_actions, parse_failures, achievements, "
            "termination FROM episodes WHERE run_id = ? ORDER BY seed",
            [result.run_id],
        ).fetchall()
        first_obs = db.execute(
            "SELECT observation FROM steps WHERE run_id = ? AND turn = 0", [result.run_id]
        ).fetchall()
    assert [r[0] for r in rows] == [72, 73, 74]
    # seeds 72, 73 are solved by the expert within 25 steps; 74 (a cooling task) is not
    assert [r[1] for r in rows] == [True, True, False]
    assert [r[2] for r in rows] == [
        "pick_and_place_simple",
        "pick_cool_then_place_in_recep",
        "pick_cool_then_place_in_recep",
    ]
    for _seed, success, _, steps, turns, invalid, parse_failures, achievements, termination in rows:
        assert invalid == 0 and parse_failures == 0 and steps == turns
        assert (achievements == ["won"] and termination == "success") if success else termination == "max_steps"
    assert all(o[0].startswith("Your task is to:") for o in first_obs)
    assert result.metrics["success_rate"] == pytest.approx(200 / 3)

    with duckdb.connect(cfg.paths.db, read_only=True) as db:
        labels = db.execute(
            "SELECT s.expert_action, s.actions[1], s.seed FROM steps s JOIN episodes e USING (run_id, seed)"
            " WHERE s.run_id = ? AND e.success",
            [result.run_id],
        ).fetchall()
    assert len(labels) == sum(r[4] for r in rows if r[1])
    assert all(expert == played for expert, played, _ in labels)  # epsilon 0: the teacher played the expert's command
    # ALFWorld's filter defaults: solved episodes, the expert's labels, no `look` turns
    out = filter_and_export(compose_config(["stage=filter", *base]), progress=False)
    kept = [expert for expert, _, _ in labels if expert != "look"]
    assert 0 < len(kept) < len(labels)  # the expert looks first in each game
    assert out.episodes == 2 and out.examples == len(kept) and out.manifest["env"] == "alfworld"
    examples = [
        json.loads(line) for f in out.files if f.endswith(".jsonl") for line in (out.path / f).read_text().splitlines()
    ]
    assert sorted(ex["messages"][-1]["content"] for ex in examples) == sorted(kept)
    for ex in examples:
        user = ex["messages"][-2]["content"]
        assert user.startswith("Your task is to:") and "\nHolding: " in user  # notes on, the admissible list off
        assert "Admissible commands" not in user

    cool = filter_and_export(
        compose_config(
            [
                "stage=filter",
                "filter.success_only=true",
                "filter.task_types=[pick_cool_then_place_in_recep]",
                "filter.output=cool",
                *base,
            ]
        ),
        progress=False,
    )
    assert cool.episodes == 1 and cool.examples == sum(1 for e, _, seed in labels if seed == 73 and e != "look")
