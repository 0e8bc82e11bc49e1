"""ALFWorld as text: the rules for a system prompt, how a turn's observation reads, and how a typed command is
normalised. No `alfworld` import here, so prompts and exports work without the optional extra installed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Optional

ACHIEVEMENTS: tuple[str, ...] = ("won",)
"""ALFWorld reports one achievement, `won` (the task is solved); per-task-type rates come from `task_type`."""

TASK_TYPES: tuple[str, ...] = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
"""ALFWorld's six task types (its TASK_TYPES ids 1..6, in that order)."""

OBJECT_KINDS: tuple[str, ...] = tuple(
    """alarmclock apple baseballbat basketball book boots bowl box bread butterknife candle cd cellphone cloth
    creditcard cup curtains desklamp dishsponge egg floorlamp fork glassbottle handtowel houseplant kettle keychain
    knife ladle laptop lettuce mirror mug newspaper pan papertowel papertowelroll pen pencil peppershaker pillow
    plate plunger pot potato remotecontrol saltshaker scrubbrush soapbar soapbottle spatula spoon spraybottle statue
    teddybear television tennisracket tissuebox toiletpaper tomato towel vase watch wateringcan window
    winebottle""".split()
)
"""The kinds of object ALFWorld's text shows in or on receptacles (ALFRED's object types, lower case), without the
ones that also name receptacles (sink, bathtub): the names training may swap (TextEnv.interchangeable_names)."""

INSTRUCTIONS = """\
You are an agent in a household (ALFWorld, a text version of ALFRED). Each turn you see your task, what you \
observe, notes on what the episode showed so far (when shown: where you are, what you hold, where objects the \
task names were seen, which receptacles you have not searched yet) and the commands admissible now (when \
shown). Commands:
- look: look around your current location
- inventory: check what you are carrying
- go to (receptacle): move to a receptacle, e.g. go to countertop 1
- open (receptacle) / close (receptacle): open or close a receptacle, e.g. open fridge 1
- take (object) from (receptacle): pick an object up, e.g. take apple 1 from countertop 1
- move (object) to (receptacle): put the object you hold in or on a receptacle (also written put (object) in/on (receptacle))
- examine (something): look at a receptacle or an object closely
- use (object): use an object, e.g. use desklamp 1 (turns a lamp on)
- heat (object) with (receptacle): heat an object, e.g. heat egg 1 with microwave 1
- cool (object) with (receptacle): cool an object, e.g. cool apple 1 with fridge 1
- clean (object) with (receptacle): clean an object, e.g. clean plate 1 with sinkbasin 1
- slice (object) with (object): slice an object with a sharp object
You hold at most one object. A command that is not admissible does nothing ("Nothing happens.") but uses a step. \
The episode ends when the task is done (success) or after the step limit."""

BANNER = "-= Welcome to TextWorld, ALFRED! =-"
TASK_RE = re.compile(r"Your task is to:\s*(.+?)\s*$", re.S)
COMMAND_VERBS = frozenset(
    "go take move put open close toggle turn heat cool clean slice use examine inventory look help".split()
)
"""First words of ALFWorld commands: text starting with one of these is a command (admissible or not)."""
MAX_COMMAND_CHARS = 120
"""Longer text is not a command but prose (it becomes a parse failure, not an invalid command)."""
NOTHING_HAPPENS = "Nothing happens."
"""ALFWorld's answer to an inadmissible command (the state does not change)."""


def split_intro(feedback: str) -> tuple[str, str]:
    """The first observation of a game -> (room description, task), without TextWorld's banner."""
    text = feedback.replace(BANNER, "").strip()
    match = TASK_RE.search(text)
    if not match:
        return text, ""
    return text[: match.start()].strip(), match.group(1).strip()


def normalise(text: str) -> str:
    """Lower case, single spaces, no surrounding quotes/backticks or final full stop: how commands are compared."""
    text = " ".join((text or "").split()).strip().strip("`'\"").strip().lower()
    return text.rstrip(".!").strip()


def aliases(command: str) -> Iterable[str]:
    """Other spellings of a normalised command that mean the same game command."""
    # ALFWorld's own prompts (and many LLMs) say "put X in/on Y"; the text engine's command is "move X to Y"
    match = re.fullmatch(r"put (.+?) (?:in|on|in/on|into|onto) (.+)", command)
    if match:
        yield f"move {match.group(1)} to {match.group(2)}"
    match = re.fullmatch(r"(?:toggle|turn on) (.+)", command)
    if match:
        yield f"use {match.group(1)}"
    if command in ("l",):
        yield "look"
    if command in ("i", "inv"):
        yield "inventory"


def looks_like_command(command: str) -> bool:
    """A short normalised line starting with a command verb (so prose is a parse failure, a bad command invalid)."""
    if not command or len(command) > MAX_COMMAND_CHARS:
        return False
    return command.split(" ", 1)[0] in COMMAND_VERBS


def format_observation(
    task: str,
    observation: str,
    admissible: Optional[list[str]],
    recent: Optional[list[str]] = None,
    notes: Optional[list[str]] = None,
) -> str:
    """One turn's observation text: the task (every turn), optionally the last commands, what the agent observes,
    optionally the episode's notes (see `notes.Notes`) and the admissible commands."""
    parts = [f"Your task is to: {task}"]
    if recent:
        parts.append("Your last commands: " + ", ".join(recent))
    parts.append(f"Observation: {observation.strip()}")
    parts.extend(notes or [])
    if admissible is not None:
        parts.append("Admissible commands: " + ", ".join(admissible))
    return "\n".join(parts)
