"""`CrafterTextEnv`: Crafter behind the `TextEnv` interface (text in, text out, plain-data records)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Optional

from crafter_exp.envs.base import RUN_METRICS, Observation, StepResult, TextEnv
from crafter_exp.envs.crafter.actions import ACHIEVEMENTS, ACTION_INDEX, ACTIONS, canonical_action
from crafter_exp.envs.crafter.difficulty import DIFFICULTIES
from crafter_exp.envs.crafter.game import CrafterGame
from crafter_exp.envs.crafter.recall import SeenCells
from crafter_exp.envs.crafter.text import INSTRUCTIONS, ITEMS, OBS_FORMATS, VITALS, render
from crafter_exp.envs.crafter.view import VIEW_COLS, VIEW_ROWS, local_view
from crafter_exp.errors import UserError

if TYPE_CHECKING:
    from crafter_exp.config import CrafterEnvConfig

PREDICTION_QUANTITIES: frozenset[str] = frozenset({*VITALS, *ITEMS, *ACHIEVEMENTS})
"""The names a Crafter prediction is scored on: vitals, inventory items, achievements."""
PREDICTION_ALIASES = {
    "hp": "health",
    "water": "drink",
    "thirst": "drink",
    "hunger": "food",
    "fatigue": "energy",
    "saplings": "sapling",
    "woods": "wood",
    "stones": "stone",
    "table": "place_table",
    "furnace": "place_furnace",
}
"""Words models use for those quantities (`water -1` for drink; a placed table is the place_table achievement)."""


def check_config(cfg: CrafterEnvConfig) -> None:
    """Raise ValueError (one line) for a Crafter config that cannot work."""
    if cfg.difficulty not in DIFFICULTIES:
        raise UserError(f"env.difficulty must be one of {', '.join(DIFFICULTIES)}, got {cfg.difficulty!r}")
    if cfg.obs_format not in OBS_FORMATS:
        raise UserError(f"env.obs_format must be one of {', '.join(OBS_FORMATS)}, got {cfg.obs_format!r}")
    if cfg.area < max(VIEW_COLS, VIEW_ROWS):
        raise UserError(f"env.area must be >= {max(VIEW_COLS, VIEW_ROWS)} (the local view), got {cfg.area}")
    if cfg.length < 0:
        raise UserError(f"env.length must be >= 0 (0 = no limit), got {cfg.length}")
    if cfg.memory < 0:
        raise UserError(f"env.memory must be >= 0 (0 = no Remembered line), got {cfg.memory}")


class CrafterTextEnv(TextEnv):
    """Crafter with text observations; `reset(seed)` = the first reset of `crafter.Env(seed=seed)`.

    Terminations: `death` (health <= 0), `length` (crafter's own episode length `cfg.length` reached);
    `max_steps` is the runner's. Unknown action names play `noop` (Crafter has no invalid actions).
    """

    name = "crafter"
    achievements = ACHIEVEMENTS
    instructions = INSTRUCTIONS
    fallback_action = "noop"
    metrics = (
        "mean_achievements",
        "achievement_rate",
        "crafter_score",
        "progression",
        "distinct_achievements",
        "mean_reward",
        "efficiency",
        *RUN_METRICS,
        "achievement/*",
        "action/*",
        "prediction_f1",
        "prediction_f1_changed",
        "prediction_exact_rate",
        "prediction_scored_rate",
    )
    """Achievements (count, rate, Crafter score, progression, per achievement), reward and the action mix."""

    def __init__(self, cfg: CrafterEnvConfig):
        check_config(cfg)
        self.cfg = cfg
        self.inner = CrafterGame(area=cfg.area, length=cfg.length, difficulty=cfg.difficulty, render=cfg.render)
        """The underlying crafter game (`view.local_view` reads it; the expert never does)."""
        self._seed: Optional[int] = None
        self._view: Optional[dict[str, Any]] = None
        self._expert: Any = None
        self._expert_rng: Optional[random.Random] = None
        self._seen = SeenCells(cfg.memory) if cfg.memory > 0 else None
        """What the episode showed earlier (the text's Remembered line), with `env.memory` > 0."""

    # --------------------------------------------------------------------------------------------- interface

    def reset(self, seed: int) -> Observation:
        self._seed = int(seed)
        self.inner.reset_to(self._seed)
        if self._seen is not None:
            self._seen.reset()
        self._expert = None  # a fresh expert (and its rng) per episode, built on first use
        return self._observe()

    def step(self, action: str) -> StepResult:
        if self._view is None:
            raise RuntimeError("step() before reset()")
        name = action if action in ACTION_INDEX else (canonical_action(action) or self.fallback_action)
        _, reward, done, info = self.inner.step(ACTION_INDEX[name])
        termination = "death" if info["dead"] else ("length" if info["over"] else None)
        return StepResult(
            observation=self._observe(),
            reward=float(reward),
            done=bool(done),
            valid=True,
            unlocked=sorted(info["unlocked"]),
            termination=termination,
        )

    def canonical_action(self, text: str) -> Optional[str]:
        return canonical_action(text)

    def expert_action(self) -> Optional[str]:
        """The scripted teacher's (`expert.CrafterExpert`) action for the current view."""
        if self._view is None:
            raise RuntimeError("expert_action() before reset()")
        if self._expert is None:
            from crafter_exp.envs.crafter.expert import CrafterExpert

            self._expert = CrafterExpert()
            self._expert.reset()
            self._expert_rng = random.Random(self._seed)  # the expert's exploration, reproducible per seed
        return self._expert.act(self._view, self._expert_rng)

    def episode_info(self) -> dict[str, Any]:
        return {"success": None, "task_type": None}

    def state_change(self, before: Observation, after: Observation, unlocked: list[str]) -> Optional[dict[str, int]]:
        """Crafter's state change over a turn: every inventory item and vital (health, food, drink, energy) whose
        count changed, by how much, and every achievement first unlocked in the turn (+1). Position, facing,
        daylight and what is in view are not counted (the text shows them, but they are not quantities)."""
        inv_before, inv_after = before.info.get("inventory", {}), after.info.get("inventory", {})
        changes = {
            name: int(inv_after.get(name, 0)) - int(inv_before.get(name, 0))
            for name in PREDICTION_QUANTITIES
            if name not in ACHIEVEMENTS
        }
        out = {name: delta for name, delta in changes.items() if delta}
        out.update({name: 1 for name in unlocked})
        return out

    def prediction_quantity(self, name: str) -> Optional[str]:
        key = name.strip().lower().replace(" ", "_").replace("-", "_")
        return key if key in PREDICTION_QUANTITIES else PREDICTION_ALIASES.get(key)

    # ---------------------------------------------------------------------------------------------- helpers

    @property
    def view(self) -> dict[str, Any]:
        """The structured local view of the last observation (what the text shows)."""
        if self._view is None:
            raise RuntimeError("no view before reset()")
        return self._view

    def _observe(self) -> Observation:
        view = self._view = local_view(self.inner)
        info = {
            "inventory": dict(view["inventory"]),
            "pos": list(view["pos"]),
            "facing": list(view["facing"]),
            "daylight": round(view["daylight"], 3),
            "sleeping": view["sleeping"],
        }
        remembered = None
        if self._seen is not None:
            self._seen.update(view)
            remembered = self._seen.nearest(view)
        return Observation(text=render(view, self.cfg.obs_format, remembered), actions=list(ACTIONS), info=info)
