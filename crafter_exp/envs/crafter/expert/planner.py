"""Path planning over the remembered map: a compiled bucket-queue Dijkstra and the moves that follow a path.

Costs: walking a cell 1, mining then walking it 2, a cell next to a zombie more (each contact costs health).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from numba import njit

from crafter_exp.envs.crafter.expert.memory import (
    DIRS,
    INF,
    MOVE,
    WALKABLE,
    MapMemory,
    Pos,
    _add,
)

PLAN_LIMIT = 80  # cells farther than this (path cost) are not expanded


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


class PathPlanner(MapMemory):
    """Plans paths from the player over the remembered map and turns them into actions."""

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
        near_zombie = {_add(z, dxy) for z in self._objects("zombie") for dxy in DIRS + ((0, 0),)}
        index = self._index
        blocked = np.array([index(p) for p in self.objs], dtype=np.int64)
        danger = np.array([index(p) for p in near_zombie], dtype=np.int64)
        start = index(self.pos)
        count = _dijkstra(
            self.mat.ravel(),
            table,
            blocked,
            danger,
            self.height,
            start,
            PLAN_LIMIT,
            self._dist,
            self._parent,
            self._order_buf,
            self._work,
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

    def _interact(self, targets: Any, action: str = "do", max_cost: float = INF) -> Optional[str]:
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
