"""Question answering data: a bAbI-style story generator (ours; no offline package ships
bAbI or SQuAD).

People move between places and pick up and drop objects; each story ends with
a question: "where is mary ?" (the place she went to last) or "where is the apple ?"
(where its holder is, or where it was dropped). Every question knows its supporting
sentences (the gold alignment): the move that put the person there, and for objects also
the sentence that gave or dropped the object.

The reply a model writes (`Story.reply`) spells out the chain: "where is the apple ?" ->
"daniel bathroom", the person who last had the object (from the sentence that gave or
dropped it), then the place (from that person's move). `Story.chain` names the sentence
behind each reply word.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["OBJECTS", "PEOPLE", "PLACES", "TAKES", "Story", "make_stories"]

PEOPLE = ("mary", "john", "sandra", "daniel", "fred", "bill", "julie", "emily")
PLACES = ("kitchen", "garden", "office", "bathroom", "bedroom", "hallway", "cellar", "park")
OBJECTS = ("apple", "football", "milk", "key", "book", "hat")
MOVES = ("went to", "moved to", "journeyed to", "travelled to", "went back to")
TAKES = ("picked up", "got", "grabbed", "took")
DROPS = ("dropped", "put down", "discarded", "left")


@dataclass(frozen=True)
class Story:
    """sentences (each ending with " ."), question ("where is X ?"), answer (a place),
    support: indices of the sentences that answer it, kind: "person" or "object";
    holder: for an object, the person who last had it (holds it or dropped it), else "";
    chain: the sentence behind each word of `reply` (object: holder's, then the move)."""

    sentences: tuple[str, ...]
    question: str
    answer: str
    support: tuple[int, ...]
    kind: str
    holder: str = ""
    chain: tuple[int, ...] = ()

    @property
    def passage(self) -> str:
        return " ".join(self.sentences)

    @property
    def reply(self) -> str:
        """The answer with its first hop written out: "daniel bathroom" for an object."""
        return f"{self.holder} {self.answer}" if self.holder else self.answer


def _story(rng: random.Random, length: int, objects: bool, object_share: float) -> Story | None:
    people = rng.sample(PEOPLE, rng.randint(2, 4))
    things = rng.sample(OBJECTS, rng.randint(1, 3)) if objects else []
    where: dict[str, tuple[str, int]] = {}  # person -> (place, sentence index)
    holder: dict[str, tuple[str, int]] = {}  # object -> (person, sentence of the pick-up)
    lying: dict[str, tuple[str, str, int, int]] = {}  # object -> (dropper, place, move, drop)
    sentences: list[str] = []
    while len(sentences) < length:
        i = len(sentences)
        person = rng.choice(people)
        held = [t for t, (p, _) in holder.items() if p == person]
        free = [
            t
            for t in things
            if t not in holder
            and (t not in lying or (person in where and lying[t][1] == where[person][0]))
        ]
        roll = rng.random()
        if objects and person in where and free and roll < 0.25:
            thing = rng.choice(free)
            holder[thing] = (person, i)
            lying.pop(thing, None)
            sentences.append(f"{person} {rng.choice(TAKES)} the {thing} .")
        elif objects and held and roll < 0.4:
            thing = rng.choice(held)
            del holder[thing]
            place, moved = where[person]
            lying[thing] = (person, place, moved, i)
            sentences.append(f"{person} {rng.choice(DROPS)} the {thing} .")
        else:
            place = rng.choice([p for p in PLACES if p != where.get(person, ("",))[0]])
            where[person] = (place, i)
            sentences.append(f"{person} {rng.choice(MOVES)} the {place} .")
    askable_objects = list(holder) + list(lying)
    if objects and askable_objects and rng.random() < object_share:
        thing = rng.choice(askable_objects)
        if thing in holder:
            person, gave = holder[thing]
            place, moved = where[person]
        else:
            person, place, moved, gave = lying[thing]
        return Story(
            tuple(sentences),
            f"where is the {thing} ?",
            place,
            tuple(sorted({gave, moved})),
            "object",
            person,
            (gave, moved),
        )
    known = [p for p in people if p in where]
    if not known:
        return None
    person = rng.choice(known)
    place, moved = where[person]
    return Story(
        tuple(sentences), f"where is {person} ?", place, (moved,), "person", chain=(moved,)
    )


def make_stories(
    train: int = 20000,
    valid: int = 500,
    test: int = 1000,
    *,
    seed: int = 0,
    objects: bool = True,
    min_sentences: int = 2,
    max_sentences: int = 10,
    object_share: float = 0.8,
) -> dict[str, list[Story]]:
    """Stories per split; a story (sentences and question) never appears in two splits.

    object_share: the chance that a story with an object someone has held asks where that
    object is (the harder, two-hop question) rather than where a person is."""
    rng = random.Random(seed)
    seen: set[tuple] = set()
    out: dict[str, list[Story]] = {}
    for name, size in (("train", train), ("valid", valid), ("test", test)):
        stories: list[Story] = []
        while len(stories) < size:
            story = _story(rng, rng.randint(min_sentences, max_sentences), objects, object_share)
            if story is None:
                continue
            key = (story.sentences, story.question)
            if key in seen:
                continue
            seen.add(key)
            stories.append(story)
        out[name] = stories
    return out
