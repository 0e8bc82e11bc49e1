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

from crafter_exp.envs.crafter.expert.memory import (
    DIRS,
    FURNACE_STONE,
    HOSTILE,
    INF,
    MOVE,
    PLANT_RIPE_STEPS,
    TABLE_WOOD,
    TOOLS,
    WALKABLE,
    Pos,
    _add,
    _manhattan,
)
from crafter_exp.envs.crafter.expert.planner import PathPlanner


class CrafterExpert(PathPlanner):
    """Priority-based Crafter agent with a remembered map (see the module docstring)."""

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
        return (
            m is not None
            and m not in WALKABLE
            and m not in ("lava", "void")
            or (self.objs.get(p) in ("plant", "ripe_plant"))
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

    def _face_cell(self, target: Pos, avoid: tuple[Pos, ...] = ()) -> Optional[str]:
        """First action of the shortest walk that ends next to `target`, facing it (BFS over position x facing).

        A move onto a free cell walks; a move toward a blocked cell only turns: so facing a free cell needs
        walking onto its neighbour from the opposite side.
        """
        start = (self.pos, self.facing)
        if _add(self.pos, self.facing) == target:
            return "ready"
        seen: dict[Any, Any] = {start: None}
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
            due = (
                next_tool in ("iron_pickaxe", "iron_sword")
                and self._near("table")
                and all(inv.get(k, 0) >= v for k, v in constants.make[next_tool]["uses"].items())
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
                reachable = self._dist.reshape(self.mat.shape) >= 0
                for station in stations:
                    reachable &= self._near_mask(station)
                spots = np.flatnonzero(reachable)
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
