"""RL stage (`stage=rl`): the student improves on its own rollouts, from a checkpoint (default: the newest SFT one).

`rl=grpo`: each iteration plays G sampled episodes of each of B fresh training worlds with the current policy (one
lockstep batch through the hf_local policy and the runner), stores them like any rollout (stage `rl`, one trace
run per iteration and group member: `<name>-rl-<env>-<hash>-i<iteration>-g<member>`, seed = the world), reads them
back, computes group advantages (crafter_exp/rl/advantages.py) and runs a few epochs of clipped policy-gradient
steps on the reply tokens (crafter_exp/rl/update.py). `rl=rft`: the student plays the same way, the filter keeps
its best episodes (the filter stage's SQL), and SFT continues on them (the train stage), for N rounds. `rl=dagger`:
the student plays, the environment's expert labels each state it reached, SFT continues on the labels
(crafter_exp/rl/rounds.py).

Outputs: `<paths.checkpoints>/<name>/rl-<hash>/iter-NNN/` (a checkpoint hf_local plays, with its manifest) and
`state.json` (written last, atomically, after each finished iteration). A rerun of the same config resumes after
the last finished iteration: an interrupted iteration is redone with the weights it started from, replaying only
the episodes it had not stored yet (same weights, same sampling seeds), so no iteration trains on half a batch or
on episodes of two policies. One MLflow run per stage (continued on resume), metrics per iteration.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from crafter_exp import paths, tracking
from crafter_exp.errors import UserError
from crafter_exp.files import write_json_atomic
from crafter_exp.registry import Registry

if TYPE_CHECKING:
    from crafter_exp.config import Config, EnvConfig, RLConfig

log = logging.getLogger(__name__)

# rl.name -> the loop that runs it, (cfg, start, manifest, identity, folder, state) -> RLResult
ALGORITHMS: Registry[Callable[..., RLResult]] = Registry(
    "rl algorithm",
    {
        "grpo": "crafter_exp.stages.rl:_run_grpo",
        "rft": "crafter_exp.rl.rounds:run_rounds",
        "dagger": "crafter_exp.rl.rounds:run_rounds",
    },
)

STATE = "state.json"
MANIFEST = "manifest.json"
KEY_STRIDE = 1000
"""Episode key = world * KEY_STRIDE + group member: unique within an iteration's lockstep batch."""


@dataclass
class RLResult:
    checkpoint: Path
    """The last finished iteration's checkpoint (the start checkpoint when none finished)."""
    folder: Path
    """The stage's folder (iterations + state.json)."""
    iterations: int
    """Finished iterations."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Per-iteration metrics."""
    mlflow_run_id: Optional[str] = None
    seconds: float = 0.0
    """Seconds spent in iterations, summed over resumed runs."""
    run_ids: list[str] = field(default_factory=list)
    """Trace runs of every iteration's rollouts."""

    def policy(self, **overrides: Any) -> Any:
        """A `model=hf_local` config that plays the result (at the temperature it was trained for)."""
        from crafter_exp.config import HFLocalModelConfig

        return HFLocalModelConfig(**{"label": "student_rl", "path": str(self.checkpoint), **overrides})


# ------------------------------------------------------------------------------------------------ checks


def default_start_checkpoint(cfg: Config) -> Path:
    """The checkpoint stage=rl starts from when `rl.start` is unset: the experiment's newest complete SFT checkpoint
    (the lookup model=hf_local uses: crafter_exp.paths)."""
    folder = paths.checkpoint_root(cfg)
    # RL's own iterations (rl-<hash>/iter-NNN) carry an `rl` record: a start is an SFT checkpoint
    found = paths.newest_complete(folder, lambda m: paths.is_local_checkpoint(m) and not m.get("rl"))
    if found is None:
        raise UserError(
            f"no SFT checkpoint in {folder}: run stage=train name={cfg.name} first, or set rl.start=<folder>"
        )
    return found


def training_worlds(rl_cfg: RLConfig, iteration: int) -> list[int]:
    """The B worlds of iteration `iteration` (1-based): fresh worlds every iteration."""
    first = rl_cfg.seed + (iteration - 1) * rl_cfg.seeds
    return list(range(first, first + rl_cfg.seeds))


