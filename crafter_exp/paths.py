"""Where every stage writes under `paths.home`, and how the next stage finds it: one rule for every output.

An output is named by its *identity*: a hash of the config fields that change what the output holds (the schema in
crafter_exp/config.py marks the others `metadata={"identity": False}`: progress bars, retries, where to read or
write, ...) and of the identities of its inputs. It lives at

    trace run    in `paths.db`: `<name>-<stage>-<env>-<model label>-<identity[:6]>`
    dataset      `<paths.datasets>/<name>/<identity[:8]>/`      (or `filter.output`)
    checkpoint   `<paths.checkpoints>/<name>/<identity[:8]>/`   (or `trainer.output_dir`)
    report       `<paths.reports>/<name>/compare/`, `<paths.reports>/<name>/<run id>.json` (stage=export)

the same whether a stage runs alone or inside the pipeline. A folder output is complete when its `manifest.json`
is there: written last, atomically, carrying `identity` and `completed_at`. A stage whose output folder is already
complete with the same identity skips its work; an interrupted one resumes from `.<folder>.work-<identity>` beside
it. The next stage takes the newest *complete* output of the same experiment `name` (by `completed_at`), never the
newest folder: a half-written or interrupted output is never picked up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from crafter_exp.errors import UserError
from crafter_exp.files import write_text_atomic

if TYPE_CHECKING:
    from crafter_exp.config import Config

MANIFEST = "manifest.json"
SHORT = 8
"""Characters of the identity in a folder name."""


# ---------------------------------------------------------------------------------------------------- identity


def field_metadata(cls: type, name: str, key: str) -> Any:
    """`metadata[key]` of dataclass field `name` as declared in `cls` or, for a field a subclass only re-defaults
    (no metadata of its own), the nearest base that declares it; None when none does."""
    for klass in cls.__mro__:
        f = vars(klass).get("__dataclass_fields__", {}).get(name)
        if f is not None and key in f.metadata:
            return f.metadata[key]
    return None


def in_identity(cls: type, name: str) -> bool:
    """Whether dataclass field `name` of `cls` changes a result: False when the field carries
    `metadata={"identity": False}` (see field_metadata: a subclass that only changes the default keeps the mark)."""
    return field_metadata(cls, name, "identity") is not False


def identity_tree(obj: Any) -> Any:
    """`obj` as plain data without the fields that do not change a result (nested dataclasses, lists and dicts
    included); anything else as is."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: identity_tree(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if in_identity(type(obj), f.name)
        }
    if isinstance(obj, (list, tuple)):
        return [identity_tree(v) for v in obj]
    if isinstance(obj, dict):
        return {k: identity_tree(v) for k, v in obj.items()}
    return obj


def identity(basis: Any) -> str:
    """The identity hash of a basis (identity trees and input identities)."""
    from crafter_exp.tracking import config_hash

    return config_hash(basis)


# ------------------------------------------------------------------------------------------------------ places


def dataset_root(cfg: Config) -> Path:
    """Every dataset of experiment `cfg.name`."""
    return Path(cfg.paths.datasets) / cfg.name


def dataset_dir(cfg: Config, ident: str) -> Path:
    """The dataset of this identity (`filter.output` when set)."""
    return Path(cfg.filter.output) if cfg.filter.output else dataset_root(cfg) / ident[:SHORT]


def checkpoint_root(cfg: Config) -> Path:
    """Every checkpoint of experiment `cfg.name`."""
    return Path(cfg.paths.checkpoints) / cfg.name


def checkpoint_dir(cfg: Config, ident: str) -> Path:
    """The checkpoint of this identity (`trainer.output_dir` when set)."""
    return Path(cfg.trainer.output_dir) if cfg.trainer.output_dir else checkpoint_root(cfg) / ident[:SHORT]


def compare_dir(cfg: Config) -> Path:
    """The compare report of experiment `cfg.name` (rewritten by each compare)."""
    return Path(cfg.paths.reports) / cfg.name / "compare"


def export_path(cfg: Config, run_id: str) -> Path:
    """stage=export's JSON of one trace run."""
    return Path(cfg.paths.reports) / cfg.name / f"{run_id}.json"


# ------------------------------------------------------------------------------------------- finding outputs


