"""Evaluate stage: play a policy on the held-out seed set (the same set for every model compared), in the
environment's held-out configuration (ALFWorld: its evaluation games).

Training seeds are `env.seed + i` for i < env.episodes, eval seeds `eval.seed + i` for i < eval.episodes; the two
ranges must not overlap, so no evaluated world was seen in training. Where new seeds are new worlds, the seeds the
evaluated model was actually trained on (its checkpoint's dataset's source runs, crafter_exp/paths.py) must not
overlap them either, whatever `env.seed` / `env.episodes` say on this command line.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from crafter_exp import paths
from crafter_exp.config import HFLocalModelConfig, OpenAIModelConfig
from crafter_exp.envs import held_out_env_config
from crafter_exp.errors import UserError
from crafter_exp.policies import model_label
from crafter_exp.stages.rollout import HEADLINE, RolloutResult, resolve_model, rollout
from crafter_exp.store.traces import TraceStore

if TYPE_CHECKING:
    from crafter_exp.config import Config, ModelConfig

log = logging.getLogger(__name__)


def protocol_of(cfg: Config) -> Any:
    """cfg.protocol, or the default protocol (`ours`) for configs built without one."""
    from crafter_exp.config import ProtocolConfig

    return getattr(cfg, "protocol", None) or ProtocolConfig()


def eval_episodes(cfg: Config) -> int:
    """Held-out episodes per policy: the protocol's count, else eval.episodes."""
    episodes = protocol_of(cfg).episodes
    return cfg.eval.episodes if episodes is None else episodes


def check_protocol(cfg: Config) -> None:
    """The protocol fits the env: defined for it, and every setting it fixes is a field of the env config."""
    protocol = protocol_of(cfg)
    if protocol.envs and cfg.env.name not in protocol.envs:
        raise UserError(
            f"protocol {protocol.name!r} is defined for env {', '.join(protocol.envs)}, not "
            f"{cfg.env.name!r} (use protocol=ours)"
        )
    if protocol.episodes is not None and protocol.episodes <= 0:
        raise UserError(f"protocol.episodes must be > 0, got {protocol.episodes}")
    # which seeds and how many are the eval section's and the protocol's own `episodes`, not env settings
    allowed = {f.name for f in dataclasses.fields(cfg.env)} - {"name", "episodes", "seed"}
    unknown = sorted(set(protocol.env) - allowed)
    if unknown:
        raise UserError(
            f"protocol {protocol.name!r} sets unknown env field(s) {', '.join(unknown)} "
            f"(settable: {', '.join(sorted(allowed))})"
        )


def protocol_env_config(cfg: Config) -> Any:
    """The env config of held-out play under the protocol: the env's held-out config with the protocol's settings."""
    env_cfg = held_out_env_config(cfg.env)
    settings = protocol_of(cfg).env
    return dataclasses.replace(env_cfg, **settings) if settings else env_cfg


def eval_seeds(cfg: Config) -> list[int]:
    return list(range(cfg.eval.seed, cfg.eval.seed + eval_episodes(cfg)))


def check_eval_config(cfg: Config) -> None:
    """Eval seeds exist and are disjoint from the training range (one clear line otherwise)."""
    if cfg.eval.episodes <= 0:
        raise UserError(f"eval.episodes must be > 0, got {cfg.eval.episodes}")
    check_protocol(cfg)
    train = range(cfg.env.seed, cfg.env.seed + cfg.env.episodes)
    held_out = range(cfg.eval.seed, cfg.eval.seed + eval_episodes(cfg))
    if train and held_out and max(train.start, held_out.start) < min(train.stop, held_out.stop):
        raise UserError(
            f"eval seeds [{held_out.start}, {held_out.stop}) overlap training seeds [{train.start}, {train.stop}); "
            "move eval.seed"
        )


def _checkpoint_manifest(cfg: Config, model_cfg: ModelConfig) -> Optional[dict[str, Any]]:
    """The train stage's manifest of the model to evaluate: an hf_local folder's, or the one recording an openai
    fine-tune's model id among this experiment's checkpoints; None for anything else (a base model, a hub id)."""
    if isinstance(model_cfg, HFLocalModelConfig):
        return paths.read_manifest(Path(str(model_cfg.path)))
    if isinstance(model_cfg, OpenAIModelConfig):
        found = paths.newest_complete(
            paths.checkpoint_root(cfg), lambda m: m.get("fine_tuned_model") == model_cfg.model
        )
        return paths.read_manifest(found) if found else None
    return None


def trained_seeds(cfg: Config, model_cfg: ModelConfig) -> dict[str, set[int]]:
    """Seeds of the episodes the model learned from, per source trace run (checkpoint manifest -> dataset manifest
    -> trace store); {} when the model carries no such record."""
    runs = paths.dataset_source_runs(_checkpoint_manifest(cfg, model_cfg) or {})
    if not runs:
        return {}
    store = TraceStore(cfg.paths.db)
    return {run: store.done_seeds(run) for run in runs}


def check_trained_seeds(cfg: Config, model_cfg: ModelConfig) -> None:
    """The eval seeds are none the model was trained on (checked where new seeds are new worlds)."""
    if held_out_env_config(cfg.env) is not cfg.env:
        return  # held-out worlds come from another set (ALFWorld's eval games): seed numbers may repeat
    held_out = set(eval_seeds(cfg))
    for run, seeds in trained_seeds(cfg, model_cfg).items():
        shared = sorted(held_out & seeds)
        if shared:
            raise UserError(
                f"eval seeds [{cfg.eval.seed}, {cfg.eval.seed + eval_episodes(cfg)}) overlap the seeds "
                f"{model_label(model_cfg)} was trained on ({len(shared)} shared with trace run {run}, "
                f"first {shared[0]}); move eval.seed"
            )


def evaluate(cfg: Config, model_cfg: Optional[ModelConfig] = None, run_id: Optional[str] = None) -> RolloutResult:
    """Play `model_cfg` (default cfg.model) on the eval seeds; returns the eval trace run."""
    check_eval_config(cfg)
    model_cfg = resolve_model(cfg, model_cfg or cfg.model)
    check_trained_seeds(cfg, model_cfg)
    return rollout(
        cfg,
        stage="eval",
        run_id=run_id,
        seed_start=cfg.eval.seed,
        episodes=eval_episodes(cfg),
        model_cfg=model_cfg,
        env_cfg=protocol_env_config(cfg),
        protocol=protocol_of(cfg),
    )


def run(cfg: Config) -> RolloutResult:
    """stage=eval: evaluate cfg.model."""
    result = evaluate(cfg)
    log.info(
        f"eval {model_label(cfg.model)} on {len(result.seeds)} held-out seeds (protocol {protocol_of(cfg).name}) "
        f"-> trace run {result.run_id}"
    )
    log.info("  " + ", ".join(f"{k}={result.metrics[k]:.3g}" for k in HEADLINE if k in result.metrics))
    return result
