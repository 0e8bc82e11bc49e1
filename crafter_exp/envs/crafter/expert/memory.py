"""The expert's memory: every cell it has had in view, mirrored in numpy arrays for whole-map searches.

Materials by absolute position (`mem`, and `mat`/`serial` arrays whose tie-breaking order is the order cells were
first seen), the creatures in view this turn, saplings and cows it knows of. Rules and planning build on this.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from crafter import constants

Pos = tuple[int, int]

DIRS: tuple[Pos, ...] = ((-1, 0), (1, 0), (0, -1), (0, 1))
MOVE = {(-1, 0): "move_left", (1, 0): "move_right", (0, -1): "move_up", (0, 1): "move_down"}
WALKABLE = frozenset(constants.walkable)  # grass, sand, path: where the player and creatures can stand
CREATURES = frozenset({"zombie", "skeleton", "cow", "arrow", "plant", "ripe_plant", "player"})
HOSTILE = ("zombie", "skeleton")
TOOLS = ("wood_pickaxe", "wood_sword", "stone_pickaxe", "stone_sword", "iron_pickaxe", "iron_sword")
TABLE_WOOD = constants.place["table"]["uses"]["wood"]
FURNACE_STONE = constants.place["furnace"]["uses"]["stone"]
PLANT_RIPE_STEPS = 300  # stock Plant.ripe: grown > 300 (it grows only while the player is within 18 cells)
GROW_RADIUS = 17  # objects update only when within 2 * max(view) = 18 (Manhattan) of the player
INF = float("inf")
MAP_MARGIN = 3  # unknown cells kept around the known map in the arrays (lookups up to 3 cells away stay inside)
MAP_GROW = 32  # cells added on a side when the known map reaches the arrays' edge


def _add(a: Pos, b: Pos) -> Pos:
    return (a[0] + b[0], a[1] + b[1])


def _manhattan(a: Pos, b: Pos) -> int:
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


class MapMemory:
    """What the expert remembers of the world, and the lookups over it."""

    def __init__(self) -> None:
        self.reset()

    # ----------------------------------------------------------------------------------------- state / memory

    def reset(self) -> None:
        """Forget everything (a new episode)."""
        self.mem: dict[Pos, str] = {}
        """Last seen material of every cell ever in view (creatures are not materials: they live in `objs`)."""
        self.objs: dict[Pos, str] = {}
        """Creatures/objects in view this turn."""
        self.plants: dict[Pos, int] = {}
        """Saplings we know of -> steps they have grown while we were near (estimate)."""
        self.explore_target: Optional[Pos] = None
        self.explore_kind: Optional[str] = None
        self.shelter: Optional[dict[str, Any]] = None
        self.mode: Optional[str] = None  # "drink" / "eat": keep going until the vital is topped up
        self.chase_steps = 0
        self.chase_block_until = -1
        self.last_pos: Optional[Pos] = None
        self.still_steps = 0
        self.cows_seen: dict[Pos, int] = {}
        """Where cows were last seen -> step (cows wander slowly: a good place to look for food)."""
        # `mem` mirrored in arrays for the whole-map work (path planning, searches over all known cells):
        # cell (x, y) is [x - ox, y - oy]; `mat` holds material codes (0 = unknown), `serial` the order in
        # which cells entered `mem` (its dict order, which breaks ties between equally good targets).
        self.ox = self.oy = 0
        self.mat = np.zeros((0, 0), dtype=np.int16)
        self.serial = np.zeros((0, 0), dtype=np.int64)
        self.seen = 0
        self._tables: dict[tuple, np.ndarray] = {}  # step costs per material code, by (pickaxes, codes known)

    # The names seen so far -> codes (shared by all experts: codes are internal and only ever added).
    names: list[Optional[str]] = [None]
    codes: dict[str, int] = {}

    view_codes: dict[str, int] = {}
    """View names -> material codes, -1 for creatures."""

    @classmethod
    def _view_code(cls, name: str) -> int:
        code = cls.view_codes.get(name)
        if code is None:
            code = cls.view_codes[name] = -1 if name in CREATURES else cls._code(name)
        return code

    @classmethod
    def _code(cls, name: str) -> int:
        code = cls.codes.get(name)
        if code is None:
            code = cls.codes[name] = len(cls.names)
            cls.names.append(name)
        return code

    def _fit(self, x0: int, y0: int, x1: int, y1: int) -> None:
        """Grow the arrays so that cells x0..x1 x y0..y1 lie at least MAP_MARGIN inside them."""
        w, h = self.mat.shape
        if w and x0 - MAP_MARGIN >= self.ox and y0 - MAP_MARGIN >= self.oy:
            if x1 + MAP_MARGIN < self.ox + w and y1 + MAP_MARGIN < self.oy + h:
                return
        if not w:
            nx0, ny0, nx1, ny1 = x0 - MAP_GROW, y0 - MAP_GROW, x1 + MAP_GROW, y1 + MAP_GROW
        else:
            nx0 = min(self.ox, x0 - MAP_MARGIN - MAP_GROW)
            ny0 = min(self.oy, y0 - MAP_MARGIN - MAP_GROW)
            nx1 = max(self.ox + w - 1, x1 + MAP_MARGIN + MAP_GROW)
            ny1 = max(self.oy + h - 1, y1 + MAP_MARGIN + MAP_GROW)
        mat = np.zeros((nx1 - nx0 + 1, ny1 - ny0 + 1), dtype=np.int16)
        serial = np.full(mat.shape, -1, dtype=np.int64)
        if w:
            sx, sy = self.ox - nx0, self.oy - ny0
            mat[sx : sx + w, sy : sy + h] = self.mat
            serial[sx : sx + w, sy : sy + h] = self.serial
        self.mat, self.serial, self.ox, self.oy = mat, serial, nx0, ny0
        self.height = mat.shape[1]
        self._neighbours = np.array([dx * self.height + dy for dx, dy in DIRS], dtype=np.int64)
        size = mat.size
        self._work = np.empty(9 * size + 2, dtype=np.int64)
        self._dist = np.empty(size, dtype=np.int64)
        self._parent = np.empty(size, dtype=np.int64)
        self._order_buf = np.empty(size, dtype=np.int64)

    def _remember(self, p: Pos, name: str) -> None:
        """mem[p] = name, mirrored in the arrays."""
        i, j = p[0] - self.ox, p[1] - self.oy
        if p not in self.mem:
            self.serial[i, j] = self.seen
            self.seen += 1
        self.mem[p] = name
        self.mat[i, j] = self.codes.get(name) or self._code(name)

    def _observe(self, view: dict[str, Any]) -> None:
        grid = view["grid"]
        rows, cols = len(grid), len(grid[0])
        cr, cc = rows // 2, cols // 2
        px, py = view["pos"]
        self.pos: Pos = (int(px), int(py))
        self.facing: Pos = (int(view["facing"][0]), int(view["facing"][1]))
        self.inv: dict[str, int] = view["inventory"]
        self.ach: set = view["achievements"]
        self.step: int = int(view["step"])
        self.daylight: float = float(view.get("daylight", 1.0))
        self.objs = {}
        self._cells_cache: dict[str, np.ndarray] = {}
        x0, y0 = self.pos[0] - cc, self.pos[1] - cr
        self._fit(x0, y0, x0 + cols - 1, y0 + rows - 1)
        # Only creature cells and cells whose material differs from memory need work (in reading order: it
        # numbers the cells first seen).
        view_codes = self.view_codes
        try:
            codes = [view_codes[name] for row in grid for name in row]
        except KeyError:
            codes = [self._view_code(name) for row in grid for name in row]
        block = np.array(codes, dtype=np.int16).reshape(rows, cols)
        i0, j0 = x0 - self.ox, y0 - self.oy
        changed = (block < 0) | (block != self.mat[i0 : i0 + cols, j0 : j0 + rows].T)
        remember, mem = self._remember, self.mem
        for k in np.flatnonzero(changed).tolist():
            r, c = divmod(k, cols)
            name = grid[r][c]
            p = (x0 + c, y0 + r)
            if name in CREATURES:
                if name != "player":
                    self.objs[p] = name
                # the material under a creature is not shown: keep memory, else assume what it stands on
                if mem.get(p) not in WALKABLE and name != "arrow":
                    remember(p, "path" if name == "skeleton" else "grass")
            else:
                remember(p, name)
        # Saplings: grow only while we are near; forget those no longer there.
        for p in list(self.plants):
            if _manhattan(p, self.pos) <= GROW_RADIUS:
                self.plants[p] += 1
            if self._in_view(p, rows, cols) and self.objs.get(p) not in ("plant", "ripe_plant"):
                del self.plants[p]
        for p in list(self.cows_seen):
            if self._in_view(p, rows, cols) or self.step - self.cows_seen[p] > 150:
                del self.cows_seen[p]
        for p, name in self.objs.items():
            if name == "cow":
                self.cows_seen[p] = self.step
            if name in ("plant", "ripe_plant") and p not in self.plants:
                self.plants[p] = 0
            if name == "ripe_plant":
                self.plants[p] = max(self.plants[p], PLANT_RIPE_STEPS + 1)
            elif name == "plant" and self.plants[p] > PLANT_RIPE_STEPS:
                self.plants[p] = PLANT_RIPE_STEPS - 10  # in view and not ripe yet: look again a bit later
        if self.pos == self.last_pos:
            self.still_steps += 1
        else:
            self.still_steps = 0
        self.last_pos = self.pos

    def _in_view(self, p: Pos, rows: int, cols: int) -> bool:
        return abs(p[0] - self.pos[0]) <= cols // 2 and abs(p[1] - self.pos[1]) <= rows // 2

    # --------------------------------------------------------------------------------------------- helpers

    def _free(self, p: Pos) -> bool:
        """Walkable now: a walkable material with nothing on it (lava is excluded: stepping in kills)."""
        return self.mem.get(p) in WALKABLE and p not in self.objs

    def _minable(self, p: Pos) -> bool:
        m = self.mem.get(p)
        if m == "tree":
            return True
        if m in ("stone", "coal"):
            return self.inv.get("wood_pickaxe", 0) > 0
        if m == "iron":
            return self.inv.get("stone_pickaxe", 0) > 0
        if m == "diamond":
            return self.inv.get("iron_pickaxe", 0) > 0
        return False

    def _near(self, material: str, p: Optional[Pos] = None) -> bool:
        """Material within the 3 x 3 square around p (crafting's `nearby` check)."""
        x, y = p or self.pos
        return any(self.mem.get((x + dx, y + dy)) == material for dx in (-1, 0, 1) for dy in (-1, 0, 1))

    def _cells(self, material: str) -> np.ndarray:
        """Flat indices of the known cells of a material, in the order they were first seen (cached per turn)."""
        found = self._cells_cache.get(material)
        if found is None:
            code = self.codes.get(material)
            if code is None:
                found = np.zeros(0, dtype=np.int64)
            else:
                found = np.flatnonzero(self.mat == code)
                found = found[np.argsort(self.serial.ravel()[found])]
            self._cells_cache[material] = found
        return found

    def _objects(self, *names: str) -> list[Pos]:
        return sorted(p for p, n in self.objs.items() if n in names)

    def _codes_of(self, *names: str) -> list[int]:
        return [self.codes[n] for n in names if n in self.codes]

    def _is_frontier(self, p: Pos) -> bool:
        return any(_add(p, d) not in self.mem for d in DIRS)

    def _near_mask(self, material: str) -> np.ndarray:
        """Cells with `material` within their 3 x 3 square (`_near` for every cell of the map arrays)."""
        out = np.zeros(self.mat.shape, dtype=bool)
        code = self.codes.get(material)
        if code is None:
            return out
        hit = self.mat == code
        w, h = hit.shape
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                out[1 : w - 1, 1 : h - 1] |= hit[1 + dx : w - 1 + dx, 1 + dy : h - 1 + dy]
        return out
