"""The text observation (a rendering of `view.local_view`) and the rules text for system prompts.

compact (default, 22-60 words on the teacher's play, mean 44, ~13 more with Remembered; for small students):
    Nearby: tree 1 north 2 west, water 4 east, cow 2 south.
    Facing: grass (south).
    Vitals: health 9, food 9, drink 9, energy 9.
    Inventory: wood 2, sapling 1.
    Time: day.
  Nearby lists the nearest cell of each kind in the 9 x 7 view except grass (the default ground) as exact
  offsets from the player ("1 north 2 west" = one row up, two columns left). A line "You are asleep." is added
  while sleeping. No previous action (students learned to repeat it). With `env.memory` = N > 0 a line
  "Remembered: water 12 north 3 west, table 8 east." follows Nearby: the nearest cell of each kind seen in the
  last N steps and out of view now (`recall.SeenCells`; "Remembered: none." when there is none).
full: the step counter and position, the compact lines, a 9 x 7 character map with its legend, and the achievements.
"""

from __future__ import annotations

from typing import Any, Optional

from crafter import constants

from crafter_exp.envs.crafter.actions import ACHIEVEMENTS, ACTIONS
from crafter_exp.envs.crafter.view import CENTER_COL, CENTER_ROW, DIRECTIONS, nearest, time_of_day
from crafter_exp.errors import UserError

OBS_FORMATS = ("compact", "full")
VITALS = ("health", "food", "drink", "energy")
ITEMS = tuple(name for name in constants.items if name not in VITALS)

WORDS = {"ripe_plant": "ripe plant", "void": "edge"}
"""How view names read in text (others as they are)."""

SYMBOLS = {
    "grass": ".",
    "sand": ":",
    "path": "_",
    "water": "~",
    "stone": "#",
    "tree": "T",
    "lava": "%",
    "coal": "c",
    "iron": "i",
    "diamond": "d",
    "table": "t",
    "furnace": "f",
    "zombie": "Z",
    "skeleton": "S",
    "cow": "C",
    "plant": "p",
    "ripe_plant": "P",
    "arrow": "*",
    "player": "@",
    "void": "X",
}
"""One character per view name, for the full format's map."""


def word(name: str) -> str:
    return WORDS.get(name, name)


def _offset_text(dx: int, dy: int) -> str:
    """(1, -2) -> '2 north 1 east' (rows first, then columns)."""
    parts = []
    if dy:
        parts.append(f"{abs(dy)} {'north' if dy < 0 else 'south'}")
    if dx:
        parts.append(f"{abs(dx)} {'west' if dx < 0 else 'east'}")
    return " ".join(parts) or "here"


_OFFSETS = {
    (dx, dy): _offset_text(dx, dy)
    for dx in range(-CENTER_COL, CENTER_COL + 1)
    for dy in range(-CENTER_ROW, CENTER_ROW + 1)
}


def compact_lines(view: dict[str, Any], remembered: Optional[dict[str, tuple[int, int]]] = None) -> list[str]:
    """The compact text's lines; `remembered` (kind -> offset, from `recall.SeenCells.nearest`) adds its line."""
    near = nearest(view)
    seen = ", ".join(f"{WORDS.get(name, name)} {_OFFSETS[offset]}" for name, offset in near.items())
    inv = view["inventory"]
    items = ", ".join(f"{name} {inv[name]}" for name in ITEMS if inv.get(name, 0) > 0)
    lines = [f"Nearby: {seen or 'only grass'}."]
    if remembered is not None:
        recalled = ", ".join(f"{word(name)} {_offset_text(*offset)}" for name, offset in remembered.items())
        lines.append(f"Remembered: {recalled or 'none'}.")
    lines += [
        f"Facing: {word(view['facing_target'])} ({DIRECTIONS[tuple(view['facing'])]}).",
        "Vitals: " + ", ".join(f"{name} {inv[name]}" for name in VITALS) + ".",
        f"Inventory: {items or 'empty'}.",
        f"Time: {time_of_day(view['daylight'])}.",
    ]
    if view["sleeping"]:
        lines.append("You are asleep.")
    return lines


