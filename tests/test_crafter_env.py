"""The Crafter text environment against real stock crafter: same worlds, same dynamics (with the despawn order
fixed), reproducible across processes, and its text, actions, difficulty presets and config checks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import crafter
import numpy as np
import pytest
from crafter import objects

from crafter_exp.config import CrafterEnvConfig
from crafter_exp.envs.crafter import ACHIEVEMENTS, ACTIONS, INSTRUCTIONS, CrafterTextEnv, check_config, local_view
from crafter_exp.envs.crafter import difficulty as difficulty_mod
from crafter_exp.envs.crafter.actions import canonical_action
from crafter_exp.envs.crafter.game import CrafterGame, stable_key
from crafter_exp.envs.crafter.recall import SeenCells
from crafter_exp.envs.crafter.text import render
from crafter_exp.envs.crafter.view import nearest

ROOT = Path(__file__).resolve().parent.parent


def stock_with_sort_fix(seed: int, **kwargs) -> crafter.Env:
    """Stock crafter.Env with the one fix: creatures reach the despawn choice in a stable order."""
    env = crafter.Env(seed=seed, **kwargs)
    original = env._balance_object
    env._balance_object = lambda chunk, objs, *args: original(chunk, sorted(objs, key=stable_key), *args)
    return env


def world_state(world) -> tuple:
    return world._mat_map.tobytes(), [(type(o).__name__, tuple(map(int, o.pos))) for o in world.objects]


# ------------------------------------------------------------------------------------------- stock equivalence


@pytest.mark.parametrize("area", [64, 32])
def test_reset_gives_stock_world_for_many_seeds(area):
    game = CrafterGame(area=area)
    seeds = list(range(12)) + [123456, 2**31 - 5] if area == 64 else [0, 7, 99]
    for seed in seeds:
        stock = crafter.Env(area=(area, area), seed=seed)
        stock.reset()
        game.reset_to(seed)
        assert world_state(game._world) == world_state(stock._world), seed
        assert tuple(game._player.pos) == tuple(stock._player.pos)
        assert np.array_equal(game.semantic(), stock._sem_view())
        # the world's random stream continues identically (the dynamics draw from it)
        assert game._world.random.uniform() == stock._world.random.uniform(), seed


def test_steps_equal_stock_with_sort_fix():
    """Random actions through night (stock's night rendering draws from the world RNG) and many despawns.

    Stepping continues after death (stock allows it) so the comparison covers 350 steps per seed.
    """
    game = CrafterGame()
    for seed in (0, 3):
        stock = stock_with_sort_fix(seed)
        stock.reset()
        game.reset_to(seed)
        rng = np.random.RandomState(seed)
        for t in range(350):
            action = rng.randint(len(ACTIONS))
            _, r1, d1, i1 = stock.step(action)
            _, r2, d2, i2 = game.step(action)
            where = f"seed {seed} step {t}"
            assert np.array_equal(i1["semantic"], game.semantic()), where
            assert i1["inventory"] == i2["inventory"], where
            assert i1["achievements"] == i2["achievements"], where
            assert (r1, d1) == (r2, d2), where
            assert tuple(i1["player_pos"]) == tuple(i2["player_pos"]), where


def test_text_env_steps_like_stock_and_terminates_on_death():
    env = CrafterTextEnv(CrafterEnvConfig())
    stock = stock_with_sort_fix(4)
    stock.reset()
    env.reset(4)
    rng = np.random.RandomState(1)
    achieved = set()
    for _ in range(600):
        action = rng.randint(len(ACTIONS))
        _, r1, d1, i1 = stock.step(action)
        result = env.step(ACTIONS[action])
        assert result.reward == pytest.approx(r1) and result.done == d1
        assert env.view == local_view(stock)  # our int mirrors of the maps vs stock's numpy maps
        assert result.observation.info["inventory"] == i1["inventory"]
        for name in result.unlocked:
            assert name not in achieved and i1["achievements"][name] > 0
        achieved |= set(result.unlocked)
        if d1:
            assert result.termination == "death" and i1["inventory"]["health"] <= 0
            break
        assert result.termination is None
    else:
        pytest.fail("random play did not die within 600 steps")
    assert achieved == {k for k, v in i1["achievements"].items() if v > 0}


def test_render_option_keeps_dynamics_and_gives_frames():
    """With pixels on, stock's own rendering runs; the dynamics must match the pixel-free default."""
    plain, pixels = CrafterGame(), CrafterGame(render=True)
    assert plain.reset_to(2) is None and pixels.reset_to(2).shape == (64, 64, 3)
    rng = np.random.RandomState(2)
    for _ in range(170):  # into the first night
        action = rng.randint(len(ACTIONS))
        obs_plain, *_ = plain.step(action)
        obs_pixels, *_ = pixels.step(action)
        assert obs_plain is None and obs_pixels.shape == (64, 64, 3)
    assert plain._world.daylight < 0.5
    assert np.array_equal(plain.semantic(), pixels.semantic())
    assert plain._world.random.uniform() == pixels._world.random.uniform()


_DIGEST_SCRIPT = """
import hashlib, sys
import numpy as np
junk = [object() for _ in range(int(sys.argv[1]))]  # shift memory addresses between the two processes
from crafter_exp.config import CrafterEnvConfig
from crafter_exp.envs.crafter import ACTIONS, CrafterTextEnv
env = CrafterTextEnv(CrafterEnvConfig())
digest = hashlib.sha256()
for seed in (0, 1, 2):
    env.reset(seed)
    rng = np.random.RandomState(seed)
    for _ in range(400):  # past death on purpose: more creatures, more despawn choices
        result = env.step(ACTIONS[rng.randint(17)])
        digest.update(result.observation.text.encode())
        digest.update(env.inner.semantic().tobytes())
print(digest.hexdigest())
"""


def test_same_seed_and_actions_same_episode_in_two_processes():
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _DIGEST_SCRIPT, str(junk)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for junk in (0, 54321)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err[-2000:] for _, err in outputs]
    digests = [out.strip() for out, _ in outputs]
    assert len(digests[0]) == 64 and digests[0] == digests[1]


