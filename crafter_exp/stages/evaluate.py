"""Evaluate stage: play a policy on the held-out seed set (the same set for every model compared), in the
environment's held-out configuration (ALFWorld: its evaluation games).

Training seeds are `env.seed + i` for i < env.episodes, eval seeds `eval.seed + i` for i < eval.episodes; the two
ranges must not overlap, so no evaluated world was seen in training.
"""

from __future__ import annotations

from typing import Any, Optional

from crafter_exp.envs import held_out_env_config
from crafter_exp.policies import model_label
from crafter_exp.stages.rollout import HEADLINE, RolloutResult, rollout


def eval_seeds(cfg: Any) -> list[int]:
    return list(range(cfg.eval.seed, cfg.eval.seed + cfg.eval.episodes))


def check_eval_config(cfg: Any) -> None:
    """Eval seeds exist and are disjoint from the training range (one clear line otherwise)."""
    if cfg.eval.episodes <= 0:
        raise ValueError(f"eval.episodes must be > 0, got {cfg.eval.episodes}")
    train = range(cfg.env.seed, cfg.env.seed + cfg.env.episodes)
    held_out = range(cfg.eval.seed, cfg.eval.seed + cfg.eval.episodes)
    if train and held_out and max(train.start, held_out.start) < min(train.stop, held_out.stop):
        raise ValueError(
            f"eval seeds [{held_out.start}, {held_out.stop}) overlap training seeds [{train.start}, {train.stop}); "
            "move eval.seed"
        )


def evaluate(cfg: Any, model_cfg: Any = None, run_id: Optional[str] = None) -> RolloutResult:
    """Play `model_cfg` (default cfg.model) on the eval seeds; returns the eval trace run."""
    check_eval_config(cfg)
    model_cfg = model_cfg or cfg.model
    return rollout(cfg, stage="eval", run_id=run_id, seed_start=cfg.eval.seed, episodes=cfg.eval.episodes,
                   model_cfg=model_cfg, env_cfg=held_out_env_config(cfg.env))


def run(cfg: Any) -> RolloutResult:
    """stage=eval: evaluate cfg.model."""
    result = evaluate(cfg)
    print(f"eval {model_label(cfg.model)} on {len(result.seeds)} held-out seeds -> trace run {result.run_id}")
    print("  " + ", ".join(f"{k}={result.metrics[k]:.3g}" for k in HEADLINE if k in result.metrics))
    return result
