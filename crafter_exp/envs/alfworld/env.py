"""`AlfworldTextEnv`: ALFWorld's TextWorld games (the engine behind `AlfredTWEnv`) behind the `TextEnv` interface.

One game per episode, chosen by the seed; one TextWorld environment per object, reloaded on reset. ALFWorld's
hand-coded expert runs alongside (it must see every step to track the room) and answers `expert_action()`.

Invalid commands: any single line starting with a command verb is a command (`canonical_action` returns it);
one that is not admissible now is not sent to the game: the step returns ALFWorld's "Nothing happens.",
`valid=False`, the state unchanged, and it costs a step — as in ALFWorld's own evaluation, where the engine
answers inadmissible commands the same way. Prose that is no command at all is a parse failure (None).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

from crafter_exp.envs.alfworld import data, speedups, text
from crafter_exp.envs.alfworld.notes import Notes
from crafter_exp.envs.base import RUN_METRICS, Observation, StepResult, TextEnv
from crafter_exp.errors import UserError

if TYPE_CHECKING:
    from crafter_exp.config import AlfworldEnvConfig

HIDDEN_COMMANDS = frozenset({"help"})
"""Admissible but useless commands left out of `Observation.actions` (random policies would waste steps)."""
_IDLE: list[tuple[Any, Optional[str]]] = []
"""TextWorld environments (and the game each has loaded) released by closed envs, reused by new ones: each new
one loads its own copy of fast-downward's library, which is never unloaded (~2 MB per env object otherwise)."""
EXPERT_MAX_STEPS = 1000
"""The expert's own give-up limit (ALFWorld raises past it); episodes end earlier via env.max_steps."""