def test_reset_is_independent_of_earlier_resets():
    fresh = CrafterTextEnv(CrafterEnvConfig())
    used = CrafterTextEnv(CrafterEnvConfig())
    for seed in (11, 12, 11, 13):
        used.reset(seed)
        used.step("move_left")
    first = fresh.reset(5)
    again = used.reset(5)
    assert first.text == again.text
    assert world_state(fresh.inner._world) == world_state(used.inner._world)
    assert used.view["step"] == 0


# ---------------------------------------------------------------------------------------------- observations


def _view(**changes):
    grid = [["grass"] * 9 for _ in range(7)]
    grid[3][4] = "player"
    view = {
        "grid": grid,
        "facing": (0, 1),
        "facing_target": "grass",
        "inventory": {
            "health": 9,
            "food": 7,
            "drink": 8,
            "energy": 6,
            "sapling": 0,
            "wood": 2,
            "stone": 0,
            "coal": 0,
            "iron": 0,
            "diamond": 0,
            "wood_pickaxe": 1,
            "stone_pickaxe": 0,
            "iron_pickaxe": 0,
            "wood_sword": 0,
            "stone_sword": 0,
            "iron_sword": 0,
        },
        "achievements": {"collect_wood", "place_table"},
        "step": 42,
        "pos": (30, 31),
        "daylight": 0.2,
        "sleeping": False,
    }
    view.update(changes)
    return view


def test_compact_text_renders_the_view():
    view = _view()
    view["grid"][1][2] = "tree"  # 2 north 2 west
    view["grid"][3][5] = "tree"  # 1 east: the nearest tree wins
    view["grid"][4][4] = "table"  # in front (south)
    view["grid"][0][8] = "zombie"
    view["grid"][6][0] = "ripe_plant"
    view["facing_target"] = "table"
    assert render(view, "compact") == "\n".join(
        [
            "Nearby: table 1 south, tree 1 east, ripe plant 3 south 4 west, zombie 3 north 4 east.",
            "Facing: table (south).",
            "Vitals: health 9, food 7, drink 8, energy 6.",
            "Inventory: wood 2, wood_pickaxe 1.",
            "Time: night.",
        ]
    )
    assert nearest(view)["tree"] == (1, 0)
    asleep = render(_view(sleeping=True, daylight=0.9), "compact")
    assert "Nearby: only grass." in asleep and "Time: day." in asleep and asleep.endswith("You are asleep.")


