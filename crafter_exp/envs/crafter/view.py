"""The structured local view: what the player sees (Crafter's 9 x 7 window) as plain data.

`local_view(env)` is the single source of what an agent may know: the text observation is a rendering of it (its
`Remembered` line, `env.memory`, renders this episode's earlier views: `recall.py`) and the scripted teacher
(`expert/`) decides from it and its own memory of earlier views, so the teacher sees nothing the player could not.

Shape (fixed; other modules rely on it):
    grid            7 rows x 9 cols list of str; row 0 = north (up), col 0 = west (left); the player is at
                    grid[3][4] ("player"). A cell holds the creature/object on it if any, else its material.
                    Materials: water grass stone path sand tree lava coal iron diamond table furnace;
                    objects: zombie skeleton cow arrow plant (a sapling still growing) ripe_plant (eatable);
                    "void" = outside the world (the map edge).
    facing          (dx, dy) of the player's facing: (-1,0) west/left, (1,0) east/right, (0,-1) north/up,
                    (0,1) south/down.
    facing_target   the grid cell in front of the player (what `do` / `place_*` act on).
    inventory       {item: count} for all 16 items incl. the vitals health/food/drink/energy (0..9).
    achievements    set of achievement names unlocked so far this episode.
    step            env steps taken this episode.
    pos             (x, y) world position of the player (x grows east, y grows south).
    daylight        0 (night) .. 1 (day).
    sleeping        whether the player is asleep.
Cell (row r, col c) is the world position (x + c - 4, y + r - 3).

What the texts show of it (`text.py`): the compact text (the default) shows `nearest(view)` (the nearest cell of
each kind but grass, as exact offsets), `facing_target` with the facing direction, the vitals, the non-zero
items, `time_of_day(daylight)` and `sleeping`; not the rest of the grid, `pos`, `step` or `achievements`.
The full text adds the whole grid, `step`, `pos` and `achievements`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from crafter import objects

VIEW_COLS, VIEW_ROWS = 9, 7
"""Crafter's local view: 9 wide x 7 tall (the 9 x 9 image keeps its 2 bottom rows for the inventory)."""
CENTER_ROW, CENTER_COL = VIEW_ROWS // 2, VIEW_COLS // 2
VOID = "void"
DIRECTIONS = {(-1, 0): "west", (1, 0): "east", (0, -1): "north", (0, 1): "south"}

_OBJECT_NAMES = (  # isinstance, so difficulty presets' subclasses keep their names
    (objects.Player, "player"),
    (objects.Zombie, "zombie"),
    (objects.Skeleton, "skeleton"),
    (objects.Cow, "cow"),
    (objects.Arrow, "arrow"),
)


def object_name(obj: Any) -> str:
    """The view name of a world object (plants split by ripeness: only a ripe plant can be eaten)."""
    if isinstance(obj, objects.Plant):
        return "ripe_plant" if obj.ripe else "plant"
    for cls, name in _OBJECT_NAMES:
        if isinstance(obj, cls):
            return name
    return type(obj).__name__.lower()


def _inner(env: Any) -> Any:
    """Accept our CrafterTextEnv (its `inner` crafter env) or a stock `crafter.Env` directly."""
    return getattr(env, "inner", env)


def _material_names(world: Any) -> np.ndarray:
    """Material id -> name as an object array (cached on the world; rebuilt if crafter registers a new id)."""
    names = getattr(world, "_view_names", None)
    if names is None or len(names) != len(world._mat_names):
        names = np.array([world._mat_names[i] for i in range(len(world._mat_names))], dtype=object)
        world._view_names = names
    return names


def local_view(env: Any) -> dict[str, Any]:
    """The player's 9 x 7 surroundings, facing, inventory and status (see the module docstring)."""
    inner = _inner(env)
    world, player = inner._world, inner._player
    px, py = int(player.pos[0]), int(player.pos[1])
    width, height = world.area
    mat_names, mat_map, obj_map, objs = world._mat_names, world._mat_map, world._obj_map, world._objects
    x0, y0 = px - CENTER_COL, py - CENTER_ROW
    if 0 <= x0 and x0 + VIEW_COLS <= width and 0 <= y0 and y0 + VIEW_ROWS <= height:
        # the usual case: whole window inside the world, read as two array slices (rows = y)
        if hasattr(world, "material_columns"):  # our FastWorld keeps the names as lists
            columns = world.material_columns()[x0 : x0 + VIEW_COLS]
            grid = [list(row) for row in zip(*(column[y0 : y0 + VIEW_ROWS] for column in columns))]
        else:
            grid = _material_names(world)[mat_map[x0 : x0 + VIEW_COLS, y0 : y0 + VIEW_ROWS].T].tolist()
        idxs = obj_map[x0 : x0 + VIEW_COLS, y0 : y0 + VIEW_ROWS].T
        rows, cols = np.nonzero(idxs)
        for r, c, i in zip(rows.tolist(), cols.tolist(), idxs[rows, cols].tolist()):
            grid[r][c] = object_name(objs[i])
    else:
        grid = []
        for r in range(VIEW_ROWS):
            y = y0 + r
            row = []
            for c in range(VIEW_COLS):
                x = x0 + c
                if not (0 <= x < width and 0 <= y < height):
                    row.append(VOID)
                    continue
                index = obj_map[x, y]
                row.append(object_name(objs[index]) if index else mat_names[mat_map[x, y]])
            grid.append(row)
    fx, fy = int(player.facing[0]), int(player.facing[1])
    return {
        "grid": grid,
        "facing": (fx, fy),
        "facing_target": grid[CENTER_ROW + fy][CENTER_COL + fx],
        "inventory": dict(player.inventory),
        "achievements": {name for name, count in player.achievements.items() if count > 0},
        "step": int(inner._step),
        "pos": (px, py),
        "daylight": float(world.daylight),
        "sleeping": bool(player.sleeping),
    }


# --------------------------------------------------------------------------------------------------------------
# What the compact text shows, as data (the teacher may use exactly these and nothing finer).

GROUND = "grass"
"""The default ground: not listed among the nearest objects (everything unlisted in view is grass)."""


_BY_DISTANCE = sorted(
    ((abs(c - CENTER_COL) + abs(r - CENTER_ROW), r, c) for r in range(VIEW_ROWS) for c in range(VIEW_COLS)),
)
_FARTHEST_FIRST = [(r * VIEW_COLS + c, (c - CENTER_COL, r - CENTER_ROW), d) for d, r, c in reversed(_BY_DISTANCE) if d]
"""Every cell but the centre, farthest first and, at equal distance, last in reading order first."""


def nearest(view: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Nearest cell of each kind in view (except grass and the player) as an offset (dx, dy) from the player.

    Nearest = smallest Manhattan distance; ties go to the first cell in reading order (north first, then west).
    dx > 0 east, dy > 0 south. Ordered by distance, then name.
    """
    flat = [name for row in view["grid"] for name in row]
    # later writes win: the nearest cell (first in reading order among equals) is written last
    found = {flat[i]: (d, offset) for i, offset, d in _FARTHEST_FIRST}
    found.pop(GROUND, None)
    return {name: found[name][1] for name in sorted(found, key=lambda n: (found[n][0], n))}


def time_of_day(daylight: float) -> str:
    """`day`, `twilight` or `night` (what the text shows of the daylight)."""
    if daylight >= 0.7:
        return "day"
    if daylight >= 0.35:
        return "twilight"
    return "night"
