"""`Notes`: what an ALFWorld episode has shown so far, kept as a few lines of text for the next observation.

One ALFWorld observation shows only the answer to the last command ("You arrive at cabinet 3. The cabinet 3 is
closed."): nothing says which receptacles were already searched, where the task's object was seen three turns
ago or what the agent holds. A memoryless policy (the tiny student sees one turn) then walks in circles. The
notes are a state tracker in the spirit of Crafter's "Remembered" line: computed only from the texts the
episode printed (the room listing, then each command's feedback), never from the game's hidden state, so they
are what an attentive player would have written down:

    Not searched: cabinet 2, cabinet 1, fridge 1, microwave 1
    Location: stoveburner 3
    Holding: kettle 2 (cleaned)
    Seen: kettle 1 at countertop 2

`Seen` lists only objects whose kind the task names (a full inventory of the room would crowd the prompt out);
`Not searched` keeps the room listing's order, minus the receptacles whose contents the agent has seen.
"""

from __future__ import annotations

import re
from typing import Optional

_ARRIVE = re.compile(r"^You arrive at (.+?)\.")
_CONTENTS = re.compile(r"(?:On the (.+?), you see|The (.+?) is open\. In it, you see) (.+?)\.$", re.M)
_PICK = re.compile(r"You pick up the (.+?) from the (.+?)\.")
_MOVE = re.compile(r"You move the (.+?) to the (.+?)\.")
_TREAT = re.compile(r"You (heat|cool|clean) the (.+?) using the (.+?)\.")
_CARRY = re.compile(r"You are carrying: (.+?)\.$")
_ROOM = re.compile(r"Looking quickly around you, you see (.+?)\.$", re.S)
TREATED = {"heat": "heated", "cool": "cooled", "clean": "cleaned"}
"""The state an appliance leaves an object in, as the notes print it."""


def listed(items: str) -> list[str]:
    """TextWorld's list "a apple 2, a bread 1, and a fork 1" (or "nothing") -> ["apple 2", "bread 1", "fork 1"]."""
    items = items.strip()
    if items == "nothing":
        return []
    names = []
    for part in re.split(r",\s*(?:and\s+)?|\s+and\s+", items):
        part = re.sub(r"^(?:a|an|the|some)\s+", "", part.strip())
        if part:
            names.append(part)
    return names


def kind(name: str) -> str:
    """An object's kind: its name without the instance number ("apple 2" -> "apple")."""
    return name.rsplit(" ", 1)[0] if name.rsplit(" ", 1)[-1].isdigit() else name


class Notes:
    """The tracker of one episode: `Notes(room)` at reset, `update(feedback)` after each played command."""

    def __init__(self, room: str):
        match = _ROOM.search(room)
        self.receptacles: list[str] = listed(match.group(1)) if match else []
        self.searched: set[str] = set()
        self.location: Optional[str] = None
        self.holding: Optional[str] = None
        self.treated: dict[str, list[str]] = {}
        self.seen: dict[str, str] = {}  # object -> the receptacle it was last seen in or on

    def update(self, feedback: str) -> None:
        """Read one command's feedback ("Nothing happens." changes nothing)."""
        arrive = _ARRIVE.search(feedback)
        if arrive:
            self.location = arrive.group(1)
        for match in _CONTENTS.finditer(feedback):
            receptacle = match.group(1) or match.group(2)
            self._saw_contents(receptacle, listed(match.group(3)))
        pick = _PICK.search(feedback)
        if pick:
            self.holding = pick.group(1)
            self.seen.pop(pick.group(1), None)
        move = _MOVE.search(feedback)
        if move:
            self.holding = None
            self.seen[move.group(1)] = move.group(2)
        treat = _TREAT.search(feedback)
        if treat:
            states = self.treated.setdefault(treat.group(2), [])
            if TREATED[treat.group(1)] not in states:
                states.append(TREATED[treat.group(1)])
        if feedback.startswith("You are not carrying anything"):
            self.holding = None
        carry = _CARRY.search(feedback)
        if carry:
            held = listed(carry.group(1))
            self.holding = held[0] if held else None

    def lines(self, task: str) -> list[str]:
        """The notes as observation lines, `Seen` restricted to the kinds of object `task` names."""
        words = set(re.findall(r"[a-z]+", task.lower()))
        held = "nothing"
        if self.holding:
            states = self.treated.get(self.holding)
            held = self.holding + (f" ({', '.join(states)})" if states else "")
        relevant = [f"{obj} at {where}" for obj, where in self.seen.items() if kind(obj) in words]
        unsearched = [r for r in self.receptacles if r not in self.searched]
        # `Seen` last, next to the reply that copies from it ("take apple 1 from countertop 2"): the shortest
        # reach for a two-layer student (an ordering chosen, not compared with others)
        return [
            "Not searched: " + (", ".join(unsearched) or "nothing left"),
            f"Location: {self.location or 'middle of the room'}",
            f"Holding: {held}",
            "Seen: " + (", ".join(relevant) or "nothing the task names"),
        ]

    def _saw_contents(self, receptacle: str, objects: list[str]) -> None:
        self.searched.add(receptacle)
        for obj, where in list(self.seen.items()):
            if where == receptacle and obj not in objects:
                del self.seen[obj]  # taken away since (by us: then `holding` says so)
        for obj in objects:
            self.seen[obj] = receptacle