def test_full_text_adds_map_step_and_achievements():
    view = _view()
    view["grid"][0][0] = "water"
    text = render(view, "full")
    lines = text.splitlines()
    assert lines[0].startswith("Step: 42.")
    map_rows = lines[lines.index("Map (north up, @ = you):") + 1 :][:7]
    assert map_rows[0] == "~ . . . . . . . ." and map_rows[3] == ". . . . @ . . . ."
    assert all(len(row.split()) == 9 for row in map_rows)
    assert "Achievements: collect_wood, place_table." in lines
    assert render(view, "compact") in text
    with pytest.raises(ValueError):
        render(view, "pixels")


def test_observation_is_short_matches_view_and_has_no_previous_action():
    env = CrafterTextEnv(CrafterEnvConfig())  # the default: one observation, no Remembered line (tested below)
    obs = env.reset(1)
    assert obs.actions == list(ACTIONS)
    assert json.loads(json.dumps(obs.info)) == obs.info
    assert set(obs.info) >= {"inventory", "pos", "facing", "daylight"}
    assert obs.info["inventory"]["health"] == 9 and obs.info["pos"] == [32, 32]
    words, rng = [], np.random.RandomState(0)
    for _ in range(150):
        action = ACTIONS[rng.randint(17)]
        result = env.step(action)
        text = result.observation.text
        assert text == render(local_view(env), "compact") == render(env.view, "compact")
        words.append(len(text.split()))
        if result.done:
            break
    assert 15 <= np.mean(words) <= 45, np.mean(words)
    for name in ACTIONS:  # no action name ever appears in an observation
        assert name not in text
    view = env.view
    assert len(view["grid"]) == 7 and all(len(row) == 9 for row in view["grid"]) and view["grid"][3][4] == "player"
    fx, fy = view["facing"]
    assert view["facing_target"] == view["grid"][3 + fy][4 + fx]


def test_view_follows_material_changes():
    env = CrafterTextEnv(CrafterEnvConfig())
    env.reset(0)
    env.step("noop")
    world, (px, py) = env.inner._world, env.view["pos"]
    world[(px - 1, py)] = "table"  # what collecting, placing and arrows do
    world[np.array((px + 2, py - 3))] = "diamond"
    grid = local_view(env)["grid"]
    assert grid[3][3] == "table" and grid[0][6] == "diamond"
    assert "table 1 west" in env.step("noop").observation.text


def test_view_marks_cells_outside_the_world():
    env = CrafterTextEnv(CrafterEnvConfig())
    env.reset(0)
    world, player = env.inner._world, env.inner._player
    if world[(1, 40)][1] is not None:
        world.remove(world[(1, 40)][1])
    world.move(player, (1, 40))
    view = local_view(env)
    assert view["grid"][3][:3] == ["void", "void", "void"] and view["pos"] == (1, 40)
    assert "edge 2 west" in render(view, "compact")  # x = -1 is the nearest cell outside


def test_remembered_line_recalls_cells_out_of_view_within_the_window():
    env = CrafterTextEnv(CrafterEnvConfig(memory=5))
    assert "'Remembered' (when shown)" in env.instructions  # one instructions text, with or without the line
    env.reset(0)
    world, player = env.inner._world, env.inner._player
    (px, py) = env.view["pos"]
    world[(px + 2, py - 3)] = "diamond"  # in view: Nearby lists it, Remembered does not
    text = env.step("noop").observation.text
    assert "diamond 3 north 2 east" in text.splitlines()[0] and "diamond" not in text.splitlines()[1]

    def move_to(pos):
        if world[pos][1] is not None:
            world.remove(world[pos][1])
        world[pos] = "grass"
        world.move(player, pos)

    move_to((px - 8, py))  # the diamond is now 10 east, 3 north: out of the 9 x 7 view
    lines = env.step("noop").observation.text.splitlines()
    assert lines[1].startswith("Remembered: ") and "diamond 3 north 10 east" in lines[1], lines
    assert lines[1] == "Remembered: " + render(env.view, "compact", env._seen.nearest(env.view)).splitlines()[1][12:]
    for _ in range(5):  # seen at step 1; forgotten once it is more than 5 steps old
        lines = env.step("noop").observation.text.splitlines()
    assert "diamond" not in lines[1], lines
    # a cell that looks different when seen again is updated: the mined diamond is remembered no more
    move_to((px, py))
    env.step("noop")
    world[(px + 2, py - 3)] = "path"
    env.step("noop")
    move_to((px - 8, py))
    assert "diamond" not in env.step("noop").observation.text
    # a new episode forgets the last one's cells
    env.reset(0)
    assert env.reset(0).text.splitlines()[1] == "Remembered: none."


