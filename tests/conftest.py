"""Shared fixtures: every test gets its own project folder (trace DB, datasets, MLflow store) under tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning threads on shared cores

from crafter_exp import log  # noqa: E402

log.configure(propagate=True)  # stages' messages on stdout as under the CLI (capsys reads them); caplog sees them


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


# ------------------------------------------------------------------ trainer / hf_local (a small trained tiny student)

TINY_FAST = [
    "trainer.max_time_s=null",
    "trainer.progress=false",
    "trainer.logging_steps=20",
    "trainer.eval_steps=1000",
    "trainer.save_best=false",
    "trainer.student.num_layers=2",
]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """The tiny student trained ~100 steps on the synthetic observation -> action rule (TrainResult).

    A session fixture: several test files play it; training it costs ~10-20 s on 2 cores.
    """
    from crafter_exp.config import compose_config
    from crafter_exp.stages.train import train
    from crafter_exp.training.synthetic import write_synthetic_dataset

    home = tmp_path_factory.mktemp("tiny_ckpt")
    write_synthetic_dataset(home / "data" / "datasets" / "default", 1600, seed=0)
    cfg = compose_config(
        project_overrides(home)
        + TINY_FAST
        + [
            "tracking.enabled=false",
            "trainer.max_steps=110",
            "trainer.learning_rate=3e-3",
            "trainer.eval_fraction=0.1",
        ]
    )
    return train(cfg)
