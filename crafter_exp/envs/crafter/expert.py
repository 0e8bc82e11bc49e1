"""The hand-coded Crafter expert: a priority-based agent deciding only from the local view plus its own memory.

`CrafterExpert.act(view, rng)` takes the structured local view (`view.local_view`: the 9 x 7 grid, facing,
inventory, achievements, step, position, daylight, sleeping) and returns one of Crafter's 17 action names.
Its memory is what it has seen: a map of the materials at every cell it has had in view (absolute positions
from `pos`), the saplings it planted and a few plans in progress (exploration target, shelter site).

Each turn it runs a fixed priority list and plays the first rule that has something to do:
  1. fight a zombie/skeleton standing next to it;
  2. drink / eat when a vital is low (water, cows, ripe plants);
  3. sleep: a first short nap in full daylight for `wake_up` (no zombie spawns then); later, at night, when
     tired or weak, sealed in a 2-cell pocket O -> T1 -> T2: dug into stone or between trees/water, missing
     walls placed as stones, the entrance closed from inside (walk to T2, step back to T1: now facing O);
  4. craft what the nearby table/furnace allow; place stone, table, furnace, sapling when it pays;
  5. cheap achievements in view (drink, cow, sapling, ripe plant, zombie, skeleton);
  6. gather the next tech-tree resource (wood -> stone -> coal -> iron -> diamond), tunnelling through stone
     with a pickaxe (path costs count a mined cell as 2 steps, a cell next to a zombie as 5);
  7. explore: walk to the nearest frontier of the remembered map (biased to mountains when ores are needed).
Recipes and costs come from crafter's own data (`crafter.constants`), so they follow the installed game.
Decisions are deterministic given the view sequence and the rng (ties are broken by the rng only).

Speed (~0.1 ms a turn): the memory is mirrored in numpy arrays, paths come from a compiled bucket-queue
Dijkstra (numba, cached on disk) and the searches over the whole map (targets, frontier, shelter sites, crafting
spots) are vectorised. Each gives exactly the plain-Python loops' results, ties included: same visiting orders
(cells in the order they were first seen / first reached), first-wins on equal costs.
`benchmarks/expert_speed.py` plays the previous version side by side and checks every action.
"""

from __future__ import annotations

import random
from typing import Any, Optional

import numpy as np
from crafter import constants

try:  # numba is a dependency (world generation uses it too); without it the planner runs as plain Python
    from numba import njit
except ImportError:  # pragma: no cover

    def njit(*args, **kwargs):
        return lambda func: func

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
PLAN_LIMIT = 80  # cells farther than this (path cost) are not expanded
MAP_MARGIN = 3  # unknown cells kept around the known map in the arrays (lookups up to 3 cells away stay inside)
MAP_GROW = 32  # cells added on a side when the known map reaches the arrays' edge