def test_seen_cells_give_the_nearest_remembered_cell_of_each_kind():
    seen = SeenCells(window=100)
    view = _view(pos=(30, 31), step=10)
    view["grid"][0][0] = "water"  # (26, 28)
    view["grid"][6][8] = "water"  # (34, 34)
    view["grid"][1][1] = "zombie"  # creatures are not remembered
    seen.update(view)
    later = _view(pos=(40, 31), step=20)  # the old view is out of sight now (x 26..34 vs 36..44)
    assert seen.nearest(later) == {"water": (-6, 3)}  # (34, 34): 9 away; (26, 28): 17
    later["grid"][0][0] = "water"
    assert seen.nearest(later) == {}  # water in view: Nearby shows it
    short = SeenCells(window=5)
    short.update(view)
    later["grid"][0][0] = "grass"
    assert short.nearest(later) == {} and short.nearest(_view(pos=(40, 31), step=15)) == {"water": (-6, 3)}


# ------------------------------------------------------------------------------------------------- actions


@pytest.mark.parametrize(
    "text, expected",
    [
        ("move_left", "move_left"),
        ("Move Left", "move_left"),
        ("move-up", "move_up"),
        (" DO ", "do"),
        ("left", "move_left"),
        ("right", "move_right"),
        ("up", "move_up"),
        ("down", "move_down"),
        ("north", "move_up"),
        ("go west", "move_left"),
        ("use", "do"),
        ("interact", "do"),
        ("attack", "do"),
        ("collect", "do"),
        ("wait", "noop"),
        ("no-op", "noop"),
        ("`sleep`", "sleep"),
        ("place table", "place_table"),
        ("Make Wood Pickaxe", "make_wood_pickaxe"),
        ("craft_stone_sword", "make_stone_sword"),
        ("place sapling", "place_plant"),
        ("'noop'.", "noop"),
        ("I will move left now", None),
        ("fly", None),
        ("", None),
        ("make_diamond_sword", None),
    ],
)
def test_canonical_action(text, expected):
    assert canonical_action(text) == expected
    assert CrafterTextEnv.canonical_action(None, text) == expected


def test_actions_achievements_instructions_and_fallback():
    assert len(ACTIONS) == 17 and ACTIONS[0] == "noop" and ACTIONS[5] == "do" and ACTIONS[16] == "make_iron_sword"
    assert len(ACHIEVEMENTS) == 22 and len(set(ACHIEVEMENTS)) == 22
    assert all(name in INSTRUCTIONS for name in ACTIONS + ACHIEVEMENTS)
    assert "uses 1 wood + 1 coal + 1 iron, next to a table and a furnace" in INSTRUCTIONS
    env = CrafterTextEnv(CrafterEnvConfig())
    assert env.fallback_action == "noop" and env.fallback_action in ACTIONS
    assert env.episode_info() == {"success": None, "task_type": None}
    env.reset(0)
    assert env.step("dance").observation.info["pos"] == [32, 32]  # unknown names play noop
    assert env.step("left").observation.info["facing"] == [-1, 0]  # aliases are accepted too


def test_length_termination():
    env = CrafterTextEnv(CrafterEnvConfig(length=5))
    env.reset(0)
    results = [env.step("noop") for _ in range(5)]
    assert [r.done for r in results] == [False] * 4 + [True]
    assert results[-1].termination == "length" and results[0].termination is None


# ---------------------------------------------------------------------------------------------- difficulty


def _table_rows() -> dict[str, list[str]]:
    rows = {}
    for line in difficulty_mod.__doc__.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and not set(cells[1]) <= {"-"} and cells[1] != "easy":
            rows[cells[0]] = cells[1:]
    return rows


