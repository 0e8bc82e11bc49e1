"""`CrafterGame`: stock `crafter.Env`, made reproducible and fast, with difficulty presets.

Differences from `crafter.Env` (everything else is crafter's own code and objects):
- Reproducible: `_balance_object` sorts the creatures by (class name, position) before choosing one to despawn.
  Stock iterates a `set`, whose order follows memory addresses, so the same seed and actions diverged across
  processes. This is the only change to the dynamics; tests check it against stock with the same sort patched in.
- `reset_to(seed)` gives the world stock gives on the FIRST reset of `crafter.Env(seed=seed)`, whatever this
  object did before (stock seeds each reset with hash((seed, resets so far)); the counter is restarted here).
- No pixels unless `render=True` (stock renders every step: ~70 % of its step time); `step` returns obs=None
  then, and `info` leaves out the semantic map (call `semantic()` when needed). Stock's night rendering draws
  its noise from the world's RandomState, so the same number of draws is consumed without rendering.
- World generation is `worldgen.generate_world` (vectorised, same worlds).
- Objects near the player are found with integer arithmetic instead of numpy per object (same set, same order).
- Difficulty: `difficulty.PRESETS` numbers for balance (spawn targets) and creature classes; `normal` = stock.
"""

from __future__ import annotations

from typing import Any, Optional

import crafter
import numpy as np
from crafter import constants, objects

from crafter_exp.envs.crafter.difficulty import PRESETS, kinds_for
from crafter_exp.envs.crafter.worldgen import generate_world

# stock SemanticView's object order (ids follow the material ids)
_SEMANTIC_KINDS = (objects.Player, objects.Cow, objects.Zombie, objects.Skeleton, objects.Arrow, objects.Plant)


def stable_key(obj: Any) -> tuple[str, int, int]:
    """Process-independent order for creatures (positions are unique on the object map)."""
    return type(obj).__name__, int(obj.pos[0]), int(obj.pos[1])


class CrafterGame(crafter.Env):
    """One Crafter game; `reset_to(seed)` then `step(action_index)` (stock's 4-tuple)."""

    def __init__(self, area: int = 64, length: int = 10000, difficulty: str = "normal", render: bool = False):
        super().__init__(area=(area, area), length=length, seed=0)
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
        near = self._near
        for obj in self._world.objects:
            # stock: `self._player.distance(obj) < 2 * max(self._view)`, in ints (the player may move first)
            ppos, opos = player.pos, obj.pos
            if abs(int(opos[0]) - int(ppos[0])) + abs(int(opos[1]) - int(ppos[1])) < near:
                obj.update()
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

    def _count_space(self) -> dict[str, np.ndarray]:
        # Cells of each spawn material per chunk, for all chunks at once (stock: one mask + sum per chunk and
        # creature kind). Balancing moves only objects, never materials, so one count serves a whole round.
        cx, cy = self._world._chunk_size
        mat = self._world._mat_map
        starts_x, starts_y = np.arange(0, mat.shape[0], cx), np.arange(0, mat.shape[1], cy)
        space = {}
        for material in ("grass", "path"):
            hits = (mat == self._world._mat_ids[material]).astype(np.int64)
            space[material] = np.add.reduceat(np.add.reduceat(hits, starts_x, axis=0), starts_y, axis=1)
        return space

    def _balance_chunk(self, chunk, objs):
        # stock's numbers, scaled by the difficulty preset (x1.0 for normal: identical floats)
        light, b, kinds = self._world.daylight, self._balance, self._kinds
        self._balance_object(
            chunk, objs, objects.Zombie, "grass", 6, 0, b.zombie_spawn_prob, 0.4,
            lambda pos: kinds.zombie(self._world, pos, self._player),
            lambda num, space: (
                0 if space < 50 else b.zombie_density * (3.5 - 3 * light), b.zombie_density * (3.5 - 3 * light)))
        self._balance_object(
            chunk, objs, objects.Skeleton, "path", 7, 7, 0.1, 0.1,
            lambda pos: kinds.skeleton(self._world, pos, self._player),
            lambda num, space: (0 if space < 6 else 1 * b.skeleton_density, 2 * b.skeleton_density))
        self._balance_object(
            chunk, objs, objects.Cow, "grass", 5, 5, 0.01, 0.1,
            lambda pos: kinds.cow(self._world, pos),
            lambda num, space: (0 if space < 30 else 1, 1.5 + light))

    def _balance_object(
        self, chunk, objs, cls, material, span_dist, despan_dist, spawn_prob, despawn_prob, ctor, target_fn
    ):
        # stock's code, except the sort before the despawn choice (and the space count read from _count_space)
        xmin, xmax, ymin, ymax = chunk
        random = self._world.random
        creatures = [obj for obj in objs if isinstance(obj, cls)]
        csx, csy = self._world._chunk_size
        space = self._space[material][xmin // csx, ymin // csy]  # stock: self._world.mask(...).sum()
        target_min, target_max = target_fn(len(creatures), space)
        if len(creatures) < int(target_min) and random.uniform() < spawn_prob:
            mask = self._world.mask(*chunk, material)
            xs = np.tile(np.arange(xmin, xmax)[:, None], [1, ymax - ymin])
            ys = np.tile(np.arange(ymin, ymax)[None, :], [xmax - xmin, 1])
            xs, ys = xs[mask], ys[mask]
            i = random.randint(0, len(xs))
            pos = np.array((xs[i], ys[i]))
            empty = self._world[pos][1] is None
            away = self._player.distance(pos) >= span_dist
            if empty and away:
                self._world.add(ctor(pos))
        elif len(creatures) > int(target_max) and random.uniform() < despawn_prob:
            creatures.sort(key=stable_key)
            obj = creatures[random.randint(0, len(creatures))]
            away = self._player.distance(obj.pos) >= despan_dist
            if away:
                self._world.remove(obj)