class AlfworldTextEnv(TextEnv):
    name = "alfworld"
    achievements = text.ACHIEVEMENTS
    primary_metric = "success_rate"
    metrics = ("success_rate", "steps_to_success", *RUN_METRICS, "success/*")
    """Success, steps to success, inadmissible commands, success per task type (ALFWorld's one achievement is
    `won`: achievement counts, Crafter score and progression would only restate the success rate)."""
    instructions = text.INSTRUCTIONS
    fallback_action = "look"
    """Played when a reply holds no command: always admissible and harmless (it re-describes the room)."""
    slow_steps = True
    actions_admissible = True
    """`Observation.actions` is TextWorld's admissible-command list of the turn (minus `help`)."""
    interchangeable_names = text.OBJECT_KINDS
    """Object kinds: the name-swapped training copies (`trainer.augment_copies`) swap these."""

    def __init__(self, cfg: AlfworldEnvConfig):
        check_config(cfg)
        self.cfg = cfg
        self.root = data.resolve_data_path(cfg.data_path)
        self.games = data.list_games(str(self.root), cfg.split, tuple(sorted(cfg.task_types)))
        # process-wide (TextWorld's module functions): the last env built decides; normally all share a config
        speedups.install() if cfg.fast_text else speedups.uninstall()
        self._tw_env: Any = None
        self._loaded: Optional[str] = None
        self._expert: Any = None
        self._expert_rng = random.Random(0)
        self._state: Any = None
        self._game: Optional[str] = None
        self._task = ""
        self._steps = 0
        self._won = False
        self._done = True
        self._expert_next: Optional[str] = None
        self._admissible: dict[str, str] = {}
        self._commands: list[str] = []  # this episode's, as played (env.memory shows the last of them)
        self._notes = Notes("")

    # ---------------------------------------------------------------------------------------------- episode

    def reset(self, seed: int) -> Observation:
        game = data.game_for_seed(self.games, seed)
        if self._tw_env is None and _IDLE:
            self._tw_env, self._loaded = _IDLE.pop()
        fresh = None
        if game != self._loaded:
            env = self._load(game)
            fresh = getattr(env.unwrapped, "_pddl_state", None)
        env = self._tw_env
        self._expert_rng = random.Random(seed)
        with self._seeded_expert(), _reusing_pddl_state(fresh):
            self._state = env.reset()
        with self._seeded_expert():
            self._expert_reset(game)
        room, self._task = text.split_intro(self._state["feedback"])
        self._game, self._steps, self._won, self._done = game, 0, False, False
        self._commands = []
        self._notes = Notes(room)
        self._update_admissible()
        return self._observation(room)

    def step(self, action: str) -> StepResult:
        if self._done:
            raise RuntimeError("step() after the episode ended; call reset(seed)")
        self._steps += 1
        command = self._admissible.get(text.normalise(action))
        self._commands.append(command or text.normalise(action))
        if command is None:
            feedback, valid = text.NOTHING_HAPPENS, False
        else:
            with self._seeded_expert():
                self._state, _, _ = self._tw_env.step(command)
                self._expert_observe(command)
            feedback, valid = self._state["feedback"], True
            self._update_admissible()
            self._notes.update(feedback)
        won = bool(self._state["won"])
        newly_won = won and not self._won
        self._won = won
        termination = None
        if won:
            termination = "success"
        elif self._steps >= self.cfg.max_steps:
            termination = "max_steps"
        self._done = termination is not None
        return StepResult(
            observation=self._observation(feedback),
            reward=1.0 if newly_won else 0.0,
            done=self._done,
            valid=valid,
            unlocked=["won"] if newly_won else [],
            termination=termination,
        )

    def canonical_action(self, text_: str) -> Optional[str]:
        if "\n" in (text_ or "").strip():
            return None  # several lines are a reply, not a command (the parser then tries the last line)
        command = text.normalise(text_)
        if command in self._admissible:
            return self._admissible[command]
        for alias in text.aliases(command):
            if alias in self._admissible:
                return self._admissible[alias]
        # a command, but not admissible now: played as an invalid step (see the module docstring)
        return command if text.looks_like_command(command) else None

    def expert_action(self) -> Optional[str]:
        """ALFWorld's hand-coded expert's next command ("look" where it has no admissible plan, as in ALFWorld)."""
        return None if self._done else self._expert_next

    def episode_info(self) -> dict[str, Any]:
        return {"success": self._won, "task_type": data.task_type_of(self._game) if self._game else None}

    def close(self) -> None:
        if self._tw_env is not None:
            _IDLE.append((self._tw_env, self._loaded))  # the runner builds an env per episode: recycle it
            self._tw_env = None
            self._loaded = None

    # ------------------------------------------------------------------------------------------------ parts

    def _load(self, game: str):
        if self._tw_env is None:
            import textworld
            from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

            # What AlfredTWEnv.init_env builds, for one game at a time: its gym wrapper would pick games itself
            # and run them in subprocesses, while a seed must name the game here. Facts feed the expert.
            # (Started lazily on the episode's own game: `textworld.start` loads the game it is given.)
            infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=True, extras=["gamefile"])
            self._tw_env = textworld.start(game, infos, wrappers=[AlfredDemangler(shuffle=False), AlfredInfos])
        else:
            self._tw_env.load(game)
        self._loaded = game
        return self._tw_env

    @contextlib.contextmanager
    def _seeded_expert(self) -> Iterator[None]:
        # The hand-coded expert breaks ties with the module-level `random`; give it this episode's own stream
        # so an episode replays identically whatever else ran in the process (lockstep batches interleave envs).
        from alfworld.agents.expert import handcoded_expert

        saved = handcoded_expert.random
        handcoded_expert.random = self._expert_rng
        try:
            yield
        finally:
            handcoded_expert.random = saved

    def _expert_reset(self, game: str) -> None:
        from alfworld.agents.expert import HandCodedTWAgent

        self._expert = HandCodedTWAgent(max_steps=EXPERT_MAX_STEPS)
        self._expert.reset(game)
        self._expert.observe(self._state["feedback"])
        self._expert_next = "look"  # what ALFWorld's AlfredExpert plans first: the expert reads the room

    def _expert_observe(self, command: str) -> None:
        # As ALFWorld's AlfredExpert wrapper, minus its crash when the expert gives up: then there is no expert
        # suggestion (None) for the rest of the episode.
        if self._expert is None:
            return
        try:
            nxt = self._expert.act(self._state, 0, self._state["won"], command)
        except Exception:  # HandCodedAgentFailed / Timeout, or a heuristic hitting a state it can't parse
            # it stays stuck: "look" as ALFWorld's own wrapper plans when it has nothing better (the episode
            # then runs out of steps unsolved, and a success filter drops it)
            self._expert, self._expert_next = None, "look"
            return
        self._expert_next = nxt if nxt in self._state["admissible_commands"] else "look"

    def _update_admissible(self) -> None:
        commands = self._state["admissible_commands"] or []
        self._admissible = {text.normalise(c): c for c in commands}

    def _observation(self, feedback: str) -> Observation:
        actions = [c for c in self._admissible.values() if c not in HIDDEN_COMMANDS]
        shown = actions if self.cfg.show_admissible else None
        return Observation(
            text=text.format_observation(
                self._task,
                feedback,
                shown,
                self._commands[-self.cfg.memory :] if self.cfg.memory > 0 else None,
                self._notes.lines(self._task) if self.cfg.notes else None,
            ),
            actions=actions,
            info={
                "task": self._task,
                "task_type": data.task_type_of(self._game) if self._game else None,
                "game": data.game_name(self.root, self._game) if self._game else None,
                "won": self._won,
                "steps": self._steps,
            },
        )