def test_difficulty_table_states_the_presets():
    rows = _table_rows()
    assert len(rows) == 11
    by_field = {
        "hunger_steps": "steps per food",
        "thirst_steps": "steps per drink",
        "fatigue_steps": "steps per energy",
        "regen_steps": "health regen",
        "degen_steps": "health loss",
        "zombie_cooldown": "zombie attack cooldown",
        "arrow_damage": "arrow damage",
        "zombie_spawn_prob": "zombie spawn probability",
        "zombie_density": "zombie spawn target",
        "skeleton_density": "skeleton spawn target",
    }
    for field, prefix in by_field.items():
        (row,) = [cells for name, cells in rows.items() if name.startswith(prefix)]
        for cell, preset in zip(row, ("easy", "normal", "hard")):
            value = float(re.sub(r"[^0-9.\-]", "", cell.split()[0].lstrip("x")))
            assert value == getattr(difficulty_mod.PRESETS[preset], field), (field, preset, cell)
    (damage,) = [cells for name, cells in rows.items() if name.startswith("zombie damage")]
    for cell, preset in zip(damage, ("easy", "normal", "hard")):
        awake, asleep = (int(v) for v in cell.split()[:3:2])
        balance = difficulty_mod.PRESETS[preset]
        assert (awake, asleep) == (balance.zombie_damage, balance.zombie_sleep_damage)
    assert difficulty_mod.PRESETS["normal"] == difficulty_mod.Balance()  # normal = stock's numbers


def test_difficulty_changes_vitals_and_damage_but_not_the_world():
    food, worlds = {}, {}
    for preset in ("easy", "normal", "hard"):
        env = CrafterTextEnv(CrafterEnvConfig(difficulty=preset))
        env.reset(6)
        worlds[preset] = env.inner._world._mat_map.copy()
        player = env.inner._player
        for _ in range(100):
            env.step("noop")
        food[preset] = env.view["inventory"]["food"]
        # a zombie boxed in next to the player hits once with the preset's damage
        world = env.inner._world
        for obj in world.objects:
            if obj is not player:
                world.remove(obj)
        px, py = map(int, player.pos)
        for x in range(px - 2, px + 3):
            for y in range(py - 2, py + 3):
                world[(x, y)] = "stone"
        world[(px, py)] = "grass"
        world[(px + 1, py)] = "grass"
        zombie = env.inner._kinds.zombie(world, (px + 1, py), player)
        world.add(zombie)
        player.health = 9
        zombie.update()
        assert 9 - player.health == difficulty_mod.PRESETS[preset].zombie_damage, preset
    assert food["easy"] > food["normal"] > food["hard"]
    assert food["normal"] == 9 - 100 // 26  # stock: one food point per 26 steps awake
    assert np.array_equal(worlds["easy"], worlds["normal"]) and np.array_equal(worlds["hard"], worlds["normal"])


def test_easy_and_hard_creatures_keep_their_kind():
    env = CrafterTextEnv(CrafterEnvConfig(difficulty="hard"))
    env.reset(0)
    kinds = {type(o).__name__ for o in env.inner._world.objects}
    assert "Player_hard" in kinds and "Zombie_hard" in kinds
    assert all(
        isinstance(o, (objects.Player, objects.Cow, objects.Zombie, objects.Skeleton)) for o in env.inner._world.objects
    )
    names = {c for row in env.view["grid"] for c in row}
    assert "player" in names and not any(n.endswith("_hard") for n in names)


# --------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "change, message",
    [
        ({"difficulty": "nightmare"}, "env.difficulty"),
        ({"obs_format": "pixels"}, "env.obs_format"),
        ({"area": 5}, "env.area"),
        ({"length": -1}, "env.length"),
        ({"memory": -1}, "env.memory"),
    ],
)
def test_check_config_rejects_bad_values(change, message):
    cfg = replace(CrafterEnvConfig(), **change)
    with pytest.raises(ValueError, match=message) as err:
        check_config(cfg)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError):
        CrafterTextEnv(cfg)
    check_config(CrafterEnvConfig())
    assert {f.name for f in fields(CrafterEnvConfig)} >= {"difficulty", "obs_format", "area", "length", "render"}


def test_expert_action_is_a_valid_action_and_reproducible():
    pytest.importorskip("crafter_exp.envs.crafter.expert")
    runs = []
    for _ in range(2):
        env = CrafterTextEnv(CrafterEnvConfig())
        env.reset(3)
        actions = []
        for _ in range(40):
            action = env.expert_action()
            assert action in ACTIONS
            actions.append(action)
            env.step(action)
        runs.append(actions)
    assert runs[0] == runs[1]
