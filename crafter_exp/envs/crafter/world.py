"""`FastWorld`: crafter's `engine.World` plus two plain-Python mirrors of its numpy maps, for speed.

crafter keeps materials and objects in numpy maps and converts positions to numpy per call; the game loop and
the text view touch them hundreds of times a step. This subclass returns the same results with ints, and keeps
- `positions`: {object index: (x, y)} of the live objects, in index order (= `World.objects` order);
- `material_columns()`: material names as a list of columns (`[x][y]`), built on first use after a reset and
  then kept current by `__setitem__` (world generation writes `_mat_map` directly, before any use).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from crafter import engine


class FastWorld(engine.World):
    def reset(self, seed=None):
        super().reset(seed)
        self.positions: dict[int, tuple[int, int]] = {}
        self._columns: Optional[list[list[str]]] = None

    def __getitem__(self, pos):
        x, y = pos.tolist() if type(pos) is np.ndarray else pos
        if not (0 <= x < self.area[0] and 0 <= y < self.area[1]):
            return None, None
        return self._mat_names[self._mat_map[x, y]], self._objects[self._obj_map[x, y]]

    def __setitem__(self, pos, material):
        super().__setitem__(pos, material)
        if self._columns is not None:
            x, y = pos.tolist() if type(pos) is np.ndarray else pos
            self._columns[x][y] = material

    def add(self, obj):
        super().add(obj)
        self.positions[len(self._objects) - 1] = tuple(obj.pos.tolist())

    def remove(self, obj):
        if obj.removed:
            return
        index = int(self._obj_map[tuple(obj.pos)])
        super().remove(obj)
        del self.positions[index]

    def move(self, obj, pos):
        if obj.removed:
            return
        x, y = pos.tolist() if type(pos) is np.ndarray else (int(pos[0]), int(pos[1]))
        ox, oy = obj.pos.tolist()
        obj_map = self._obj_map
        assert obj_map[x, y] == 0
        index = int(obj_map[ox, oy])
        obj_map[x, y] = index
        obj_map[ox, oy] = 0
        self.positions[index] = (x, y)
        csx, csy = self._chunk_size
        if ox // csx != x // csx or oy // csy != y // csy:
            self._chunks[self.chunk_key((ox, oy))].remove(obj)
            self._chunks[self.chunk_key((x, y))].add(obj)
        obj.pos = np.array((x, y))

    def material_columns(self) -> list[list[str]]:
        """Material names, `[x][y]` (do not modify)."""
        if self._columns is None:
            names = np.array([self._mat_names[i] for i in range(len(self._mat_names))], dtype=object)
            self._columns = names[self._mat_map].tolist()
        return self._columns
