"""What the player saw earlier and no longer sees: the `Remembered` line of the text (`env.memory`).

One observation shows the 9 x 7 cells around the player; the scripted teacher steers by everything it has seen
(water behind it, the table it placed, the trees it walked past), so a student that sees one observation cannot
tell why the teacher turns back. `SeenCells` keeps, per episode, the last seen kind of every cell that was in view
within the last `window` steps, and `nearest` gives the nearest remembered cell of each kind that is out of view
now, as offsets from the player, the way `view.nearest` does for the cells in view. Only things that stay where
they are count (materials, tables, furnaces, plants); creatures move, and a cell that looks different when seen
again is updated (a mined stone becomes path).
"""

from __future__ import annotations

from typing import Any

from crafter_exp.envs.crafter.view import CENTER_COL, CENTER_ROW

REMEMBERED = ("water", "tree", "stone", "coal", "iron", "diamond", "table", "furnace", "lava", "plant", "ripe_plant")
"""Kinds worth remembering: they stay where they were seen (creatures and the ground are not remembered)."""


class SeenCells:
    """Cells seen in the last `window` steps of an episode, by kind (`reset` per episode, `update` per view)."""

    def __init__(self, window: int):
        self.window = window
        self.reset()

    def reset(self) -> None:
        self._kind_at: dict[tuple[int, int], str] = {}
        """Last seen kind of every remembered cell (absolute world position)."""
        self._seen_at: dict[str, dict[tuple[int, int], int]] = {kind: {} for kind in REMEMBERED}
        """kind -> {position: step it was last in view}."""

    def update(self, view: dict[str, Any]) -> None:
        """Record what is in view now (`view.local_view`'s grid, at `view['pos']` and `view['step']`)."""
        x0, y0 = view["pos"][0] - CENTER_COL, view["pos"][1] - CENTER_ROW
        step = view["step"]
        kind_at, seen_at = self._kind_at, self._seen_at
        for r, row in enumerate(view["grid"]):
            for c, name in enumerate(row):
                pos = (x0 + c, y0 + r)
                old = kind_at.get(pos)
                if old is not None and old != name:
                    del seen_at[old][pos]
                    del kind_at[pos]
                if name in seen_at:
                    kind_at[pos] = name
                    seen_at[name][pos] = step

    def nearest(self, view: dict[str, Any]) -> dict[str, tuple[int, int]]:
        """Nearest remembered cell (Manhattan; ties: north first, then west) of each kind absent from the view,
        seen within the window, as an offset (dx, dy) from the player; ordered by distance, then name."""
        in_view = {name for row in view["grid"] for name in row}
        px, py = view["pos"]
        oldest = view["step"] - self.window
        found: dict[str, tuple[int, int, int]] = {}
        for kind, cells in self._seen_at.items():
            if kind in in_view or not cells:
                continue
            best = min(
                ((abs(x - px) + abs(y - py), y - py, x - px) for (x, y), step in cells.items() if step >= oldest),
                default=None,
            )
            if best is not None:
                found[kind] = best
        return {kind: (found[kind][2], found[kind][1]) for kind in sorted(found, key=lambda k: (found[k][0], k))}