def full_lines(view: dict[str, Any], remembered: Optional[dict[str, tuple[int, int]]] = None) -> list[str]:
    grid = view["grid"]
    present = sorted(
        {name for row in grid for name in row}, key=lambda n: list(SYMBOLS).index(n) if n in SYMBOLS else 99
    )
    legend = ", ".join(f"{SYMBOLS.get(n, '?')} {word(n)}" for n in present)
    unlocked = [name for name in ACHIEVEMENTS if name in view["achievements"]]
    return [
        f"Step: {view['step']}. Position: x {view['pos'][0]}, y {view['pos'][1]} (y grows southward).",
        *compact_lines(view, remembered),
        "Map (north up, @ = you):",
        *(" ".join(SYMBOLS.get(name, "?") for name in row) for row in grid),
        f"Legend: {legend}.",
        f"Achievements: {', '.join(unlocked) if unlocked else 'none'}.",
    ]


def render(
    view: dict[str, Any], obs_format: str = "compact", remembered: Optional[dict[str, tuple[int, int]]] = None
) -> str:
    """The observation text for a view (with the Remembered line where `remembered` is given)."""
    if obs_format == "compact":
        return "\n".join(compact_lines(view, remembered))
    if obs_format == "full":
        return "\n".join(full_lines(view, remembered))
    raise UserError(f"unknown obs_format {obs_format!r} (known: {', '.join(OBS_FORMATS)})")


# ------------------------------------------------------------------------------------------------ instructions


def _needs(uses: dict[str, int]) -> str:
    return " + ".join(f"{n} {k}" for k, n in uses.items())


def _instructions() -> str:
    collect = []
    for material, info in constants.collect.items():
        need = f" (needs {', '.join(info['require'])})" if info["require"] else ""
        gets = ", ".join(f"+{n} {k}" for k, n in info["receive"].items())
        chance = f" with chance {info['probability']}" if "probability" in info else ""
        collect.append(f"{material}{need} -> {gets}{chance}")
    place = [
        f"place_{name}: uses {_needs(info['uses'])}, onto {'/'.join(info['where'])} in front of you"
        for name, info in constants.place.items()
        if f"place_{name}" in ACTIONS
    ]
    make = [
        f"make_{name}: uses {_needs(info['uses'])}, next to a {' and a '.join(info['nearby'])}"
        for name, info in constants.make.items()
    ]
    return "\n".join(
        [
            "You play Crafter, a 2D survival game on a grid. You see the 9 x 7 cells around you; north is up.",
            "Score: unlock as many of the 22 achievements as you can (+1 reward the first time each one happens; "
            "health lost or gained gives -0.1/+0.1 per point).",
            "Achievements: " + ", ".join(ACHIEVEMENTS) + ".",
            "",
            "Actions (reply with one name):",
            "- noop: do nothing.",
            "- move_left / move_right / move_up / move_down: turn west / east / north / south and step there if the "
            "cell is grass, sand or path (anything else blocks you; walking into lava kills you).",
            "- do: act on the cell you face. Collect: " + "; ".join(collect) + ". Attack a zombie, skeleton or cow "
            "(a defeated cow is eaten: food +6); eat a ripe plant (food +4).",
            "- sleep: sleep until energy is full (wake_up achievement); zombies hit sleepers much harder, so wall "
            "yourself in with stone first.",
            *(f"- {line}." for line in place),
            *(f"- {line}." for line in make),
            "'Next to' means within the 3 x 3 cells around you. Better tools: wood pickaxe mines stone and coal, "
            "stone pickaxe mines iron, iron pickaxe mines diamond. Swords make you hit harder.",
            "",
            "Survival: health, food, drink and energy go from 0 to 9. Food, drink and energy fall over time: eat "
            "(cows, ripe plants), drink (do facing water) and sleep (best at night). While all three are above 0 "
            "health slowly recovers; at 0 health you die. Zombies roam grassland, more at night; skeletons shoot "
            "arrows in dark tunnels. A sapling placed on grass grows into a plant, ripe after a while.",
            "",
            "Observation: 'Nearby' gives the nearest cell of each kind as steps from you (e.g. 'tree 1 north 2 west'); "
            "cells not listed are grass. 'Remembered' (when shown) gives the nearest cell of each kind you saw "
            "earlier and do not see now, as it was when last seen. 'Facing' is the cell your action 'do' and "
            "'place_*' act on.",
        ]
    )


INSTRUCTIONS = _instructions()
"""Rules text for a system prompt: actions, crafting requirements, vitals, what scores."""
