"""Where the ALFWorld games are, and which game a seed plays.

The data folder is the one `alfworld-download` would fill ($ALFWORLD_DATA: `json_2.1.1/<split>/.../game.tw-pddl`
and `logic/`). This machine can't download it, so the default falls back to the shared offline copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from functools import lru_cache
from pathlib import Path
from typing import Optional

from crafter_exp.envs.alfworld.text import TASK_TYPES
from crafter_exp.errors import UserError

SPLITS = {
    "train": "valid_train",
    "eval_in_distribution": "valid_seen",
    "eval_out_of_distribution": "valid_unseen",
}
"""Our split names (ALFWorld's `train_eval` values) -> the data folder holding the games."""

ALFWORLD_DEFAULT_CACHE = Path("~/.cache/alfworld").expanduser()
"""Where `alfworld-download` puts the data; `import alfworld` sets $ALFWORLD_DATA to it when unset."""
PROJECT_ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = Path("..") / "shared" / "alfworld_data"
"""Offline copy, relative to the project root or the working directory."""
MISSING_DATA = (
    "ALFWorld game data not found: set ALFWORLD_DATA (or env.data_path) to a folder holding json_2.1.1/ and "
    "logic/ (alfworld-download's layout; offline copy: ../shared/alfworld_data)"
)


def _is_data_root(path: Path) -> bool:
    return (path / "json_2.1.1").is_dir() and (path / "logic" / "alfred.pddl").is_file()


def _is_alfworld_default(value: str) -> bool:
    return Path(value).expanduser().resolve() == ALFWORLD_DEFAULT_CACHE.resolve()


def resolve_data_path(data_path: Optional[str]) -> Path:
    """cfg.data_path, else $ALFWORLD_DATA, else ../shared/alfworld_data (project root, then cwd); absolute."""
    if data_path:
        path = Path(os.path.expandvars(data_path)).expanduser()
        if not _is_data_root(path):
            raise UserError(f"env.data_path={data_path!r} holds no ALFWorld data (needs json_2.1.1/ and logic/)")
        return path.resolve()
    env_value = os.environ.get("ALFWORLD_DATA")
    if env_value and not _is_data_root(Path(env_value).expanduser()) and _is_alfworld_default(env_value):
        env_value = None  # importing alfworld sets ALFWORLD_DATA to its empty download cache: not the user's choice
    if env_value:
        path = Path(env_value).expanduser()
        if not _is_data_root(path):
            raise UserError(f"ALFWORLD_DATA={env_value!r} holds no ALFWorld data (needs json_2.1.1/ and logic/)")
        return path.resolve()
    for base in (PROJECT_ROOT, Path.cwd()):
        path = base / SHARED_DATA
        if _is_data_root(path):
            return path.resolve()
    raise UserError(MISSING_DATA)


def check_task_types(task_types: list[str]) -> None:
    unknown = [t for t in task_types if t not in TASK_TYPES]
    if unknown:
        raise UserError(f"env.task_types: unknown {unknown} (known: {', '.join(TASK_TYPES)})")


def check_split(split: str, field: str = "split") -> None:
    if split not in SPLITS:
        raise UserError(f"env.{field}={split!r} unknown (known: {', '.join(SPLITS)})")


def alfworld_config(root: Path, task_types: list[str]) -> dict:
    """The slice of ALFWorld's base_config.yaml that `AlfredTWEnv` reads (the rest of it is for its agents)."""
    ids = [i + 1 for i, name in enumerate(TASK_TYPES) if not task_types or name in task_types]
    return {
        "env": {
            "goal_desc_human_anns_prob": 0,
            "task_types": ids,
            "domain_randomization": False,
            "expert_type": "handcoded",
        },
        "dataset": {
            "data_path": str(root / "json_2.1.1" / SPLITS["train"]),
            "eval_id_data_path": str(root / "json_2.1.1" / SPLITS["eval_in_distribution"]),
            "eval_ood_data_path": str(root / "json_2.1.1" / SPLITS["eval_out_of_distribution"]),
            "num_train_games": -1,
            "num_eval_games": -1,
        },
        "logic": {"domain": str(root / "logic" / "alfred.pddl"), "grammar": str(root / "logic" / "alfred.twl2")},
        "general": {"training_method": "dagger"},
    }


def _order_key(relative: str) -> str:
    # A fixed pseudo-random order (hash of the game's path): consecutive seeds mix the task types instead of
    # walking one type after another as the sorted folder names would; the same on every machine and process.
    return hashlib.sha256(relative.encode()).hexdigest()


@lru_cache(maxsize=16)
def list_games(root: str, split: str, task_types: tuple[str, ...]) -> tuple[str, ...]:
    """The split's playable games, as ALFWorld's `AlfredTWEnv` selects them (solvable, task types), in seed order."""
    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        # AlfredTWEnv prints and draws a tqdm bar while it walks the folders; we only want its game list
        games = AlfredTWEnv(alfworld_config(Path(root), list(task_types)), train_eval=split).game_files
    split_dir = Path(root) / "json_2.1.1" / SPLITS[split]
    relative = [os.path.relpath(g, split_dir) for g in games]
    if not relative:
        raise UserError(f"no ALFWorld games in {split_dir} for task types {list(task_types) or 'all'}")
    return tuple(str(split_dir / r) for r in sorted(relative, key=_order_key))


def game_for_seed(games: tuple[str, ...], seed: int) -> str:
    """Seed -> game: every block of len(games) consecutive seeds plays each game once."""
    return games[seed % len(games)]


def task_type_of(game_file: str) -> str:
    """The task type, from the trial folder name (`<task_type>-<object>-...`), as ALFWorld's traj_data says."""
    return Path(game_file).parent.parent.name.split("-", 1)[0]


def game_name(root: Path, game_file: str) -> str:
    """A game's id for traces: its path under json_2.1.1 (machine-independent)."""
    return os.path.relpath(Path(game_file).parent, Path(root) / "json_2.1.1")
