"""`CrafterGame`: stock `crafter.Env`, made reproducible and fast, with difficulty presets.

Differences from `crafter.Env` (everything else is crafter's own code; creatures are crafter's classes with
their geometry helpers in plain ints, see `creatures.py`):
- Reproducible: `_balance_object` sorts the creatures by (class name, position) before choosing one to despawn.
  Stock iterates a `set`, whose order follows memory addresses, so the same seed and actions diverged across
  processes. This is the only change to the dynamics; tests check it against stock with the same sort patched in.
- `reset_to(seed)` gives the world stock gives on the FIRST reset of `crafter.Env(seed=seed)`, whatever this
  object did before (stock seeds each reset with hash((seed, resets so far)); the counter is restarted here).
- No pixels unless `render=True` (stock renders every step: ~70 % of its step time); `step` returns obs=None
  then, and `info` leaves out the semantic map (call `semantic()` when needed). Stock's night rendering draws
  its noise from the world's RandomState, so the same number of draws is consumed without rendering.
- World generation is `worldgen.generate_world` (vectorised, same worlds); `FastWorld` does crafter's World
  lookups and moves in plain ints.
- Objects near the player are found on an int position table, not by numpy per object (same set, same order).
- Difficulty: `difficulty.PRESETS` numbers for balance (spawn targets) and creature classes; `normal` = stock.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import crafter
import numpy as np
from crafter import constants, engine, objects

from crafter_exp.envs.crafter.difficulty import PRESETS, kinds_for
from crafter_exp.envs.crafter.world import FastWorld
from crafter_exp.envs.crafter.worldgen import generate_world

# stock SemanticView's object order (ids follow the material ids)
_SEMANTIC_KINDS = (objects.Player, objects.Cow, objects.Zombie, objects.Skeleton, objects.Arrow, objects.Plant)


@functools.lru_cache(maxsize=1)
def shared_textures() -> engine.Textures:
    """Crafter's textures, read once per process (only rendering uses them)."""
    return engine.Textures(constants.root / "assets")


def stable_key(obj: Any) -> tuple[str, int, int]:
    """Process-independent order for creatures (positions are unique on the object map)."""
    return type(obj).__name__, int(obj.pos[0]), int(obj.pos[1])


