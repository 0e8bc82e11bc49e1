"""Fan batches of seeds out to Ray actors (or play them in this process when num_workers is 0).

Each actor builds its own environment factory and policy once, then plays the batches it is handed. The driver
receives finished episodes and hands them to `on_batch` (the rollout stage stores them): one writer, whole
episodes only. An actor that dies has its batch replayed on a fresh actor, up to `max_task_retries` times.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from crafter_exp.policies import Policy, make_policy
from crafter_exp.runner.play import play_batch
from crafter_exp.store.traces import EpisodeRecord

if TYPE_CHECKING:
    from crafter_exp.config import EnvConfig, ModelConfig

OnBatch = Callable[[list[EpisodeRecord]], None]


class RolloutWorker:
    """Plays batches of seeds with one policy instance (wrapped by `ray.remote` in `run_episodes`)."""

    def __init__(
        self,
        env_cfg: EnvConfig,
        model_cfg: ModelConfig,
        seed: int,
        run_meta: dict[str, Any],
        max_actions: int,
        invalid_feedback: bool = False,
        record_expert: bool = False,
    ):
        self.env_cfg, self.run_meta, self.max_actions = env_cfg, run_meta, max_actions
        self.invalid_feedback, self.record_expert = invalid_feedback, record_expert
        self.policy = make_policy(model_cfg, seed)
        self.policy.start()
        import ray

        # where each episode was played, stored with it (on a cluster: which machine to look at)
        self.node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None

    def pid(self) -> int:
        return os.getpid()

    def play(self, seeds: list[int], worlds: Optional[list[int]] = None) -> list[EpisodeRecord]:
        records = play_batch(
            self.env_cfg,
            self.policy,
            seeds,
            self.run_meta,
            self.max_actions,
            invalid_feedback=self.invalid_feedback,
            worlds=worlds,
            record_expert=self.record_expert,
        )
        for record in records:
            record.episode["node"] = self.node
        return records


def ensure_ray(address: str | None, num_cpus: int) -> None:
    """Start a local Ray (address None) or join a cluster; reuse one already running in this process."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=max(num_cpus, os.cpu_count() or 1), **kwargs)


def split(seeds: list[int], per_task: int, workers: int) -> list[list[int]]:
    """Batches of at most `per_task` seeds, evened out so that no worker idles while another plays a long queue."""
    size = max(1, min(per_task, math.ceil(len(seeds) / max(1, workers))))
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


def run_episodes(
    env_cfg: EnvConfig,
    model_cfg: ModelConfig,
    seeds: list[int],
    run_meta: dict[str, Any],
    on_batch: OnBatch,
    *,
    policy: Policy,
    per_task: int = 8,
    seed: int = 0,
    num_workers: int = 2,
    address: str | None = None,
    max_actions: int = 1,
    max_task_retries: int = 3,
    invalid_feedback: bool = False,
    worlds: Optional[dict[int, int]] = None,
    in_process: Optional[bool] = None,
    record_expert: bool = False,
) -> None:
    """Play every seed, `per_task` episodes together; `on_batch` receives each batch's finished episodes.

    `worlds`: seed -> the world it plays, where seeds are episode keys (RL groups: several episodes of one world).
    `record_expert`: store the env expert's action of every turn (play_batch).

    `policy` is the caller's started instance of `model_cfg`: it plays here when there are no workers or when it
    is a batched in-process policy (`in_process`: override that, e.g. False for actors with their own copy of
    weights the caller also holds); otherwise each Ray actor builds and starts its own from `model_cfg`.
    """
    if not seeds:
        return

    def _of(batch: list[int]) -> Optional[list[int]]:
        return [worlds[s] for s in batch] if worlds is not None else None

    if num_workers <= 0 or (policy.in_process if in_process is None else in_process):
        for batch in split(seeds, per_task, 1):
            on_batch(
                play_batch(
                    env_cfg,
                    policy,
                    batch,
                    run_meta,
                    max_actions,
                    invalid_feedback=invalid_feedback,
                    worlds=_of(batch),
                    record_expert=record_expert,
                )
            )
        return

    import ray
    from ray.exceptions import ObjectLostError, RayActorError, WorkerCrashedError

    batches = split(seeds, per_task, num_workers)
    ensure_ray(address, num_workers)
    # passive OpenMP waiting in the actors (see __main__.main): several torch processes share the cores
    actor_env = {"env_vars": {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}}
    remote_worker = ray.remote(num_cpus=1, max_restarts=0, runtime_env=actor_env)(RolloutWorker)
    n = min(num_workers, len(batches))

    def new_actor() -> Any:
        return remote_worker.remote(env_cfg, model_cfg, seed, run_meta, max_actions, invalid_feedback, record_expert)

    actors = [new_actor() for _ in range(n)]
    queue = deque(batches)
    attempts: dict[tuple[int, ...], int] = {}
    inflight: dict[Any, tuple[int, list[int]]] = {}

    def submit(i: int) -> None:
        batch = queue.popleft()
        inflight[actors[i].play.remote(batch, _of(batch))] = (i, batch)

    try:
        for i in range(n):
            if queue:
                submit(i)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            i, batch = inflight.pop(ready[0])
            try:
                records = ray.get(ready[0])
            # ObjectLostError: the batch finished but its result lived on a node that has gone since: replay it too
            except (RayActorError, WorkerCrashedError, ObjectLostError) as exc:
                if getattr(exc, "actor_init_failed", False):  # a bad config, not a lost worker: don't retry
                    raise RuntimeError(f"rollout actor failed to start: {exc}") from exc
                key = tuple(batch)
                attempts[key] = attempts.get(key, 0) + 1
                if attempts[key] > max_task_retries:
                    raise RuntimeError(f"a rollout actor died {attempts[key]} times on seeds {batch}") from exc
                logging.getLogger(__name__).warning("rollout actor died; replaying seeds %s elsewhere", batch)
                ray.kill(actors[i], no_restart=True)
                actors[i] = new_actor()
                queue.appendleft(batch)
                submit(i)
                continue
            on_batch(records)
            if queue:
                submit(i)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