def read_manifest(folder: Path) -> Optional[dict[str, Any]]:
    """The folder's manifest, or None when it has none (or a broken one: a crash never leaves one, but a hand edit
    could)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def dataset_source_runs(checkpoint_manifest: dict[str, Any]) -> list[str]:
    """The trace runs a checkpoint was trained on: its dataset's `source_runs` (checkpoint manifest -> dataset
    manifest); [] when the checkpoint names no dataset of ours (a hub model, synthetic data)."""
    dataset = checkpoint_manifest.get("dataset_path") or checkpoint_manifest.get("dataset")
    if not dataset:
        return []
    folder = Path(dataset) if Path(dataset).is_dir() else Path(dataset).parent
    return list((read_manifest(folder) or {}).get("source_runs") or [])


def complete_manifest(folder: Path) -> Optional[dict[str, Any]]:
    """The manifest of a complete output: present, and every file it lists still there."""
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    files = manifest.get("files")
    listed = files.values() if isinstance(files, dict) else files if isinstance(files, list) else []
    return manifest if all((Path(folder) / str(f)).exists() for f in listed) else None


def _completed_at(folder: Path, manifest: dict[str, Any]) -> float:
    value = manifest.get("completed_at")
    # outputs written before completed_at existed: the manifest's own write time (it is written last)
    return float(value) if isinstance(value, (int, float)) else (folder / MANIFEST).stat().st_mtime


def newest_complete(root: Path, accept: Callable[[dict[str, Any]], bool] = lambda m: True) -> Optional[Path]:
    """The newest complete output (an accepted manifest) among `root`'s subfolders and `root` itself (the flat
    layout of earlier versions); None when there is none."""
    root = Path(root)
    if not root.is_dir():
        return None
    candidates = [root, *(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]
    found = []
    for folder in candidates:
        manifest = complete_manifest(folder)
        if manifest is not None and accept(manifest):
            found.append((_completed_at(folder, manifest), folder))
    return max(found)[1] if found else None


def find_dataset(cfg: Config) -> Path:
    """The dataset the train stage reads: `trainer.dataset`, else the newest complete dataset of `name`."""
    if cfg.trainer.dataset:
        return Path(cfg.trainer.dataset)
    root = dataset_root(cfg)
    found = newest_complete(root)
    if found is None:
        raise UserError(
            f"no complete dataset under {root} (run stage=filter name={cfg.name} first, or set trainer.dataset=<path>)"
        )
    return found


def is_local_checkpoint(manifest: dict[str, Any]) -> bool:
    """A checkpoint hf_local can play (not a hosted fine-tune's record)."""
    return manifest.get("kind") != "openai"


def find_checkpoint(cfg: Config) -> Path:
    """The checkpoint `model=hf_local` plays when `model.path` is not set: the newest complete local checkpoint of
    `name`."""
    root = checkpoint_root(cfg)
    found = newest_complete(root, is_local_checkpoint)
    if found is None:
        raise UserError(
            f"model.path is not set and there is no complete local checkpoint under {root} (run "
            f"stage=train name={cfg.name} first, or set model.path=<folder or hub id>)"
        )
    return found


def newest_complete_run(runs: Any, episodes_done: dict[str, int], name: str, stage: str = "rollout") -> Optional[str]:
    """The newest trace run of `name` and `stage` that holds every episode it was asked for (`runs`: the store's
    runs table, oldest first; `episodes_done`: run id -> episodes stored); None when there is none."""
    mine = runs[(runs["name"] == name) & (runs["stage"] == stage)]
    for row in reversed(list(mine.itertuples())):
        if episodes_done.get(str(row.run_id), 0) >= int(row.episodes or 0):
            return str(row.run_id)
    return None


# ------------------------------------------------------------------------------------------- writing outputs


def _json_default(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else str(value)


@dataclass
class OutputFolder:
    """One stage output: a folder that is complete once its manifest (identity + completed_at) is written, last.

    Use: `done = out.existing(retrain)` -> return it; else `out.invalidate()` before changing anything inside,
    write (or `with out.staging() as tmp: ...; out.publish(tmp)`), then `out.finish(manifest)`.
    """

    path: Path
    identity: str

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def existing(self, retrain: bool = False) -> Optional[dict[str, Any]]:
        """The manifest when the folder already holds this identity complete (None when `retrain`)."""
        if retrain:
            return None
        manifest = complete_manifest(self.path)
        return manifest if manifest is not None and manifest.get("identity") == self.identity else None

    @property
    def work(self) -> Path:
        """A work folder for this identity beside the output, kept when interrupted: a rerun resumes from it."""
        return self.path.parent / f".{self.path.name}.work-{self.identity}"

    def invalidate(self) -> None:
        """From here on the folder reads as incomplete (until finish)."""
        self.manifest_path.unlink(missing_ok=True)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh temporary sibling folder to write the output in; removed on the way out unless published."""
        staged = self.path.parent / f".{self.path.name}.staging-{os.getpid()}"
        if staged.exists():
            shutil.rmtree(staged)
        staged.mkdir(parents=True)
        try:
            yield staged
        finally:
            if staged.exists():
                shutil.rmtree(staged, ignore_errors=True)

    def publish(self, staged: Path) -> None:
        """Move a finished `staged` folder's content into the output (the manifest follows, by finish).

        An existing output first loses its manifest, then its previous files; nested folders that are complete
        outputs of their own (the flat layout of earlier versions kept others inside) are left alone.
        """
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staged.rename(self.path)
            return
        self.invalidate()
        for entry in self.path.iterdir():
            if entry.is_dir() and (entry / MANIFEST).is_file() and not (staged / entry.name).exists():
                continue
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        for entry in staged.iterdir():
            entry.rename(self.path / entry.name)
        staged.rmdir()

    def finish(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write the manifest (with identity and completed_at) atomically: the output is complete from here."""
        manifest = {**manifest, "identity": self.identity, "completed_at": time.time()}
        write_text_atomic(self.manifest_path, json.dumps(manifest, indent=1, default=_json_default) + "\n")
        return manifest


__all__ = [
    "MANIFEST",
    "OutputFolder",
    "identity",
    "identity_tree",
    "in_identity",
    "dataset_root",
    "dataset_dir",
    "checkpoint_root",
    "checkpoint_dir",
    "compare_dir",
    "export_path",
    "read_manifest",
    "complete_manifest",
    "newest_complete",
    "find_dataset",
    "find_checkpoint",
    "newest_complete_run",
    "is_local_checkpoint",
]
