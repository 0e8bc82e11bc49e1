"""Crafter's action and achievement names, and the mapping from a model's wording to an action name."""

from __future__ import annotations

import re
from typing import Optional

from crafter import constants

ACTIONS: tuple[str, ...] = tuple(constants.actions)
"""The 17 actions in crafter's index order (index = the integer stock `env.step` takes)."""
ACHIEVEMENTS: tuple[str, ...] = tuple(constants.achievements)
"""The 22 achievements, crafter's (alphabetical) order."""
ACTION_INDEX = {name: i for i, name in enumerate(ACTIONS)}

_DIRECTIONS = {
    "left": "left",
    "west": "left",
    "right": "right",
    "east": "right",
    "up": "up",
    "north": "up",
    "down": "down",
    "south": "down",
}

ALIASES: dict[str, str] = {
    # moves: "left", "west", "go_left", "move_west", "walk_north", ...
    **{word: f"move_{d}" for word, d in _DIRECTIONS.items()},
    **{f"{verb}_{word}": f"move_{d}" for word, d in _DIRECTIONS.items() for verb in ("move", "go", "walk", "step")},
    # the interaction key
    **{
        word: "do"
        for word in (
            "use",
            "interact",
            "attack",
            "collect",
            "hit",
            "mine",
            "chop",
            "gather",
            "eat",
            "drink",
            "fight",
            "act",
            "do_action",
            "harvest",
            "take",
        )
    },
    # doing nothing
    **{word: "noop" for word in ("wait", "no_op", "noop", "none", "nothing", "idle", "stay", "pass", "no_action")},
    "rest": "sleep",
    # placing and crafting, with the words people use
    "place_sapling": "place_plant",
    "plant": "place_plant",
    "plant_sapling": "place_plant",
    "place_crafting_table": "place_table",
    "craft_table": "place_table",
    "make_table": "place_table",
    "build_table": "place_table",
    "make_furnace": "place_furnace",
    "craft_furnace": "place_furnace",
    "build_furnace": "place_furnace",
    **{
        f"craft_{tool}": f"make_{tool}"
        for tool in ("wood_pickaxe", "stone_pickaxe", "iron_pickaxe", "wood_sword", "stone_sword", "iron_sword")
    },
    **{f"make_wooden_{tool}": f"make_wood_{tool}" for tool in ("pickaxe", "sword")},
    **{f"craft_wooden_{tool}": f"make_wood_{tool}" for tool in ("pickaxe", "sword")},
}

_SEPARATORS = re.compile(r"[\s\-]+")
_EDGE_PUNCT = "`'\"., ;:!?()[]{}*"


def canonical_action(text: str) -> Optional[str]:
    """One action name for a candidate string, or None.

    Case-insensitive; spaces and hyphens count as underscores; surrounding quotes/punctuation are ignored;
    aliases as in `ALIASES` (left/right/up/down and west/east/north/south -> move_*, use/interact/attack/
    collect -> do, wait -> noop, ...). Whole-string matches only: a sentence is not an action.
    """
    if not isinstance(text, str):
        return None
    key = _SEPARATORS.sub("_", text.strip().strip(_EDGE_PUNCT).strip().lower())
    if key in ACTION_INDEX:
        return key
    return ALIASES.get(key)