@njit(cache=True)
def _dijkstra(cells, step_cost, blocked, danger, height, start, limit, dist, parent, order, work):  # pragma: no cover
    """Dijkstra over a flat grid (index = x * height + y) with the cost on the cell entered.

    Entering a cell costs `step_cost[material code]` (0 = impassable), 0 on `blocked` cells (creatures) and 4
    more on `danger` cells (next to a zombie). Cells costing more than `limit` are reached but not expanded.
    Fills `dist` (-1 = unreached), `parent` (-1 = none) and `order` (cells in the order they were first
    reached; returns how many); `work` is a buffer of 9 * cells.size + 2 integers. The caller keeps the outer
    ring of cells unknown (impassable), so neighbours never leave the arrays.

    Same results as a heap of (cost, (x, y)) tuples, ties included: cells settle in (cost, x, y) order. With
    integer costs >= 1 a bucket per cost does that: every entry of bucket d is queued before bucket d is
    opened (from cheaper cells), and sorting a bucket by flat index sorts it by (x, y).
    """
    size = cells.shape[0]
    weight, cell, link = work[:size], work[size : 5 * size + 1], work[5 * size + 1 :]
    for i in range(size):
        weight[i] = step_cost[cells[i]]
    for i in blocked:
        weight[i] = 0
    for i in danger:
        if weight[i] > 0:
            weight[i] += 4
    dist[:] = -1
    parent[:] = -1
    dist[start] = 0
    order[0] = start
    count = 1
    # bucket d: a linked list of queued cells (head[d] -> link[entry] ...), entry e holds cell[e]
    head = np.full(limit + 1, -1, dtype=np.int64)
    cell[0], link[0], head[0], entries = start, -1, 0, 1
    for d in range(limit + 1):
        n = 0
        e = head[d]
        while e >= 0:
            n += 1
            e = link[e]
        if n == 0:
            continue
        bucket = np.empty(n, dtype=np.int64)
        e, n = head[d], 0
        while e >= 0:
            bucket[n] = cell[e]
            n += 1
            e = link[e]
        bucket.sort()
        for p in bucket:
            if dist[p] != d:
                continue  # reached more cheaply since it was queued
            for k in range(4):  # left, right, up, down (DIRS order)
                if k == 0:
                    q = p - height
                elif k == 1:
                    q = p + height
                elif k == 2:
                    q = p - 1
                else:
                    q = p + 1
                c = weight[q]
                if c == 0:
                    continue
                nd = d + c
                if dist[q] < 0:
                    order[count] = q
                    count += 1
                elif nd >= dist[q]:
                    continue
                dist[q] = nd
                parent[q] = p
                if nd <= limit:  # costlier cells are never expanded
                    cell[entries], link[entries] = q, head[nd]
                    head[nd] = entries
                    entries += 1
    return count


def _add(a: Pos, b: Pos) -> Pos:
    return (a[0] + b[0], a[1] + b[1])


def _manhattan(a: Pos, b: Pos) -> int:
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


