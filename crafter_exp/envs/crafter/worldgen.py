"""Crafter's world generation, vectorised: the same worlds as `crafter.worldgen.generate_world`, 10x+ faster.

Stock generation evaluates simplex noise point by point from Python (~27k calls) and draws its random numbers
inside per-cell `if` chains. Here every noise field is computed for the whole map at once by one compiled loop
over opensimplex's own `_noise3` (the very function stock calls, so values are bit-identical), the arithmetic is
done on arrays in stock's order of operations (numpy's vectorised exp/sqrt equal its scalar ones), and the random
draws are taken from the world's RandomState in stock's exact order by a compiled scan of the short-circuit
chains (`_chains`). Tests compare the result with stock's for many seeds.
"""

from __future__ import annotations

import numpy as np
from crafter import constants, objects
from numba import njit
from opensimplex.constants import GRADIENTS3
from opensimplex.internals import _noise3


@njit(cache=True)
def _noise3_points(xs, ys, z, perm, perm_grad_index3):  # pragma: no cover - compiled
    out = np.empty(xs.shape[0])
    for i in range(xs.shape[0]):
        out[i] = _noise3(xs[i], ys[i], z, perm, perm_grad_index3)
    return out


class _Noise:
    """Stock's `_simplex(simplex, x, y, z, sizes, normalize)` over whole coordinate arrays."""

    def __init__(self, seed: int, shape: tuple[int, int]):
        self._perm, self._grad = _permutation(seed)
        self._shape = shape

    def __call__(self, x: np.ndarray, y: np.ndarray, z: int, sizes, normalize: bool = True, where=None) -> np.ndarray:
        """The noise field over the map; with `where` (a boolean map) only those cells are computed (others 0)."""
        if not isinstance(sizes, dict):
            sizes = {sizes: 1}
        xf, yf = x.ravel().astype(np.float64), y.ravel().astype(np.float64)
        if where is not None:
            cells = where.ravel()
            xf, yf = xf[cells], yf[cells]
        value = np.zeros(xf.size)
        for size, weight in sizes.items():
            value += weight * _noise3_points(xf / size, yf / size, float(z), self._perm, self._grad)
        if normalize:
            value /= sum(sizes.values())
        if where is None:
            return value.reshape(self._shape)
        out = np.zeros(self._shape)
        out[where] = value
        return out


@njit(cache=True)
def _chain_scan(flags, thresholds, codes, block, k, j, out):  # pragma: no cover - compiled
    """Resume the chains at cell k, check j with the draws in `block`; returns where the draws ran out."""
    at = 0
    n = flags.shape[0]
    while k < n:
        while j < 3:
            if flags[k, j]:
                if at == block.shape[0]:
                    return k, j
                at += 1
                if block[at - 1] > thresholds[k, j]:
                    out[k] = codes[k, j]
                    break
            j += 1
        k += 1
        j = 0
    return k, 0