def check_rl_config(cfg: Config) -> None:
    """Everything that can be checked without loading a model (one UserError line)."""
    from crafter_exp.envs import check_env_config, env_has_expert
    from crafter_exp.rl.advantages import ADVANTAGES, SCALES

    r = cfg.rl
    ALGORITHMS.target(r.name)  # an unknown algorithm: one line, before anything else
    check_env_config(cfg.env)
    if r.name == "dagger" and r.group_size < 1:  # DAgger needs states, not groups
        raise UserError(f"rl.group_size must be >= 1, got {r.group_size}")
    if r.name != "dagger" and r.group_size < 2:
        raise UserError(
            f"rl.group_size must be >= 2 (a group needs two episodes of a world to compare), got {r.group_size}"
        )
    if r.group_size >= KEY_STRIDE:
        raise UserError(f"rl.group_size must be < {KEY_STRIDE}, got {r.group_size}")
    for name in ("iterations", "seeds", "rollout_batch"):
        if getattr(r, name) < 1:
            raise UserError(f"rl.{name} must be >= 1, got {getattr(r, name)}")
    if r.method not in ("full", "lora"):
        raise UserError(f"rl.method must be full or lora, got {r.method!r}")
    if r.learning_rate <= 0:
        raise UserError(f"rl.learning_rate must be > 0, got {r.learning_rate}")
    if r.temperature is not None and r.temperature <= 0:
        raise UserError(f"rl.temperature must be > 0, got {r.temperature}")
    if r.max_steps is not None and r.max_steps < 1:
        raise UserError(f"rl.max_steps must be >= 1, got {r.max_steps}")
    if r.seed < 0:
        raise UserError(f"rl.seed must be >= 0, got {r.seed}")
    train = range(r.seed, r.seed + r.iterations * r.seeds)
    held_out = range(cfg.eval.seed, cfg.eval.seed + cfg.eval.episodes)
    if max(train.start, held_out.start) < min(train.stop, held_out.stop):
        raise UserError(
            f"rl training seeds [{train.start}, {train.stop}) overlap the held-out eval seeds "
            f"[{held_out.start}, {held_out.stop}); move rl.seed"
        )
    if r.name == "grpo":
        if r.advantage not in ADVANTAGES:
            raise UserError(f"rl.advantage must be one of {', '.join(ADVANTAGES)}, got {r.advantage!r}")
        if r.scale_rewards not in SCALES:
            raise UserError(f"rl.scale_rewards must be one of {', '.join(SCALES)}, got {r.scale_rewards!r}")
        if r.reward not in ("env", "achievements"):
            raise UserError(f"rl.reward must be env or achievements, got {r.reward!r}")
        for name in ("epochs", "minibatch", "micro_batch"):
            if getattr(r, name) < 1:
                raise UserError(f"rl.{name} must be >= 1, got {getattr(r, name)}")
        if not (0 <= r.clip_low < 1 and r.clip_high >= 0):
            raise UserError(f"rl.clip_low must be in [0, 1) and rl.clip_high >= 0, got {r.clip_low}, {r.clip_high}")
        if r.beta < 0:
            raise UserError(f"rl.beta must be >= 0, got {r.beta}")
        if not 0 <= r.gamma <= 1:
            raise UserError(f"rl.gamma must be in [0, 1], got {r.gamma}")
    else:
        if r.name == "rft":
            if r.keep < 1:
                raise UserError(f"rl.keep must be >= 1, got {r.keep}")
            if r.sort_by not in ("quality", "reward", "achievements", "efficiency"):
                raise UserError(f"rl.sort_by must be quality, reward, achievements or efficiency, got {r.sort_by!r}")
        elif not env_has_expert(cfg.env.name):
            raise UserError(f"rl=dagger needs an environment with an expert to label states; {cfg.env.name} has none")
        if r.sft_steps < 1:
            raise UserError(f"rl.sft_steps must be >= 1, got {r.sft_steps}")
        if r.method != "full":
            raise UserError(f"rl={r.name} continues SFT with the trainer's full weights; use rl.method=full")
        if cfg.trainer.name == "openai":
            raise UserError(f"rl={r.name} continues SFT locally; trainer=openai cannot train a local checkpoint")


def check_pipeline_rl(cfg: Config) -> None:
    """pipeline.rl names the algorithm of the `rl` group; everything checkable before the pipeline starts."""
    if cfg.pipeline.rl not in ALGORITHMS:
        raise UserError(f"pipeline.rl must be {', '.join(ALGORITHMS.names())} or null, got {cfg.pipeline.rl!r}")
    if cfg.rl.name != cfg.pipeline.rl:
        raise UserError(f"pipeline.rl={cfg.pipeline.rl} but the rl group is {cfg.rl.name}: add rl={cfg.pipeline.rl}")
    check_rl_config(cfg)


