"""ALFWorld's episode notes (`envs/alfworld/notes.py`): a tracker fed the texts TextWorld prints, nothing else.

Pure text in, lines out: these tests need neither the `alfworld` package nor its data (the texts are ALFWorld's
own grammar, logic/alfred.twl2); one test at the end checks the env wires them into its observations.
"""

from __future__ import annotations

import pytest

from crafter_exp.envs.alfworld.notes import Notes, kind, listed

ROOM = (
    "You are in the middle of a room. Looking quickly around you, you see a cabinet 2, a cabinet 1, "
    "a countertop 1, a fridge 1, a microwave 1, and a sinkbasin 1."
)
TASK = "put a hot apple in fridge."


def notes_after(*feedbacks: str) -> dict[str, str]:
    notes = Notes(ROOM)
    for feedback in feedbacks:
        notes.update(feedback)
    return dict(line.split(": ", 1) for line in notes.lines(TASK))


def test_textworld_lists_parse_to_names():
    assert listed("a apple 2, a bread 1, and a fork 1") == ["apple 2", "bread 1", "fork 1"]
    assert listed("a mug 1, and a egg 2") == ["mug 1", "egg 2"]
    assert listed("a mug 1 and a egg 2") == ["mug 1", "egg 2"]
    assert listed("a apple 1") == ["apple 1"] and listed("nothing") == []
    assert kind("apple 12") == "apple" and kind("desklamp") == "desklamp"


def test_fresh_episode_has_searched_nothing_and_holds_nothing():
    assert notes_after() == {
        "Location": "middle of the room",
        "Holding": "nothing",
        "Seen": "nothing the task names",
        "Not searched": "cabinet 2, cabinet 1, countertop 1, fridge 1, microwave 1, sinkbasin 1",
    }


def test_a_receptacle_counts_as_searched_once_its_contents_were_shown():
    shown = notes_after("You arrive at cabinet 2. The cabinet 2 is closed.")
    assert shown["Location"] == "cabinet 2" and "cabinet 2" in shown["Not searched"]  # closed: not yet searched
    shown = notes_after(
        "You arrive at cabinet 2. The cabinet 2 is closed.",
        "You open the cabinet 2. The cabinet 2 is open. In it, you see nothing.",
        "You arrive at countertop 1. On the countertop 1, you see a apple 1, a bread 1, and a apple 2.",
    )
    assert shown["Not searched"] == "cabinet 1, fridge 1, microwave 1, sinkbasin 1"
    assert shown["Location"] == "countertop 1"
    # only the kinds the task names (apple), in the order they were seen; bread is left out
    assert shown["Seen"] == "apple 1 at countertop 1, apple 2 at countertop 1"


def test_taking_heating_and_placing_track_the_held_object():
    visit = "You arrive at countertop 1. On the countertop 1, you see a apple 1, and a apple 2."
    shown = notes_after(visit, "You pick up the apple 1 from the countertop 1.")
    assert shown["Holding"] == "apple 1" and shown["Seen"] == "apple 2 at countertop 1"
    shown = notes_after(
        visit,
        "You pick up the apple 1 from the countertop 1.",
        "You arrive at microwave 1. The microwave 1 is closed.",
        "You heat the apple 1 using the microwave 1.",
    )
    assert shown["Holding"] == "apple 1 (heated)" and shown["Location"] == "microwave 1"
    shown = notes_after(
        visit,
        "You pick up the apple 1 from the countertop 1.",
        "You heat the apple 1 using the microwave 1.",
        "You arrive at fridge 1. The fridge 1 is closed.",
        "You open the fridge 1. The fridge 1 is open. In it, you see a egg 1.",
        "You move the apple 1 to the fridge 1.",
    )
    assert shown["Holding"] == "nothing"
    assert shown["Seen"] == "apple 2 at countertop 1, apple 1 at fridge 1"


def test_a_second_look_forgets_objects_no_longer_there():
    shown = notes_after(
        "You arrive at countertop 1. On the countertop 1, you see a apple 1, and a apple 2.",
        "You arrive at countertop 1. On the countertop 1, you see a apple 2.",
    )
    assert shown["Seen"] == "apple 2 at countertop 1"


def test_nothing_happens_and_look_change_nothing():
    before = notes_after("You arrive at cabinet 1. On the cabinet 1, you see nothing.")
    after = notes_after(
        "You arrive at cabinet 1. On the cabinet 1, you see nothing.",
        "Nothing happens.",
        "You are facing the cabinet 1. Next to it, you see nothing.",
    )
    assert after == before


@pytest.mark.parametrize(
    "feedback, held", [("You are carrying: a apple 1.", "apple 1"), ("You are not carrying anything.", "nothing")]
)
def test_inventory_states_what_is_held(feedback, held):
    assert notes_after("You pick up the egg 1 from the fridge 1.", feedback)["Holding"] == held