class CrafterExpert:
    """Priority-based Crafter agent with a remembered map (see the module docstring)."""

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

    def _plan_paths(self) -> None:
        """Dijkstra from the player over the remembered map: walk = 1, mine-then-walk = 2.

        Results, on the map arrays (flat index `_index`): `_dist` (-1 = unreached), `_parent`, `_order` (cells
        in the order they were reached, the order ties between equal choices follow).
        """
        inv = self.inv
        picks = (inv.get("wood_pickaxe", 0) > 0, inv.get("stone_pickaxe", 0) > 0, inv.get("iron_pickaxe", 0) > 0)
        table = self._tables.get((picks, len(self.names)))
        if table is None:
            step_cost = {m: 1 for m in WALKABLE}
            step_cost["tree"] = 2
            if picks[0]:
                step_cost["stone"] = step_cost["coal"] = 2
            if picks[1]:
                step_cost["iron"] = 2
            if picks[2]:
                step_cost["diamond"] = 2
            table = self._tables[(picks, len(self.names))] = np.zeros(len(self.names), dtype=np.int64)
            for name, cost in step_cost.items():
                if name in self.codes:  # else no cell has it yet
                    table[self.codes[name]] = cost
        # cells next to a zombie cost more: each contact costs health (it strikes as it arrives)
        danger = {_add(z, dxy) for z in self._objects("zombie") for dxy in DIRS + ((0, 0),)}
        index = self._index
        blocked = np.array([index(p) for p in self.objs], dtype=np.int64)
        danger = np.array([index(p) for p in danger], dtype=np.int64)
        start = index(self.pos)
        count = _dijkstra(
            self.mat.ravel(), table, blocked, danger, self.height, start, PLAN_LIMIT,
            self._dist, self._parent, self._order_buf, self._work,
        )
        self._start = start
        self._order = self._order_buf[:count]

    def _index(self, p: Pos) -> int:
        """Flat index of a cell on the map arrays (-1 when outside them: unknown, so unreached)."""
        i, j = p[0] - self.ox, p[1] - self.oy
        w, h = self.mat.shape
        return i * h + j if 0 <= i < w and 0 <= j < h else -1

    def _pos(self, index: int) -> Pos:
        i, j = divmod(int(index), self.height)
        return (i + self.ox, j + self.oy)

    def _reached(self, p: Pos) -> bool:
        i = self._index(p)
        return i >= 0 and self._dist[i] >= 0

    def _step_toward(self, goal: Pos) -> str:
        """First action along the planned path to `goal` (a cell with a known distance)."""
        i, parent, start = self._index(goal), self._parent, self._start
        if i >= 0:
            while parent[i] >= 0 and parent[i] != start:
                i = parent[i]
            p = self._pos(i)
        else:
            p = goal
        d = (p[0] - self.pos[0], p[1] - self.pos[1])
        if self._free(p) or self.facing != d:
            return MOVE[d]  # walks, or only turns when the cell is blocked
        return "do"  # facing a cell to mine on the way

    def _face(self, target: Pos) -> Optional[str]:
        """Act on an adjacent target: `None` when already facing it, else the move that turns toward it."""
        d = (target[0] - self.pos[0], target[1] - self.pos[1])
        if d == self.facing:
            return None
        return MOVE[d]

    def _approach(self, targets: Any, max_cost: float = INF) -> Optional[tuple[str, Pos]]:
        """Go next to the cheapest target. Returns (action, target); action "ready" when facing it.

        `targets`: cells (x, y), or their flat indices (`_cells`). A target next to the player costs 0 when faced
        (0.5 else); any other, the cheapest of its neighbours (the first in DIRS order among equals); among
        equal targets the first one wins.
        """
        if isinstance(targets, np.ndarray):
            flat = targets
        else:
            flat = np.array([self._index(t) for t in targets], dtype=np.int64)
        if not len(flat):
            return None
        around = self._dist[flat[:, None] + self._neighbours].astype(np.float64)
        around[around < 0] = INF
        side = around.argmin(axis=1)
        cost = around[np.arange(len(flat)), side]
        # next to the player (an interior cell, so +-1 never wraps to another column)
        offset = np.abs(flat - self._start)
        adjacent = (offset == 1) | (offset == self.height)
        if adjacent.any():
            faced = flat == self._index(_add(self.pos, self.facing))
            cost[adjacent] = np.where(faced[adjacent], 0.0, 0.5)
        k = int(cost.argmin())
        best_cost = cost[k]
        if best_cost == INF or best_cost > max_cost:
            return None
        target = self._pos(flat[k])
        if adjacent[k]:
            turn = self._face(target)
            return (turn or "ready", target)
        return (self._step_toward(_add(target, DIRS[side[k]])), target)

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

    def _interact(self, targets: list[Pos], action: str = "do", max_cost: float = INF) -> Optional[str]:
        res = self._approach(targets, max_cost)
        if res is None:
            return None
        move, _ = res
        return action if move == "ready" else move

    def _place(self, action: str, where: tuple[str, ...]) -> Optional[str]:
        """Place something on a suitable cell: the one faced, else turn/step so that one is faced."""
        front = _add(self.pos, self.facing)
        if self.mem.get(front) in where and front not in self.objs:
            return action
        for d in DIRS:  # a blocked placeable neighbour (water for stone): turning faces it
            q = _add(self.pos, d)
            if self.mem.get(q) in where and self.mem.get(q) not in WALKABLE and q not in self.objs:
                return MOVE[d]
        for d in DIRS:  # step forward so that the next cell ahead is placeable
            q, r = _add(self.pos, d), _add(self.pos, (2 * d[0], 2 * d[1]))
            if self._free(q) and self.mem.get(r) in where and r not in self.objs:
                return MOVE[d]
        return None

    # ------------------------------------------------------------------------------------------------ rules

    def act(self, view: dict[str, Any], rng: random.Random) -> str:
        """The expert's next action name for this view."""
        self.rng = rng
        self._observe(view)
        if view.get("sleeping"):
            return "noop"
        self._plan_paths()
        action = None
        for rule in (
            self._fight,
            self._survive,
            self._sleep,
            self._craft,
            self._place_things,
            self._opportunities,
            self._gather,
            self._explore,
        ):
            action = rule()
            if action:
                break
        action = action or self._random_move()
        if self.still_steps > 25 and action.startswith("move") and self.rng.random() < 0.5:
            action = self._random_move()  # unstick (e.g. a plan that keeps bumping into something unseen)
        return self._safe(action)

    def _safe(self, action: str) -> str:
        """Never step into lava (it kills at once; the player can walk onto it)."""
        for d, name in MOVE.items():
            if action == name and self.mem.get(_add(self.pos, d)) == "lava":
                return "noop"
        return action

    def _random_move(self) -> str:
        options = [MOVE[d] for d in DIRS if self.mem.get(_add(self.pos, d)) != "lava"]
        return self.rng.choice(options) if options else "noop"

    def _fight(self) -> Optional[str]:
        for p in self._objects(*HOSTILE):
            if _manhattan(p, self.pos) == 1:
                return self._face(p) or "do"
        return None

    def _survive(self) -> Optional[str]:
        inv = self.inv
        if inv["drink"] <= 4:
            self.mode = "drink"
        if inv["food"] <= 4:
            self.mode = self.mode or "eat"
        if self.mode == "drink":
            if inv["drink"] >= 9:
                self.mode = None
            else:
                a = self._interact(self._cells("water"))
                if a:
                    return a
                if inv["drink"] > 3:
                    self.mode = None
        if self.mode == "eat":
            if inv["food"] >= 8:
                self.mode = None
            else:
                a = self._food_action(INF)
                if a:
                    return a
                if inv["food"] > 4:
                    self.mode = None
                else:  # no food in view: where cows were last seen, else explore the grassland
                    seen = sorted(self.cows_seen, key=lambda p: (-self.cows_seen[p], p))
                    for p in seen:
                        if self._reached(p):
                            return self._step_toward(p)
                    return self._explore(prefer="grass")
        # top up when it is cheap
        if inv["drink"] <= 6:
            a = self._interact(self._cells("water"), max_cost=4 if inv["drink"] > 4 else 12)
            if a:
                return a
        if inv["food"] <= 5:
            a = self._food_action(6 if inv["food"] > 4 else 15)
            if a:
                return a
        return None

    def _food_action(self, max_cost: float) -> Optional[str]:
        ripe = [p for p, g in self.plants.items() if g > PLANT_RIPE_STEPS]
        a = self._interact(sorted(ripe), max_cost=max_cost)
        if a:
            return a
        return self._interact(self._objects("cow"), max_cost=max_cost)

    # ---------------------------------------------------------------------------------------------- sleep

    def _hostile_near(self, radius: int) -> bool:
        return any(_manhattan(p, self.pos) <= radius for p in self._objects(*HOSTILE))

    def _sleep(self) -> Optional[str]:
        energy, health = self.inv["energy"], self.inv["health"]
        if "wake_up" not in self.ach and energy < 9 and self.daylight > 0.7 and not self._hostile_near(8):
            return "sleep"  # a first short nap in full daylight (no zombie spawns): cheap `wake_up`
        night = self.daylight < 0.35
        weak = health <= 4 or (health <= 6 and self.daylight < 0.5)
        tired = energy <= 3 or (night and energy <= 7) or (weak and energy < 9)
        if self.shelter is None and not tired:
            return None
        if energy >= 9 and not (self.shelter or {}).get("slept"):
            self.shelter = None
            return None
        if energy >= 9 and self.shelter and self.shelter.get("slept"):
            # awake in the sealed pocket: wait there while weak at night, else go back to work
            sealed = self.pos in self._site_cells(self.shelter["O"], self.shelter["d"])[:2]
            fed = self.inv["food"] >= 2 and self.inv["drink"] >= 2
            if sealed and fed and (health <= 5 or (health <= 7 and night)):
                return "noop"
            self.shelter = None
            return None
        if self.shelter is None or not self._site_ok(self.shelter):
            self.shelter = self._find_shelter()
        if self.shelter is None:
            if energy <= 1 and not self._hostile_near(6):
                return "sleep"
            return None
        a = self._shelter_action(self.shelter)
        if a is None:
            self.shelter = None
        return a

    def _zombie_blocks(self, p: Pos) -> bool:
        """A known cell no creature can stand on (lava counts as open: we never want to stand next to it)."""
        m = self.mem.get(p)
        return m is not None and m not in WALKABLE and m not in ("lava", "void") or (
            self.objs.get(p) in ("plant", "ripe_plant")
        )

    def _site_cells(self, o: Pos, d: Pos) -> tuple[Pos, Pos, list[Pos]]:
        """A pocket O -> T1 -> T2 along d: returns T1, T2 and its walls (sides of T1 and T2, then the end)."""
        t1, t2 = _add(o, d), _add(o, (2 * d[0], 2 * d[1]))
        walls = [_add(t, s) for s in ((d[1], d[0]), (-d[1], -d[0])) for t in (t2, t1)]
        walls.append(_add(t2, d))
        return t1, t2, walls

    def _site_ok(self, site: dict[str, Any]) -> bool:
        return site.get("slept") or self._site_plan(site["O"], site["d"], existing=True) is not None

    def _site_plan(self, o: Pos, d: Pos, existing: bool = False) -> Optional[tuple[int, int]]:
        """(mines, stones to place) for the pocket at (o, d), or None when it cannot be built."""
        t1, t2, walls = self._site_cells(o, d)
        if self.mem.get(o) not in WALKABLE and o != self.pos and not (existing and self._zombie_blocks(o)):
            return None
        mines = 0
        for t in (t1, t2):
            if t in self.objs and t != self.pos:
                return None
            if self.mem.get(t) in WALKABLE or t == self.pos:
                continue
            if not self._minable(t) or self.mem.get(t) in ("iron", "diamond"):
                return None
            mines += 1
        to_place = 0
        for w in walls:
            if self._zombie_blocks(w):
                continue
            if self.mem.get(w) not in WALKABLE or (w in self.objs and self.objs[w] not in HOSTILE):
                return None  # unknown, lava, void: no
            to_place += 1
        return mines, to_place

    def _find_shelter(self) -> Optional[dict[str, Any]]:
        """Cheapest 2-cell pocket O -> T1 -> T2: dug into stone, between trees/water, or walled with stones.

        `_site_plan` for every pocket at once (O a reached walkable cell): the cheapest below 45 wins, the first
        among equals (O in the order cells were reached, then d in DIRS order).
        """
        limit, impossible = 45, 1000
        stone, wood = self.inv["stone"], self.inv["wood"]
        mat, dist, h = self.mat, self._dist, self.height
        walk = np.isin(mat, self._codes_of(*WALKABLE))
        order = self._order
        cand = order[(dist[order] < limit) & walk.ravel()[order]]
        if not len(cand):
            return None
        obj = np.zeros(mat.shape, dtype=bool)
        hostile, plant = obj.copy(), obj.copy()
        for (x, y), name in self.objs.items():
            i, j = x - self.ox, y - self.oy
            obj[i, j] = True
            hostile[i, j] = name in HOSTILE
            plant[i, j] = name in ("plant", "ripe_plant")
        # a pocket cell: 0 mines when walkable (or the player's), 1 when we can mine it here, else impossible
        dug = np.isin(mat, self._codes_of("stone", "coal"))
        minable = np.isin(mat, self._codes_of("tree"))
        if self.inv.get("wood_pickaxe", 0) > 0:
            minable |= dug
        mines = np.where(walk, 0, np.where(minable, 1, impossible))
        mines[obj] = impossible
        mines[self.pos[0] - self.ox, self.pos[1] - self.oy] = 0
        # a wall: nothing to do where no creature can stand (`_zombie_blocks`), a stone on open ground, else no
        blocks = (mat != 0) & ~walk & ~np.isin(mat, self._codes_of("lava", "void")) | plant
        place = np.where(blocks, 0, np.where(walk & ~(obj & ~hostile), 1, impossible))
        mines, place, dug = mines.ravel(), place.ravel(), dug.ravel().astype(np.int64)
        costs = np.empty((len(cand), len(DIRS)), dtype=np.int64)
        for k, (dx, dy) in enumerate(DIRS):
            step, side = dx * h + dy, dy * h + dx  # flat offsets along d and across it
            t1, t2 = cand + step, cand + 2 * step
            n_mines = mines[t1] + mines[t2]
            n_place = place[t2 + side] + place[t1 + side] + place[t2 - side] + place[t1 - side] + place[t2 + step]
            stones = stone + dug[t1] + dug[t2]
            ok = (n_mines < impossible) & (n_place < impossible)
            ok &= ~((stones < n_place) | ((stones == n_place) & (wood < TABLE_WOOD)))  # O needs a stone/table too
            costs[:, k] = np.where(ok, dist[cand] + 2 * n_mines + 5 * n_place, limit)
        k = int(costs.argmin())
        if costs.flat[k] >= limit:
            return None
        return {"O": self._pos(cand[k // len(DIRS)]), "d": DIRS[k % len(DIRS)], "been_t2": False, "slept": False}

    def _codes_of(self, *names: str) -> list[int]:
        return [self.codes[n] for n in names if n in self.codes]

    def _face_cell(self, target: Pos, avoid: tuple[Pos, ...] = ()) -> Optional[str]:
        """First action of the shortest walk that ends next to `target`, facing it (BFS over position x facing).

        A move onto a free cell walks; a move toward a blocked cell only turns: so facing a free cell needs
        walking onto its neighbour from the opposite side.
        """
        start = (self.pos, self.facing)
        if _add(self.pos, self.facing) == target:
            return "ready"
        seen = {start: None}
        frontier = [start]
        for _ in range(30):
            nxt = []
            for state in frontier:
                p, f = state
                for d in DIRS:
                    q = _add(p, d)
                    if self._free(q) and q not in avoid and _manhattan(q, self.pos) <= 12:
                        s2 = (q, d)  # walks (onto the target too, when it is free: then it is not faced)
                    else:
                        s2 = (p, d)
                    if s2 in seen:
                        continue
                    seen[s2] = (state, MOVE[d])
                    if _add(s2[0], d) == target:
                        while seen[s2][0] != start:
                            s2 = seen[s2][0]
                        return seen[s2][1]
                    nxt.append(s2)
            frontier = nxt
            if not frontier:
                break
        return None

    def _shelter_action(self, site: dict[str, Any]) -> Optional[str]:
        o, d = site["O"], site["d"]
        back = (-d[0], -d[1])
        t1, t2, walls = self._site_cells(o, d)
        # walls first (from outside or inside, whichever way each can be faced), then O -> T1 -> T2 -> T1, seal O
        open_walls = [w for w in walls if not self._zombie_blocks(w)]
        if open_walls:
            if self.inv["stone"] == 0:
                return None
            for w in open_walls:
                a = self._face_cell(w)
                if a == "ready":
                    return "do" if w in self.objs else "place_stone"
                if a:
                    return a
            return None
        if self.pos == t2:
            site["been_t2"] = True
            if self._zombie_blocks(o):
                site["slept"] = True
                return "sleep"
            return MOVE[back]
        if self.pos == t1:
            if site["been_t2"] and self.facing == back:
                if self._zombie_blocks(o):
                    site["slept"] = True
                    return "sleep"
                if o in self.objs:
                    return "do" if self.objs[o] in HOSTILE else "noop"
                if self.inv["stone"] > 0:
                    return "place_stone"
                if self.inv["wood"] >= TABLE_WOOD:
                    return "place_table"
                return None
            if self._free(t2):
                return MOVE[d]
            return self._face(t2) or "do"
        site["been_t2"] = False
        if self.pos == o:
            if self._free(t1):
                return MOVE[d]
            return self._face(t1) or "do"
        if not self._reached(o):
            return None
        return self._step_toward(o)

    # ----------------------------------------------------------------------------------------- tech tree

    def _craft(self) -> Optional[str]:
        inv = self.inv
        if not self._near("table"):
            return None
        for tool in TOOLS:
            if inv.get(tool, 0) > 0:
                continue
            recipe = constants.make[tool]
            if all(self._near(s) for s in recipe["nearby"]) and all(
                inv.get(k, 0) >= v for k, v in recipe["uses"].items()
            ):
                return f"make_{tool}"
        return None

    def _missing_tools(self) -> list[str]:
        return [t for t in TOOLS if self.inv.get(t, 0) == 0]

    def _needs(self) -> dict[str, int]:
        """Inventory the remaining tools need (plus a table, a furnace and a spare stone)."""
        need = {"wood": 0, "stone": 0, "coal": 0, "iron": 0}
        missing = self._missing_tools()
        for tool in missing:
            for k, v in constants.make[tool]["uses"].items():
                need[k] += v
        if missing:
            need["wood"] += TABLE_WOOD
        if "place_furnace" not in self.ach or any(t.startswith("iron") for t in missing):
            need["stone"] += FURNACE_STONE
        need["stone"] += 1
        return {k: min(v, 9) for k, v in need.items()}

    def _table_near_cost(self, limit: float) -> bool:
        return self._approach(self._cells("table"), limit) is not None

    def _place_things(self) -> Optional[str]:
        inv, ach = self.inv, self.ach
        missing = self._missing_tools()
        if inv["stone"] > 0 and "place_stone" not in ach:
            a = self._place("place_stone", tuple(x for x in constants.place["stone"]["where"] if x != "lava"))
            if a:
                return a
        # a table when the next tool is affordable and no table is close
        next_tool = self._next_tool()
        if next_tool and not self._near("table") and inv["wood"] >= TABLE_WOOD:
            uses = dict(constants.make[next_tool]["uses"])
            wood_after = inv["wood"] - TABLE_WOOD
            first = "place_table" not in ach
            enough = wood_after >= uses.get("wood", 0) + (1 if first else 0) and all(
                inv.get(k, 0) >= v for k, v in uses.items() if k != "wood"
            )
            if enough and not self._table_near_cost(10):
                a = self._place("place_table", tuple(constants.place["table"]["where"]))
                if a:
                    return a
        # a furnace: for the achievement as soon as affordable, else next to a table when iron tools are due
        reserve = sum(constants.make[t]["uses"].get("stone", 0) for t in missing)
        if inv["stone"] >= FURNACE_STONE + reserve and not self._near("furnace"):
            due = next_tool in ("iron_pickaxe", "iron_sword") and self._near("table") and all(
                inv.get(k, 0) >= v for k, v in constants.make[next_tool]["uses"].items()
            )
            if "place_furnace" not in ach or due:
                a = self._place("place_furnace", tuple(constants.place["furnace"]["where"]))
                if a:
                    return a
        if inv["sapling"] > 0:
            front = _add(self.pos, self.facing)
            if self.mem.get(front) == "grass" and front not in self.objs:
                self.plants[front] = 0
                return "place_plant"
        return None

    def _next_tool(self) -> Optional[str]:
        missing = self._missing_tools()
        # swords after their pickaxe: the pickaxe unlocks the next resource
        for tool in ("wood_pickaxe", "stone_pickaxe", "iron_pickaxe", "wood_sword", "stone_sword", "iron_sword"):
            if tool in missing:
                req = {"stone_pickaxe": "wood_pickaxe", "iron_pickaxe": "stone_pickaxe"}.get(tool)
                if req and req in missing:
                    continue
                return tool
        return None

    def _opportunities(self) -> Optional[str]:
        inv, ach = self.inv, self.ach
        if "collect_drink" not in ach and inv["drink"] < 9:
            a = self._interact(self._cells("water"), max_cost=12)
            if a:
                return a
        if "eat_cow" not in ach:
            a = self._interact(self._objects("cow"), max_cost=12)
            if a:
                return a
        ripe = sorted(p for p, g in self.plants.items() if g > PLANT_RIPE_STEPS)
        if ripe and "eat_plant" not in ach:
            a = self._interact(ripe, max_cost=40)
            if a:
                return a
        if self.step >= self.chase_block_until and inv["health"] >= 5:
            for name in HOSTILE:
                if f"defeat_{name}" in ach:
                    continue
                a = self._interact(self._objects(name), max_cost=10)
                if a:
                    self.chase_steps += 1
                    if self.chase_steps > 40:
                        self.chase_steps, self.chase_block_until = 0, self.step + 60
                    return a
        front = _add(self.pos, self.facing)
        want_sapling = "collect_sapling" not in ach or ("eat_plant" not in ach and not self.plants)
        if want_sapling and inv["sapling"] == 0 and self.mem.get(front) == "grass" and front not in self.objs:
            return "do"
        return None

    def _gather(self) -> Optional[str]:
        inv = self.inv
        need = self._needs()
        missing = self._missing_tools()
        next_tool = self._next_tool()
        # go to a known table when the next tool is affordable (a far one is replaced in _place_things)
        if next_tool:
            uses = constants.make[next_tool]["uses"]
            if all(inv.get(k, 0) >= v for k, v in uses.items()):
                stations = constants.make[next_tool]["nearby"]
                spots = self._dist.reshape(self.mat.shape) >= 0
                for station in stations:
                    spots &= self._near_mask(station)
                spots = np.flatnonzero(spots)
                if len(spots):
                    costs = self._dist[spots]
                    best = self._pos(spots[costs == costs.min()][0])  # flat index order = (x, y) order
                    if best != self.pos:
                        return self._step_toward(best)
        order = []
        if inv["wood"] < need["wood"]:
            order.append(("tree", inv["wood"] < (1 + TABLE_WOOD if "place_table" not in self.ach else 2)))
        has_wp = inv.get("wood_pickaxe", 0) > 0
        has_sp = inv.get("stone_pickaxe", 0) > 0
        if has_wp and inv["stone"] < need["stone"]:
            order.append(("stone", True))
        if has_wp and (inv["coal"] < need["coal"] or "collect_coal" not in self.ach):
            order.append(("coal", True))
        if has_sp and (inv["iron"] < need["iron"] or "collect_iron" not in self.ach):
            order.append(("iron", True))
        if inv.get("iron_pickaxe", 0) > 0:
            order.append(("diamond", True))
        # cheap ones first (anything within a few steps), then the earliest need at any distance
        for material, _ in order:
            a = self._interact(self._cells(material), max_cost=6)
            if a:
                return a
        for material, _ in order:
            a = self._interact(self._cells(material))
            if a:
                return a
        # spare wood while trees are close (the tools ahead need it)
        if inv["wood"] < 9 and missing:
            a = self._interact(self._cells("tree"), max_cost=4)
            if a:
                return a
        return None

    def _explore(self, prefer: Optional[str] = None) -> Optional[str]:
        if prefer is None:
            prefer = "ore" if self.inv.get("wood_pickaxe", 0) > 0 else None
        t = self.explore_target
        stale = t is None or t == self.pos or not self._reached(t) or not self._is_frontier(t)
        if stale or prefer != self.explore_kind:
            t = self._pick_frontier(prefer)
            self.explore_target, self.explore_kind = t, prefer
        if t is None:
            return None
        return self._step_toward(t)

    def _is_frontier(self, p: Pos) -> bool:
        return any(_add(p, d) not in self.mem for d in DIRS)

    def _pick_frontier(self, prefer: Optional[str]) -> Optional[Pos]:
        """The cheapest reached frontier cell (plus a random 0..0.5 per cell, drawn in the order cells were reached;
        a bonus for the preferred ground), the first reached among equals."""
        order = self._order[1:]  # the player's cell is reached first
        unknown = self.mat.ravel() == 0
        h = self.height
        cand = order[unknown[order - h] | unknown[order + h] | unknown[order - 1] | unknown[order + 1]]
        if not len(cand):
            return None
        rng = self.rng.random
        score = self._dist[cand] + np.array([rng() for _ in range(len(cand))]) * 0.5
        mat = self.mat.ravel()[cand]
        if prefer == "ore":
            score[~np.isin(mat, [self.codes.get("grass", -1), self.codes.get("sand", -1)])] -= 6
        elif prefer == "grass":
            score[mat == self.codes.get("grass", -1)] -= 10
        return self._pos(cand[int(score.argmin())])

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