@contextlib.contextmanager
def _reusing_pddl_state(fresh: Any) -> Iterator[None]:
    """While a just-loaded game resets, hand TextWorld the planner state `load()` built instead of a second one.

    TextWorld's PDDL backend translates the game (fast-downward's pddl2sas: 0.2-2 s) in `load()` and again in
    `reset()`; the state built by `load()` is untouched until the reset, so reusing it halves the cost of a reset
    to a new game. Resets of the same game again (or an unexpected TextWorld) take the normal path.
    """
    if fresh is None:
        yield
        return
    from textworld.envs.pddl import logic as pddl_logic

    real = pddl_logic.PddlState
    pddl_logic.PddlState = lambda *args, **kwargs: fresh
    try:
        yield
    finally:
        pddl_logic.PddlState = real


def held_out_config(cfg: AlfworldEnvConfig) -> AlfworldEnvConfig:
    """The config evaluation plays: the same settings on `eval_split`'s games.

    Seeds cannot hold games out within a split (a seed names game `seed % len(games)`, so eval seeds 1_000_000+
    replay the training games); held-out ALFWorld means other games: valid_seen or valid_unseen.
    """
    return dataclasses.replace(cfg, split=cfg.eval_split) if cfg.eval_split else cfg


def also_held_out_configs(cfg: AlfworldEnvConfig) -> dict[str, AlfworldEnvConfig]:
    """The further held-out sets (`also_eval_splits`), by their data folder's name (e.g. valid_unseen)."""
    return {data.SPLITS[s]: dataclasses.replace(cfg, split=s) for s in cfg.also_eval_splits if s != cfg.eval_split}


def check_config(cfg: AlfworldEnvConfig) -> None:
    """Everything that can be checked before work starts: split, task types, data present, package installed."""
    data.check_split(cfg.split)
    if cfg.eval_split:
        data.check_split(cfg.eval_split, "eval_split")
    for split in cfg.also_eval_splits:
        data.check_split(split, "also_eval_splits")
    data.check_task_types(list(cfg.task_types))
    if cfg.memory < 0:
        raise UserError(f"env.memory must be >= 0, got {cfg.memory}")
    data.resolve_data_path(cfg.data_path)
    try:
        import alfworld  # noqa: F401
        import textworld  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"env=alfworld needs the alfworld package ({exc.name} missing): pip install 'crafter-exp[alfworld]'"
        ) from None
