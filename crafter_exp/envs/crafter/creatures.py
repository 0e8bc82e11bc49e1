"""crafter's creatures with their geometry in plain ints: same behaviour, same random draws, less numpy.

Stock `Object.move/is_free/distance/toward` build small numpy arrays on every call (a cow's step costs several);
`FastObject` does the same arithmetic on Python ints. Every class here is crafter's own class with only these
helpers replaced, so `update()` — the behaviour — is crafter's code. Tests step these against stock crafter.
"""

from __future__ import annotations

import numpy as np
from crafter import objects


def _xy(value) -> tuple[int, int]:
    if hasattr(value, "pos"):
        value = value.pos
    if type(value) is np.ndarray:
        return tuple(value.tolist())
    return int(value[0]), int(value[1])


class FastObject:
    """Mixin (put first in the bases) over a `crafter.objects.Object` subclass."""

    def move(self, direction):
        dx, dy = _xy(direction)
        x, y = self.pos.tolist()
        target = (x + dx, y + dy)
        if self.is_free(target):
            self.world.move(self, target)
            return True
        return False

    def is_free(self, target, materials=None):
        materials = self.walkable if materials is None else materials
        material, obj = self.world[target]
        return obj is None and material in materials

    def distance(self, target):
        tx, ty = _xy(target)
        x, y = self.pos.tolist()
        return abs(tx - x) + abs(ty - y)

    def toward(self, target, long_axis=True):
        tx, ty = _xy(target)
        x, y = self.pos.tolist()
        ox, oy = tx - x, ty - y
        if abs(ox) > abs(oy) if long_axis else abs(ox) <= abs(oy):
            return np.array(((ox > 0) - (ox < 0), 0))  # stock: np.array((np.sign(offset[0]), 0))
        return np.array((0, (oy > 0) - (oy < 0)))


class Player(FastObject, objects.Player):
    pass


class Cow(FastObject, objects.Cow):
    pass


class Zombie(FastObject, objects.Zombie):
    pass


class Arrow(FastObject, objects.Arrow):
    pass


class Skeleton(FastObject, objects.Skeleton):
    arrow_cls: type = Arrow

    def _shoot(self, direction):
        # stock's code, creating `arrow_cls` (stock names objects.Arrow here)
        if self.reload > 0:
            return
        if direction[0] == 0 and direction[1] == 0:
            return
        pos = self.pos + direction
        if self.is_free(pos, objects.Arrow.walkable):
            self.world.add(self.arrow_cls(self.world, pos, direction))
            self.reload = 4
