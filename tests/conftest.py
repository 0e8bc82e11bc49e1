"""Shared fixtures: every test gets its own project folder (trace DB, datasets, MLflow store) under tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def project_overrides(home: Path, workers: int = 0) -> list[str]:
    """Overrides that keep a run inside `home` (no writes to the repo) and quiet."""
    return [
        f"paths.home={home}",
        f"tracking.uri=sqlite:///{home}/mlflow.db",
        f"ray.num_workers={workers}",
        "rollout.progress=false",
    ]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A fresh project folder, also the working directory (Hydra's outputs/ land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (a start costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