def check_start(cfg: Config, start: Path) -> dict[str, Any]:
    """The start checkpoint exists and was made for this env's prompt format; returns its manifest."""
    from crafter_exp.policies.hf_local import read_manifest

    if not start.is_dir():
        raise UserError(f"rl start checkpoint not found: {start}")
    if not (start / "config.json").is_file() and not (start / "adapter_config.json").is_file():
        raise UserError(f"rl start checkpoint {start} holds no model (no config.json or adapter_config.json)")
    manifest = read_manifest(start)
    env = manifest.get("env")
    if env is not None and env != cfg.env.name:
        raise UserError(
            f"rl start checkpoint {start} was trained on {env} data, not {cfg.env.name}: its prompt format "
            "does not match this env"
        )
    prompt = manifest.get("prompt") or {}
    if prompt.get("action_mode", "text") != "text":
        raise UserError(f"rl start checkpoint {start} replies with tool calls; stage=rl trains text replies only")
    return manifest


def _probe_format(policy: Any, env_cfg: EnvConfig, world: int) -> None:
    """A few sampled replies of the start policy on a training world must parse as the env's actions."""
    from crafter_exp.envs import make_env
    from crafter_exp.parsing import parse_reply
    from crafter_exp.policies import Turn

    env = make_env(env_cfg)
    obs = env.reset(world)
    turns = [
        Turn(episode=i, observation=obs.text, actions=obs.actions, instructions=env.instructions) for i in range(8)
    ]
    decisions = policy.act(turns)
    ok = [parse_reply(d.reply, d.tool_calls, env.canonical_action, 1)[1] for d in decisions]
    env.close()
    if sum(ok) < len(ok) / 2:
        sample = ", ".join(repr(d.reply[:40]) for d in decisions[:3])
        raise UserError(
            f"the rl start checkpoint does not reply in this env's prompt format ({sum(ok)} of {len(ok)} "
            f"replies parse as actions, e.g. {sample}); start from an SFT checkpoint of this env"
        )


# ------------------------------------------------------------------------------------------------ the stage


def stage_hash(cfg: Config, start: Path, manifest: dict[str, Any]) -> str:
    """The RL run's identity (fields marked `"identity": False` in the schema left out, as everywhere: crafter_exp.paths).
    env.episodes / env.seed are left out too: they name the rollout stage's seeds, RL plays its own worlds."""
    env = {k: v for k, v in paths.identity_tree(cfg.env).items() if k not in ("episodes", "seed")}
    return paths.identity(
        {
            "rl": paths.identity_tree(cfg.rl),
            "env": env,
            "seed": cfg.seed,
            "start": str(start.resolve()),
            "start_identity": manifest.get("identity"),
        }
    )


def output_folder(cfg: Config, chash: str) -> Path:
    return Path(cfg.rl.output_dir) if cfg.rl.output_dir else paths.checkpoint_root(cfg) / f"rl-{chash[: paths.SHORT]}"


def read_state(folder: Path) -> dict[str, Any]:
    f = folder / STATE
    if not f.is_file():
        return {"iterations": 0, "checkpoint": None, "seconds": 0.0, "history": [], "run_ids": []}
    return json.loads(f.read_text())


def rl(cfg: Config, start: Optional[str | Path] = None) -> RLResult:
    """Run stage=rl as `cfg.rl` says; returns the last finished iteration's checkpoint and the curve."""
    check_rl_config(cfg)
    start_dir = Path(start or cfg.rl.start or default_start_checkpoint(cfg))
    manifest = check_start(cfg, start_dir)
    chash = stage_hash(cfg, start_dir, manifest)
    folder = output_folder(cfg, chash)
    state = read_state(folder)
    if state.get("config_hash") not in (None, chash):
        raise UserError(f"{folder} holds an RL run of another config; set rl.output_dir elsewhere")
    if state["iterations"] >= cfg.rl.iterations or _budget_spent(cfg, state):
        log.info(f"[rl] {folder}: {state['iterations']} iterations already finished; nothing to do")
        return _result(folder, state, start_dir)
    return ALGORITHMS.get(cfg.rl.name)(cfg, start_dir, manifest, chash, folder, state)