def _chains(random: np.random.RandomState, flags: np.ndarray, thresholds: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Stock's per-cell `elif flag and uniform() > threshold` chains (up to 3 checks per cell), in cell order.

    Row k of `flags`/`thresholds`/`codes` is cell k's chain; the first check whose draw beats its threshold gives
    the cell its code (0: none did). Every cell has at least one flagged check, so the draws still to come are
    at least the cells left: blocks of that size never draw a number stock would not draw, and the world's
    RandomState ends exactly where stock's does.
    """
    n = flags.shape[0]
    out = np.zeros(n, np.int64)
    k = j = 0
    while k < n:
        k, j = _chain_scan(flags, thresholds, codes, random.uniform(size=n - k), k, j, out)
    return out


def _permutation(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """opensimplex's `_init(seed)` (its permutation tables) in plain ints: the same tables, ~10x faster."""
    mask, sign = (1 << 64) - 1, 1 << 63

    def wrap(value: int) -> int:  # ctypes.c_int64(value).value
        value &= mask
        return value - (1 << 64) if value & sign else value

    mul, inc = 6364136223846793005, 1442695040888963407
    seed = wrap(wrap(wrap(int(seed) * mul + inc) * mul + inc) * mul + inc)
    source, perm = list(range(256)), [0] * 256
    for i in range(255, -1, -1):
        seed = wrap(seed * mul + inc)
        r = (seed + 31) % (i + 1)
        perm[i] = source[r]
        source[r] = source[i]
    perm_array = np.array(perm, dtype=np.int64)
    grad_index = ((perm_array % (len(GRADIENTS3) / 3)) * 3).astype(np.int64)
    return perm_array, grad_index


def generate_world(world, player, kinds=None) -> None:
    """Fill `world` (a fresh `crafter.engine.World`) exactly as `crafter.worldgen.generate_world` would.

    `kinds` (difficulty.Kinds) names the creature classes to spawn; default crafter's own.
    """
    random = world.random
    width, height = world.area
    noise = _Noise(random.randint(0, 2**31 - 1), (width, height))
    x, y = np.meshgrid(np.arange(width), np.arange(height), indexing="ij")  # cell [x, y], stock's loop order
    px, py = player.pos[0], player.pos[1]
    dist = np.sqrt((x - px) ** 2 + (y - py) ** 2)

    start = 4 - dist
    start += 2 * noise(x, y, 8, 3)
    start = 1 / (1 + np.exp(-start))
    # Stock's if/elif chain per cell, as masks; the later noise fields are computed only where the chain
    # reaches them (every use below is combined with the same mask, so the skipped cells never matter).
    grass = start > 0.5
    land = ~grass  # water and mountain decide only these cells
    water = noise(x, y, 3, {15: 1, 5: 0.15}, False, where=land) + 0.1
    water -= 2 * start
    mountain = noise(x, y, 0, {15: 1, 5: 0.3}, where=land)
    mountain -= 4 * start + 0.3 * water
    mount = land & (mountain > 0.15)
    deep = mount & (mountain > 0.3)
    cave = deep & (noise(x, y, 6, 7, where=deep) > 0.15)
    rest = mount & ~cave
    htunnel = rest & (noise(2 * x, y / 5, 7, 3, where=rest) > 0.4)
    rest = rest & ~htunnel
    vtunnel = rest & (noise(x / 5, 2 * y, 7, 3, where=rest) > 0.4)
    tunnels = htunnel | vtunnel
    rock = rest & ~vtunnel  # the cells whose material needs random draws (coal/iron/diamond chain)
    coal_noise = rock & (noise(x, y, 1, 8, where=rock) > 0)
    iron_noise = rock & (noise(x, y, 2, 6, where=rock) > 0.4)
    diamond_zone = mountain > 0.18
    deep_rock = rock & (mountain > 0.3)
    lava_zone = deep_rock & (noise(x, y, 6, 5, where=deep_rock) > 0.35)
    low = ~grass & ~mount
    shore = low & (0.25 < water) & (water <= 0.35)
    sand = shore & (noise(x, y, 4, 9, where=shore) > -0.2)
    water_cells = low & ~sand & (0.3 < water)
    grassland = low & ~sand & ~water_cells
    tree_zone = grassland & (noise(x, y, 5, 7, where=grassland) > 0)

    ids = world._mat_ids
    for name in constants.materials:  # stock's World registers these ids up front
        assert name in ids
    mat = np.full((width, height), ids["grass"], np.uint8)
    mat[cave | tunnels] = ids["path"]
    mat[sand] = ids["sand"]
    mat[water_cells] = ids["water"]

    stone, coal, iron, diamond, lava, tree = (ids[n] for n in ("stone", "coal", "iron", "diamond", "lava", "tree"))
    mat[rock] = np.where(lava_zone[rock], lava, stone)  # unless a draw below makes it an ore
    # Cells drawing random numbers, in stock's x-major order: trees (one check), ores (coal, iron, diamond).
    drawing = tree_zone | (rock & (coal_noise | iron_noise | diamond_zone))
    cells = np.flatnonzero(drawing.ravel())
    is_rock = rock.ravel()[cells][:, None]
    flags = np.where(
        is_rock,
        np.stack([a.ravel()[cells] for a in (coal_noise, iron_noise, diamond_zone)], axis=1),
        np.array([True, False, False]),
    )
    thresholds = np.where(is_rock, np.array([0.85, 0.75, 0.994]), np.array([0.8, 2.0, 2.0]))
    codes = np.where(is_rock, np.array([coal, iron, diamond]), np.array([tree, 0, 0]))
    found = _chains(random, flags, thresholds, codes)
    hits = found > 0
    mat.ravel()[cells[hits]] = found[hits]
    world._mat_map[:] = mat

    _place_objects(world, player, mat, tunnels, dist, kinds)


def _place_objects(world, player, mat: np.ndarray, tunnels: np.ndarray, dist: np.ndarray, kinds) -> None:
    """Stock's `_set_object` pass: cows, zombies and skeletons, drawn and added in stock's order."""
    cow, zombie, skeleton = (
        (objects.Cow, objects.Zombie, objects.Skeleton) if kinds is None else (kinds.cow, kinds.zombie, kinds.skeleton)
    )
    ids = world._mat_ids
    walkable = np.logical_or.reduce([mat == ids[name] for name in constants.walkable])
    is_grass = mat == ids["grass"]
    far3, far10 = dist > 3, dist > 10
    tunnel_path = (mat == ids["path"]) & tunnels
    # a walkable cell draws at least once unless it fails every chain guard
    candidates = walkable & ((far3 & is_grass) | far10 | tunnel_path)
    cells = np.flatnonzero(candidates.ravel())
    flags = np.stack([a.ravel()[cells] for a in (far3 & is_grass, far10, tunnel_path)], axis=1)
    thresholds = np.broadcast_to(np.array([0.985, 0.993, 0.95]), flags.shape)
    codes = np.broadcast_to(np.array([1, 2, 3]), flags.shape)
    found = _chains(world.random, flags, thresholds, codes)
    height = mat.shape[1]
    # constructors draw no random numbers, so adding after the scan keeps stock's order and stream
    for i, kind in zip(cells[found > 0].tolist(), found[found > 0].tolist()):
        pos = (i // height, i % height)
        if kind == 1:
            world.add(cow(world, pos))
        elif kind == 2:
            world.add(zombie(world, pos, player))
        else:
            world.add(skeleton(world, pos, player))
