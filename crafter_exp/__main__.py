"""`crafter-exp` / `python -m crafter_exp`: compose the config, hand it to the selected stage.

Thin on purpose: every stage is a plain function of a typed config (crafter_exp/config.py), callable without Hydra.
"""

from __future__ import annotations

import importlib
import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from crafter_exp import log
from crafter_exp.config import CONF_DIR, Config, register_configs
from crafter_exp.errors import StageFailed, UserError
from crafter_exp.sweep import report_job

# stage name -> (module, function)
STAGES = {
    "pipeline": ("crafter_exp.stages.pipeline", "run"),
    "rollout": ("crafter_exp.stages.rollout", "run"),
    "export": ("crafter_exp.stages.rollout", "export_run"),
    "filter": ("crafter_exp.stages.filter", "run"),
    "validate": ("crafter_exp.stages.filter", "validate_run"),
    "train": ("crafter_exp.stages.train", "run"),
    "eval": ("crafter_exp.stages.evaluate", "run"),
    "compare": ("crafter_exp.stages.compare", "run"),
    "rl": ("crafter_exp.stages.rl", "run"),
}

register_configs()


def run_stage(cfg: Config) -> object:
    """Dispatch a typed config to its stage."""
    if cfg.stage not in STAGES:
        raise UserError(f"unknown stage {cfg.stage!r} (known: {', '.join(STAGES)})")
    module, function = STAGES[cfg.stage]
    return getattr(importlib.import_module(module), function)(cfg)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _app(dcfg: DictConfig) -> None:
    cfg: Config = OmegaConf.to_object(dcfg)  # type: ignore[assignment]  # a Config: the schema is the root node
    log.configure()  # after Hydra set up its own logging: the stages' messages print as plain console lines
    try:
        result = run_stage(cfg)
        report_job(cfg.stage, result)  # result.json for a sweep's summary (no-op outside a Hydra job folder)
    except UserError as exc:  # bad input: one line, exit 2; any other exception is a bug and keeps its traceback
        print(f"crafter-exp: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (StageFailed, TimeoutError) as exc:
        print(f"crafter-exp: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(
            "crafter-exp: interrupted; finished episodes and outputs are kept — rerun the same command to resume",
            file=sys.stderr,
        )
        sys.exit(130)


def main() -> None:
    # OpenMP threads that spin while waiting (the default) make torch 5-10x slower when the cores are shared (Ray
    # actors, parallel runs): passive waiting avoids that. Set before torch loads its OpenMP runtime, here and for
    # the Ray actors (runner/pool.py), not on import, so that library users keep their own setting.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    log.configure()  # for what the sweep callback says in the main process; each job re-configures after Hydra
    _app()


if __name__ == "__main__":
    main()