def run_params_and_tags(cfg: Config, start: Path, folder: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The MLflow params and tags of an RL stage run, whatever the algorithm."""
    params = {
        "name": cfg.name,
        "rl": dataclasses.asdict(cfg.rl),
        "env": dataclasses.asdict(cfg.env),
        "start": str(start),
        "folder": str(folder),
    }
    return params, {"name": cfg.name, "env": cfg.env.name, "algorithm": cfg.rl.name, "start": str(start)}


def _budget_spent(cfg: Config, state: dict[str, Any]) -> bool:
    return cfg.rl.max_time_s is not None and state.get("seconds", 0.0) >= cfg.rl.max_time_s


def _result(folder: Path, state: dict[str, Any], start: Path) -> RLResult:
    ckpt = Path(state["checkpoint"]) if state.get("checkpoint") else start
    return RLResult(
        ckpt,
        folder,
        int(state["iterations"]),
        list(state.get("history", [])),
        state.get("mlflow_run_id"),
        float(state.get("seconds", 0.0)),
        list(state.get("run_ids", [])),
    )


def temperature_of(cfg: Config, manifest: dict[str, Any]) -> float:
    if cfg.rl.temperature is not None:
        return float(cfg.rl.temperature)
    recorded = (manifest.get("play") or {}).get("temperature")
    return float(recorded) if recorded is not None else 1.0


def rollout_env(cfg: Config) -> Any:
    return dataclasses.replace(cfg.env, max_steps=cfg.rl.max_steps) if cfg.rl.max_steps else cfg.env


def make_rollout_policy(cfg: Config, path: Path, temperature: float, label: str) -> Any:
    """The hf_local policy that plays the iterations (its model is the one trained, in place)."""
    from crafter_exp.config import HFLocalModelConfig
    from crafter_exp.policies import make_policy

    mcfg = HFLocalModelConfig(
        label=label,
        path=str(path),
        do_sample=True,
        temperature=temperature,
        batch_size=cfg.rl.rollout_batch,
        device=cfg.rl.device,
        seed=cfg.seed,
    )
    policy = make_policy(mcfg, cfg.seed)
    policy.start()
    return policy


def _rollout_workers(cfg: Config) -> int:
    """Ray actors playing RL episodes: rl.rollout_workers, by default ray.num_workers where env steps are slow."""
    from crafter_exp.envs import env_slow_steps

    n = cfg.rl.rollout_workers
    if n is None:
        n = cfg.ray.num_workers if env_slow_steps(cfg.env.name) else 0
    return int(n)


class Rollouts:
    """Plays and stores one iteration's G x B episodes; resumable (the store keeps whole episodes only)."""

    def __init__(self, cfg: Config, chash: str, policy: Any, label: str, record_expert: bool = False):
        from crafter_exp.store.traces import TraceStore

        self.cfg, self.chash, self.policy, self.label = cfg, chash, policy, label
        self.record_expert = record_expert  # the env expert's action of every turn goes into the trace (rl=dagger)
        self.store = TraceStore(cfg.paths.db)
        self.env_cfg = rollout_env(cfg)
        self.checkpoint: Optional[Path] = None  # the weights the registered iteration starts from
        self.workers = _rollout_workers(cfg)

    def run_id(self, iteration: int, member: int) -> str:
        return f"{self.cfg.name}-rl-{self.cfg.env.name}-{self.chash[:6]}-i{iteration:03d}-g{member:02d}"

    def register(self, iteration: int, checkpoint: Path) -> list[str]:
        from crafter_exp.stages.rollout import as_dict, code_version

        cfg, r = self.cfg, self.cfg.rl
        self.checkpoint = checkpoint
        worlds = training_worlds(r, iteration)
        ids = []
        model = {
            "name": "hf_local",
            "label": self.label,
            "path": str(checkpoint),
            "prompt": as_dict(self.policy.prompt),
            "do_sample": True,
            "temperature": self.policy.temperature,
        }
        for member in range(r.group_size):
            run_id = self.run_id(iteration, member)
            self.store.register_run(
                {
                    "run_id": run_id,
                    "name": cfg.name,
                    "stage": "rl",
                    "env": cfg.env.name,
                    "policy": "hf_local",
                    "model": f"{self.label}-i{iteration:03d}",
                    "provider": "local",
                    "seed_start": worlds[0],
                    "episodes": len(worlds),
                    "config": tracking.redact(
                        {
                            "env": as_dict(self.env_cfg),
                            "model": model,
                            "rl": as_dict(r),
                            "iteration": iteration,
                            "member": member,
                            "seed": cfg.seed,
                        }
                    ),
                    "config_hash": tracking.config_hash([self.chash, iteration, member]),
                    "code_version": code_version(),
                }
            )
            ids.append(run_id)
        return ids

    def play(self, iteration: int, run_ids: list[str], on_turn: Any = None) -> dict[str, float]:
        """Play the episodes of the iteration not stored yet; returns steps / seconds / episodes played now."""
        from crafter_exp.runner.play import play_batch

        worlds = training_worlds(self.cfg.rl, iteration)
        todo: list[Any] = []
        for member, run_id in enumerate(run_ids):
            done = self.store.done_seeds(run_id)
            todo.extend((member, w) for w in worlds if w not in done)
        # the sampling seeds of an iteration: its number and the episode key (world, member), nothing else
        self.policy.seed = self.cfg.seed * 1_000_003 + iteration
        meta = {
            "run_id": "pending",
            "env": self.cfg.env.name,
            "policy": "hf_local",
            "model": f"{self.label}-i{iteration:03d}",
            "provider": "local",
        }
        steps, t0 = 0, time.perf_counter()
        chunk = self.cfg.rl.rollout_batch
        if self.workers > 0 and todo:
            steps = self._play_in_actors(todo, run_ids, meta)
            return {"steps": steps, "seconds": time.perf_counter() - t0, "episodes": len(todo)}
        counting = _CountingPolicy(self.policy, on_turn)
        for i in range(0, len(todo), chunk):
            part = todo[i : i + chunk]
            keys = [w * KEY_STRIDE + m for m, w in part]
            records = play_batch(
                self.env_cfg, counting, keys, meta, 1, worlds=[w for _, w in part], record_expert=self.record_expert
            )
            for rec, (member, world) in zip(records, part):
                _rekey(rec, run_ids[member], world)
            self.store.append(records)
            steps += sum(r.episode["steps"] for r in records)
        return {"steps": steps, "seconds": time.perf_counter() - t0, "episodes": len(todo)}

    def _play_in_actors(self, todo: list[tuple[int, int]], run_ids: list[str], meta: dict[str, Any]) -> int:
        """The episodes in Ray actors (runner/pool.py), each with its own copy of the weights the iteration starts
        from, loaded from its checkpoint; the same episode keys and sampling seed as in this process, so a rerun
        plays the same episodes. A lost actor's batch is replayed by the pool; each batch is stored whole."""
        from crafter_exp.config import HFLocalModelConfig
        from crafter_exp.runner.pool import run_episodes

        cfg, policy = self.cfg, self.policy
        assert self.checkpoint is not None, "register() the iteration first"
        model_cfg = HFLocalModelConfig(
            label=self.label,
            path=str(self.checkpoint),
            prompt=policy.prompt,
            do_sample=True,
            temperature=policy.temperature,
            batch_size=cfg.rl.rollout_batch,
            device=cfg.rl.device,
            seed=policy.seed,
            in_process=False,
        )
        where = {w * KEY_STRIDE + m: (m, w) for m, w in todo}
        played = [0]

        def store(records: list[Any]) -> None:
            for rec in records:
                member, world = where[int(rec.episode["seed"])]
                _rekey(rec, run_ids[member], world)
            self.store.append(records)
            played[0] += sum(r.episode["steps"] for r in records)

        run_episodes(
            self.env_cfg,
            model_cfg,
            list(where),
            meta,
            store,
            policy=policy,
            per_task=max(1, -(-len(where) // self.workers)),  # one batch per actor: each batches its episodes
            seed=policy.seed,
            num_workers=self.workers,
            address=cfg.ray.address,
            max_task_retries=cfg.ray.max_task_retries,
            worlds={key: w for key, (_, w) in where.items()},
            in_process=False,
            record_expert=self.record_expert,
        )
        return played[0]


class _CountingPolicy:
    """Delegates to the policy; calls `on_turn(live episodes)` per lockstep turn (the progress bar)."""

    def __init__(self, policy: Any, on_turn: Any):
        self.policy, self.on_turn = policy, on_turn
        self.in_process, self.decides_per_turn, self.needs_expert = True, False, False
        self.model_name, self.provider = policy.model_name, policy.provider

    def reset(self, episode: int) -> None:
        self.policy.reset(episode)

    def act(self, turns: list[Any]) -> list[Any]:
        out = self.policy.act(turns)
        if self.on_turn is not None:
            self.on_turn(len(turns))
        return out


def _rekey(rec: Any, run_id: str, world: int) -> None:
    """Store an episode under its member's run, its seed the world it played (the key was only for the batch)."""
    rec.episode["run_id"], rec.episode["seed"] = run_id, world
    for row in rec.steps:
        row["run_id"], row["seed"] = run_id, world
    for row in rec.calls:
        row["run_id"], row["seed"] = run_id, world


def read_iteration(store: Any, run_ids: list[str]) -> tuple[Any, Any]:
    """(episodes, steps) of an iteration's runs, from the store (the same data whatever process played them)."""
    eps = store.query(
        "SELECT run_id, seed, steps, turns, total_reward, num_achievements, achievements, termination, success "
        "FROM episodes "
        "WHERE list_contains($1::VARCHAR[], run_id) ORDER BY run_id, seed",
        [run_ids],
    )
    steps = store.query(
        "SELECT run_id, seed, turn, observation, reply, reward, len(unlocked) AS unlocked, done FROM steps "
        "WHERE list_contains($1::VARCHAR[], run_id) ORDER BY run_id, seed, turn",
        [run_ids],
    )
    return eps, steps


def build_samples(
    cfg: Config, policy: Any, eps: Any, steps: Any, instructions: str, max_length: int
) -> tuple[Any, dict]:
    """The iteration's turns as token ids with advantages (+ the advantage statistics)."""
    from crafter_exp import prompts as prompts_mod
    from crafter_exp.rl.advantages import EpisodeTurns, advantages
    from crafter_exp.rl.update import Samples, encode, merge

    r = cfg.rl
    death = {(row.run_id, int(row.seed)): row.termination == "death" for row in eps.itertuples()}
    kwargs = dict(policy.cfg.chat_template_kwargs or {})
    rendered: dict[Any, str] = {}
    episodes, texts, replies = [], [], []
    for (run_id, seed), g in steps.groupby(["run_id", "seed"], sort=True):
        obs = g["observation"].tolist()
        reps = [str(x) if x is not None else "" for x in g["reply"].tolist()]
        rewards = (g["reward"] if r.reward == "env" else g["unlocked"]).astype(float).to_numpy().copy()
        if death.get((run_id, int(seed))) and len(rewards):
            rewards[-1] -= r.death_penalty
        states = []
        for t, o in enumerate(obs):
            window = list(zip(obs[:t], reps[:t]))[-policy.prompt.history :] if policy.prompt.history > 0 else []
            key = (o, tuple(window))
            if key not in rendered:
                msgs = prompts_mod.build_messages(policy.prompt, instructions, o, window)
                rendered[key] = policy.tokenizer.apply_chat_template(
                    msgs, tokenize=False, add_generation_prompt=True, **kwargs
                )
            states.append(rendered[key])
        episodes.append(EpisodeTurns(group=int(seed), rewards=rewards, states=states))
        texts.extend(states)
        replies.extend(reps)
    adv = advantages(episodes, r.advantage, r.gamma, r.step_weight, r.scale_rewards)
    flat = np.concatenate(adv) if adv else np.zeros(0)
    m_texts, m_replies, m_adv, m_weight = merge(texts, replies, flat)
    prompt_ids, reply_ids = encode(policy.tokenizer, m_texts, m_replies, max_length)
    returns = np.array([float(np.sum(e.rewards)) for e in episodes])
    info = {
        "advantage_abs_mean": float(np.abs(flat).mean()) if flat.size else 0.0,
        "advantage_nonzero": float((np.abs(flat) > 1e-9).mean()) if flat.size else 0.0,
        "shaped_return_mean": float(returns.mean()) if returns.size else 0.0,
        "distinct_states": len(rendered),
        "samples": len(m_texts),
    }
    return Samples(prompt_ids, reply_ids, m_adv, m_weight), info


def iteration_metrics(eps: Any, achievements: tuple[str, ...]) -> dict[str, float]:
    """What the iteration's rollouts scored: mean return with spread, achievements, length, deaths."""
    out: dict[str, float] = {
        "return_mean": float(eps["total_reward"].mean()),
        "return_std": float(eps["total_reward"].std(ddof=1)) if len(eps) > 1 else 0.0,
        "achievements_mean": float(eps["num_achievements"].mean()),
        "achievements_std": float(eps["num_achievements"].std(ddof=1)) if len(eps) > 1 else 0.0,
        "episode_length": float(eps["steps"].mean()),
        "death_rate": float((eps["termination"] == "death").mean() * 100),
        "episodes": float(len(eps)),
    }
    # within-group spread: what the group baseline has to work with
    out["group_std_achievements"] = float(eps.groupby("seed")["num_achievements"].std(ddof=1).mean())
    for name in achievements:
        out[f"achievement/{name}"] = float(eps["achievements"].apply(lambda a: name in list(a)).mean() * 100)
    if "success" in eps and eps["success"].notna().any():  # an env with a task to solve (ALFWorld): its own measure
        out["success_rate"] = float(eps["success"].fillna(False).astype(bool).mean() * 100)
    return out


def score_text(metrics: dict[str, Any]) -> str:
    """An iteration's score as the console says it: the success rate where the env has one, else achievements."""
    if "success_rate" in metrics:
        return f"success {metrics['success_rate']:.1f} %"
    return f"achievements {metrics['achievements_mean']:.2f} +- {metrics.get('achievements_std', 0.0):.2f}"


def _load_trainable(cfg: Config, policy: Any, start: Path, state: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(trainable model, reference model or None, optimizer) — the policy's own model trained in place."""
    import torch

    r = cfg.rl
    model = policy.model
    ref = None
    resumed = state.get("checkpoint")
    if r.method == "lora":
        from peft import LoraConfig, PeftModel, get_peft_model

        if resumed:
            model = PeftModel.from_pretrained(model, resumed, is_trainable=True)
        else:
            model = get_peft_model(
                model,
                LoraConfig(
                    r=r.lora_r,
                    lora_alpha=r.lora_alpha,
                    lora_dropout=0.0,
                    target_modules="all-linear",
                    task_type="CAUSAL_LM",
                ),
            )
        policy.model = model
    elif r.beta:
        import copy

        if resumed:  # the reference is the start checkpoint, not the resumed iteration
            ref_policy = make_rollout_policy(cfg, start, policy.temperature, "reference")
            ref = ref_policy.model
        else:
            ref = copy.deepcopy(model)
        for p in ref.parameters():
            p.requires_grad_(False)
    model.eval()  # no dropout: the policy that is trained is the one that played
    for p in model.parameters():
        if r.method == "full":
            p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=r.learning_rate, weight_decay=0.0)
    if resumed and (Path(resumed) / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(Path(resumed) / "optimizer.pt", weights_only=True))
    return model, ref, optimizer


def _save_iteration(
    cfg: Config,
    model: Any,
    tokenizer: Any,
    optimizer: Any,
    folder: Path,
    iteration: int,
    start: Path,
    start_manifest: dict[str, Any],
    temperature: float,
    metrics: dict[str, Any],
    mlflow_run_id: Optional[str],
) -> Path:
    """iter-NNN/: weights (or adapter) + tokenizer + optimizer state, manifest last (staged, then renamed)."""
    import torch

    out = folder / f"iter-{iteration:03d}"
    staged = folder / f".iter-{iteration:03d}.staging"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    model.save_pretrained(str(staged))
    tokenizer.save_pretrained(str(staged))
    torch.save(optimizer.state_dict(), staged / "optimizer.pt")
    play = dict(start_manifest.get("play") or {})
    play["temperature"] = temperature
    manifest = {
        "kind": "adapter" if cfg.rl.method == "lora" else "full",
        "base_model": str(start.resolve()) if cfg.rl.method == "lora" else start_manifest.get("base_model"),
        "untrained": None,
        "play": play,
        "prompt": start_manifest.get("prompt"),
        "env": cfg.env.name,
        "rl": {
            "algorithm": cfg.rl.name,
            "iteration": iteration,
            "start": str(start.resolve()),
            "settings": dataclasses.asdict(cfg.rl),
        },
        "metrics": metrics,
        "mlflow_run_id": mlflow_run_id,
        "created_at": time.time(),
    }
    write_json_atomic(staged / MANIFEST, manifest)
    shutil.rmtree(out, ignore_errors=True)
    staged.rename(out)
    return out


def _run_grpo(
    cfg: Config, start: Path, manifest: dict[str, Any], chash: str, folder: Path, state: dict[str, Any]
) -> RLResult:
    from crafter_exp.envs import env_achievements, env_instructions
    from crafter_exp.progress import progress_bar
    from crafter_exp.rl.update import UpdateSettings, forward_all, steps_per_iteration, update

    r = cfg.rl
    temperature = temperature_of(cfg, manifest)
    if r.method == "lora" and (start / "adapter_config.json").is_file():
        raise UserError(
            "rl.method=lora needs a start checkpoint with full weights (this one is an adapter); "
            "use rl.method=full or merge the adapter (trainer.merge_adapter=true)"
        )
    # full weights resume from the last finished iteration's; adapters load on top of the start checkpoint
    load_from = Path(state["checkpoint"]) if state.get("checkpoint") and r.method == "full" else start
    label = f"rl-{chash[:6]}"
    policy = make_rollout_policy(cfg, load_from, temperature, label)
    if not state.get("checkpoint") and r.probe:
        _probe_format(policy, rollout_env(cfg), training_worlds(r, 1)[0])
    model, ref, optimizer = _load_trainable(cfg, policy, start, state)
    tokenizer = policy.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    max_length = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    rollouts = Rollouts(cfg, chash, policy, label)
    achievements = env_achievements(cfg.env.name)
    instructions = env_instructions(cfg.env.name)
    settings = UpdateSettings(
        r.epochs, r.minibatch, r.micro_batch, r.clip_low, r.clip_high, r.beta, r.max_grad_norm, temperature
    )
    folder.mkdir(parents=True, exist_ok=True)
    state["config_hash"] = chash
    run_config, tags = run_params_and_tags(cfg, start, folder)
    session_start = time.perf_counter()
    seconds_before = float(state.get("seconds", 0.0))
    with tracking.stage_run(
        cfg.tracking, "rl", f"rl-{r.name}-{cfg.name}", run_config, tags, resume_run_id=state.get("mlflow_run_id")
    ) as mlrun:
        mlflow_run_id = mlrun.info.run_id if mlrun else None
        state["mlflow_run_id"] = mlflow_run_id
        while state["iterations"] < r.iterations and not _budget_spent(cfg, state):
            it = state["iterations"] + 1
            t_it = time.perf_counter()
            run_ids = rollouts.register(it, Path(state.get("checkpoint") or start))
            n_eps = r.group_size * r.seeds
            bar = progress_bar(
                total=rollout_env(cfg).max_steps,
                desc=f"rl {it}/{r.iterations} rollout",
                unit="turn",
                disable=not r.progress,
                dynamic_ncols=True,
            )
            try:
                played = rollouts.play(it, run_ids, on_turn=lambda live: (bar.update(1), bar.set_postfix(live=live)))
            finally:
                bar.close()
            eps, steps = read_iteration(rollouts.store, run_ids)
            if len(eps) != n_eps:  # never train on part of an iteration
                raise RuntimeError(f"iteration {it}: {len(eps)} of {n_eps} episodes stored")
            rollout_s = time.perf_counter() - t_it

            t_up = time.perf_counter()
            samples, adv_info = build_samples(cfg, policy, eps, steps, instructions, max_length)
            samples.old_logps, samples.entropy = forward_all(
                model, samples, temperature, pad_id, policy.device, r.micro_batch, policy._autocast, entropy=True
            )
            if r.beta:
                if ref is None:  # LoRA: the reference is the start checkpoint, i.e. the adapter switched off
                    with model.disable_adapter():
                        samples.ref_logps, _ = forward_all(
                            model, samples, temperature, pad_id, policy.device, r.micro_batch, policy._autocast
                        )
                else:
                    samples.ref_logps, _ = forward_all(
                        ref, samples, temperature, pad_id, policy.device, r.micro_batch, policy._autocast
                    )
            prep_s = time.perf_counter() - t_up
            settings.seed = cfg.seed * 7919 + it
            ubar = progress_bar(
                total=steps_per_iteration(len(samples), settings),
                desc=f"rl {it}/{r.iterations} update",
                unit="step",
                disable=not r.progress,
                dynamic_ncols=True,
            )
            try:
                stats = update(
                    model,
                    optimizer,
                    samples,
                    settings,
                    pad_id,
                    policy.device,
                    policy._autocast,
                    on_step=lambda n, loss: (ubar.update(1), ubar.set_postfix(loss=f"{loss:.4f}")),
                )
            finally:
                ubar.close()
            update_s = time.perf_counter() - t_up
            metrics = {
                **iteration_metrics(eps, achievements),
                **adv_info,
                "loss": stats.loss_mean,
                "loss_first": stats.loss_first,
                "loss_last": stats.loss_last,
                "kl_ref": stats.kl_ref,
                "approx_kl": stats.approx_kl,
                "clip_fraction": stats.clip_fraction,
                "entropy": stats.entropy,
                "optimizer_steps": stats.optimizer_steps,
                "turns": len(steps),
                "update_tokens_per_s": stats.tokens_per_s,
                "rollout_steps_per_s": played["steps"] / played["seconds"] if played["seconds"] > 0 else 0.0,
                "rollout_s": rollout_s,
                "update_s": update_s,
                "logprob_pass_s": prep_s,
                "replayed_episodes": played["episodes"],
            }
            ckpt = _save_iteration(
                cfg, model, tokenizer, optimizer, folder, it, start, manifest, temperature, metrics, mlflow_run_id
            )
            metrics["iteration_s"] = time.perf_counter() - t_it
            state["iterations"] = it
            state["checkpoint"] = str(ckpt)
            state["seconds"] = seconds_before + (time.perf_counter() - session_start)
            state["history"] = list(state.get("history", [])) + [{"iteration": it, **metrics}]
            state["run_ids"] = list(state.get("run_ids", [])) + run_ids
            write_json_atomic(folder / STATE, state)  # the iteration is finished once this lands
            if mlrun:
                tracking.log_metrics(metrics, step=it)
                if r.log_checkpoints:
                    import mlflow

                    mlflow.log_artifacts(str(ckpt), f"checkpoints/iter-{it:03d}")
            log.info(
                f"[rl] iteration {it}: {score_text(metrics)}, return {metrics['return_mean']:.2f}, "
                f"loss {stats.loss_mean:.4f}, clip {stats.clip_fraction:.3f}, entropy {stats.entropy:.3f}, rollout {rollout_s:.0f} s, "
                f"update {update_s:.0f} s"
            )
        if mlrun:
            import mlflow

            mlflow.set_tag("checkpoint", str(state.get("checkpoint") or start))
            tracking.log_json(state, "rl_state.json")
    policy.close()
    return _result(folder, state, start)


def run(cfg: Config) -> RLResult:
    """stage=rl."""
    result = rl(cfg)
    log.info(
        f"rl ({cfg.rl.name}): {result.iterations} iterations finished in {result.seconds:.0f} s; "
        f"checkpoint {result.checkpoint}"
    )
    for h in result.history[-3:]:
        log.info(f"  iteration {h['iteration']}: {score_text(h)}, return {h['return_mean']:.2f}")
    return result


__all__ = ["RLResult", "rl", "run", "check_rl_config", "default_start_checkpoint", "training_worlds"]