class CrafterGame(crafter.Env):
    """One Crafter game; `reset_to(seed)` then `step(action_index)` (stock's 4-tuple)."""

    def __init__(self, area: int = 64, length: int = 10000, difficulty: str = "normal", render: bool = False):
        # stock's __init__ (crafter.Env), except that the world is a FastWorld from the start and the textures are
        # loaded once per process: stock reads every PNG on each Env() (~25 ms), and a rollout makes one per episode
        view, size = np.array((9, 9)), np.array((64, 64))
        self._area, self._view, self._size = (area, area), view, size
        self._reward, self._length, self._seed, self._episode = True, length, 0, 0
        self._world = FastWorld((area, area), constants.materials, (12, 12))
        self._textures = shared_textures()
        item_rows = int(np.ceil(len(constants.items) / view[0]))
        self._local_view = engine.LocalView(self._world, self._textures, [view[0], view[1] - item_rows])
        self._item_view = engine.ItemView(self._textures, [view[0], item_rows])
        self._sem_view = engine.SemanticView(self._world, list(_SEMANTIC_KINDS))
        # set by reset() (as in stock crafter.Env)
        self._step: Any = None
        self._player: Any = None
        self._last_health: Any = None
        self._unlocked: Any = None
        self.reward_range = self.metadata = None
        self.difficulty = difficulty
        self._balance = PRESETS[difficulty]
        self._kinds = kinds_for(difficulty)
        self._render_frames = render
        self._near = 2 * max(self._view)  # stock updates objects closer than this (Manhattan distance)
        self.frame: Optional[np.ndarray] = None
        """The last rendered image (only with render=True)."""

    # ---------------------------------------------------------------------------------------------- episodes

    def reset_to(self, seed: int) -> Optional[np.ndarray]:
        """The world of the first reset of `crafter.Env(seed=seed)`."""
        self._seed = seed
        self._episode = 0
        return self.reset()

    def reset(self) -> Optional[np.ndarray]:
        # stock reset, with our player class and world generation
        center = (self._world.area[0] // 2, self._world.area[1] // 2)
        self._episode += 1
        self._step = 0
        self._world.reset(seed=hash((self._seed, self._episode)) % (2**31 - 1))
        self._update_time()
        self._player = self._kinds.player(self._world, center)
        self._last_health = self._player.health
        self._world.add(self._player)
        self._unlocked = set()
        generate_world(self._world, self._player, self._kinds)
        return self._obs()

    def step(self, action: int):
        self._step += 1
        self._update_time()
        player = self._player
        player.action = constants.actions[action]
        self._update_objects()
        if self._step % 10 == 0:
            self._space = self._count_space()
            for chunk, objs in self._world.chunks.items():
                self._balance_chunk(chunk, objs)
        obs = self._obs()
        reward = (player.health - self._last_health) / 10
        self._last_health = player.health
        unlocked = {name for name, count in player.achievements.items() if count > 0 and name not in self._unlocked}
        if unlocked:
            self._unlocked |= unlocked
            reward += 1.0
        dead = player.health <= 0
        over = bool(self._length) and self._step >= self._length
        info = {
            "inventory": player.inventory.copy(),
            "achievements": player.achievements.copy(),
            "discount": 1 - float(dead),
            "player_pos": player.pos,
            "reward": reward,
            "unlocked": unlocked,
            "dead": dead,
            "over": over,
        }
        if not self._reward:
            reward = 0.0
        return obs, reward, dead or over, info

    def _update_objects(self) -> None:
        """Stock: `for obj in self._world.objects: if self._player.distance(obj) < 2 * max(self._view): obj.update()`.

        Same objects, same order, measured on the world's int position table. Why that is exact: stock iterates
        a snapshot taken before any update, in index order (the table's order); the player is object 1 (added
        first at reset) and updates first; an object moves or removes only itself in its own update, so every
        other object is, at its turn, where the snapshot says; objects added during the loop (plants, arrows)
        are not in the snapshot, as in stock.
        """
        world, player, near = self._world, self._player, self._near
        objs = world._objects
        if objs[1] is not player:  # not a world this class reset: stock's loop
            for obj in world.objects:
                if player.distance(obj) < near:
                    obj.update()
            return
        snapshot = list(world.positions.items())
        player.update()
        px, py = player.pos.tolist()
        for i in [i for i, (x, y) in snapshot if abs(x - px) + abs(y - py) < near and i != 1]:
            objs[i].update()

    def _obs(self) -> Optional[np.ndarray]:
        if self._render_frames:
            self.frame = self.render()
        elif self._world.daylight < 0.5:
            # Stock's night rendering draws its noise texture from the WORLD's RandomState, so the dynamics
            # depend on rendering; skip the pixels but consume exactly the same draws.
            self._world.random.uniform(size=self._night_noise_draws)
        return self.frame

    @property
    def _night_noise_draws(self) -> int:
        # LocalView._noise draws one number per pixel of the local view canvas (grid x unit, unit = size // view)
        unit = self._size // self._view
        grid = self._local_view._grid
        return int(grid[0] * unit[0] * grid[1] * unit[1])

    def semantic(self) -> np.ndarray:
        """Stock's `info['semantic']` map (material ids, then object ids), computed on demand."""
        base = len(self._world._mat_ids)
        canvas = self._world._mat_map.copy()
        for obj in self._world.objects:
            for i, cls in enumerate(_SEMANTIC_KINDS):
                if isinstance(obj, cls):
                    canvas[tuple(obj.pos)] = base + i
                    break
        return canvas

    # ----------------------------------------------------------------------------------------------- balance

    def _count_space(self) -> dict[str, list[list[int]]]:
        # Cells of each spawn material per chunk, for all chunks at once (stock: one mask + sum per chunk and
        # creature kind). Balancing moves only objects, never materials, so one count serves a whole round.
        cx, cy = self._world._chunk_size
        mat = self._world._mat_map
        starts_x, starts_y = np.arange(0, mat.shape[0], cx), np.arange(0, mat.shape[1], cy)
        space = {}
        for material in ("grass", "path"):
            hits = (mat == self._world._mat_ids[material]).astype(np.int64)
            space[material] = np.add.reduceat(np.add.reduceat(hits, starts_x, axis=0), starts_y, axis=1).tolist()
        return space

    def _balance_chunk(self, chunk, objs):
        # Stock's numbers (its `target_fn` lambdas evaluated here), scaled by the difficulty preset (x1.0 for
        # normal gives identical floats). Same calls in the same order as stock, except that a call is skipped
        # where stock's would do nothing (count within its targets: no random draw either). Counting once is
        # exact: each call adds or removes only its own kind.
        light, b, kinds, world = self._world.daylight, self._balance, self._kinds, self._world
        zombies = skeletons = cows = 0
        for obj in objs:
            if isinstance(obj, objects.Zombie):
                zombies += 1
            elif isinstance(obj, objects.Skeleton):
                skeletons += 1
            elif isinstance(obj, objects.Cow):
                cows += 1
        cx, cy = world._chunk_size
        grass = self._space["grass"][chunk[0] // cx][chunk[2] // cy]
        target = b.zombie_density * (3.5 - 3 * light)
        low, high = (0 if grass < 50 else target), target
        if not int(low) <= zombies <= int(high):
            self._balance_object(
                chunk,
                objs,
                objects.Zombie,
                "grass",
                6,
                0,
                b.zombie_spawn_prob,
                0.4,
                lambda pos: kinds.zombie(world, pos, self._player),
                low,
                high,
            )
        path = self._space["path"][chunk[0] // cx][chunk[2] // cy]
        low, high = (0 if path < 6 else 1 * b.skeleton_density), 2 * b.skeleton_density
        if not int(low) <= skeletons <= int(high):
            self._balance_object(
                chunk,
                objs,
                objects.Skeleton,
                "path",
                7,
                7,
                0.1,
                0.1,
                lambda pos: kinds.skeleton(world, pos, self._player),
                low,
                high,
            )
        low, high = (0 if grass < 30 else 1), 1.5 + light
        if not int(low) <= cows <= int(high):
            self._balance_object(
                chunk, objs, objects.Cow, "grass", 5, 5, 0.01, 0.1, lambda pos: kinds.cow(world, pos), low, high
            )

    def _balance_object(
        self,
        chunk,
        objs,
        cls,
        material,
        span_dist,
        despan_dist,
        spawn_prob,
        despawn_prob,
        ctor,
        target_min,
        target_max,
    ):
        # Stock's code with the targets passed in, and the sort before the despawn choice.
        creatures = [obj for obj in objs if isinstance(obj, cls)]
        count = len(creatures)
        xmin, _, ymin, _ = chunk
        random = self._world.random
        if count < int(target_min) and random.uniform() < spawn_prob:
            # stock lists the cells with np.tile'd coordinates masked in row-major order; nonzero has that order
            xs, ys = np.nonzero(self._world.mask(*chunk, material))
            i = random.randint(0, len(xs))
            x, y = int(xs[i]) + xmin, int(ys[i]) + ymin
            empty = self._world[x, y][1] is None
            px, py = self._player.pos.tolist()
            away = abs(x - px) + abs(y - py) >= span_dist
            if empty and away:
                self._world.add(ctor(np.array((x, y))))
        elif count > int(target_max) and random.uniform() < despawn_prob:
            creatures.sort(key=stable_key)
            obj = creatures[random.randint(0, len(creatures))]
            away = self._player.distance(obj.pos) >= despan_dist
            if away:
                self._world.remove(obj)
