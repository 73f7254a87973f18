"""The default translation data: a generated English-to-Spanish corpus with real grammar.

A small context-free grammar with agreement, not a phrase list. Every sentence comes with
its gold alignment: for each Spanish token, the English tokens it translates. What it
exercises, and what cross-attention has to learn:

- gender and number agreement of articles, numbers and adjectives with the noun
  ("the red houses" -> "las casas rojas");
- adjectives after the noun, so the alignment crosses ("the red car" -> "el coche rojo");
- numbers written out with Spanish agreement, not num2words' citation forms
  ("twenty-one cars" -> "veintiún coches", "twenty-one houses" -> "veintiuna casas",
  "thirty-one" -> "treinta y un"), English hyphenated numbers being several tokens;
- verbs agreeing with the subject ("we buy" -> "nosotros compramos"), ser/estar/hay;
- multi-word prepositions and contractions ("in front of the car" -> "delante del coche",
  "next to the house" -> "al lado de la casa"), personal "a" ("i see the boy" ->
  "yo veo al niño").

Text is lower case without punctuation. English tokens split hyphens ("twenty - one").
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from num2words import num2words

__all__ = ["Example", "Phrase", "generate_corpus", "generate_examples", "split_corpus"]


# ---- lexicon ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Noun:
    en: str
    en_plural: str
    es: str
    es_plural: str
    gender: str  # "m" or "f"
    kinds: frozenset[str]  # thing, food, readable, person, animal, place, surface


def _noun(en, es, gender, kinds, en_plural=None, es_plural=None) -> Noun:
    return Noun(
        en, en_plural or en + "s", es, es_plural or es + "s", gender, frozenset(kinds.split())
    )


# fmt: off
NOUNS = [
    _noun("car", "coche", "m", "thing place"),
    _noun("house", "casa", "f", "thing place"),
    _noun("book", "libro", "m", "thing readable"),
    _noun("letter", "carta", "f", "thing readable"),
    _noun("newspaper", "periódico", "m", "thing readable"),
    _noun("magazine", "revista", "f", "thing readable"),
    _noun("table", "mesa", "f", "thing place surface"),
    _noun("chair", "silla", "f", "thing place surface"),
    _noun("window", "ventana", "f", "thing openable"),
    _noun("door", "puerta", "f", "thing openable"),
    _noun("box", "caja", "f", "thing place openable", en_plural="boxes"),
    _noun("bag", "bolsa", "f", "thing openable"),
    _noun("bottle", "botella", "f", "thing openable"),
    _noun("key", "llave", "f", "thing"),
    _noun("ball", "pelota", "f", "thing"),
    _noun("bicycle", "bicicleta", "f", "thing"),
    _noun("boat", "barco", "m", "thing place"),
    _noun("hat", "sombrero", "m", "thing"),
    _noun("shirt", "camisa", "f", "thing"),
    _noun("cup", "taza", "f", "thing"),
    _noun("pencil", "lápiz", "m", "thing", es_plural="lápices"),
    _noun("flower", "flor", "f", "thing", es_plural="flores"),
    _noun("tree", "árbol", "m", "place", es_plural="árboles"),
    _noun("wall", "pared", "f", "place", es_plural="paredes"),
    _noun("bed", "cama", "f", "place surface"),
    _noun("apple", "manzana", "f", "food thing"),
    _noun("orange", "naranja", "f", "food thing"),
    _noun("cake", "pastel", "m", "food thing", es_plural="pasteles"),
    _noun("banana", "plátano", "m", "food thing"),
    _noun("cheese", "queso", "m", "food thing", en_plural="cheeses"),
    _noun("girl", "niña", "f", "person"),
    _noun("boy", "niño", "m", "person"),
    _noun("woman", "mujer", "f", "person", en_plural="women", es_plural="mujeres"),
    _noun("man", "hombre", "m", "person", en_plural="men"),
    _noun("dog", "perro", "m", "animal"),
    _noun("cat", "gato", "m", "animal"),
    _noun("bird", "pájaro", "m", "animal"),
    _noun("horse", "caballo", "m", "animal"),
    _noun("cow", "vaca", "f", "animal"),
    _noun("mouse", "ratón", "m", "animal", en_plural="mice", es_plural="ratones"),
    _noun("garden", "jardín", "m", "place", es_plural="jardines"),
    _noun("river", "río", "m", "place"),
    _noun("park", "parque", "m", "place"),
    _noun("school", "escuela", "f", "place"),
    _noun("market", "mercado", "m", "place"),
    _noun("city", "ciudad", "f", "place", en_plural="cities", es_plural="ciudades"),
    _noun("station", "estación", "f", "place", es_plural="estaciones"),
    _noun("bridge", "puente", "m", "place"),
    _noun("church", "iglesia", "f", "place", en_plural="churches"),
    _noun("forest", "bosque", "m", "place"),
    _noun("beach", "playa", "f", "place", en_plural="beaches"),
]
# fmt: on


@dataclass(frozen=True)
class Adjective:
    en: str
    forms: tuple[str, str, str, str]  # masculine, feminine, masculine plural, feminine plural
    kinds: frozenset[str]  # the noun kinds it describes
    estar: bool = False  # a state ("está contento"), not a property ("es rojo")

    def es(self, gender: str, plural: bool) -> str:
        return self.forms[(2 if plural else 0) + (1 if gender == "f" else 0)]


def _adj(en, m, kinds, f=None, mp=None, fp=None, estar=False) -> Adjective:
    """Regular -o adjectives from m; invariable ones (verde, grande) give f = m."""
    if f is None:
        f = m[:-1] + "a" if m.endswith("o") else m
    if mp is None:
        mp = m + "s" if m[-1] in "aeiouáéó" else m + "es"
    if fp is None:
        fp = f + "s" if f[-1] in "aeiou" else f + "es"
    return Adjective(en, (m, f, mp, fp), frozenset(kinds.split()), estar)


# fmt: off
ADJECTIVES = [
    _adj("red", "rojo", "thing food"),
    _adj("green", "verde", "thing food"),
    _adj("blue", "azul", "thing"),
    _adj("white", "blanco", "thing animal"),
    _adj("black", "negro", "thing animal"),
    _adj("yellow", "amarillo", "thing food"),
    _adj("big", "grande", "thing animal place"),
    _adj("small", "pequeño", "thing animal place food"),
    _adj("old", "viejo", "thing animal place person"),
    _adj("new", "nuevo", "thing place"),
    _adj("beautiful", "bonito", "thing animal place"),
    _adj("cheap", "barato", "thing food"),
    _adj("expensive", "caro", "thing food"),
    _adj("clean", "limpio", "thing place", estar=True),
    _adj("dirty", "sucio", "thing place", estar=True),
    _adj("tall", "alto", "person"),
    _adj("young", "joven", "person animal", mp="jóvenes", fp="jóvenes"),
    _adj("happy", "contento", "person animal", estar=True),
]
# fmt: on


@dataclass(frozen=True)
class Verb:
    en: str
    en_3sg: str
    es: tuple[str, str, str, str, str]  # yo, tú, él/ella, nosotros, ellos
    objects: frozenset[str]  # noun kinds it takes as object
    animal_subject: bool = False
    personal_a: bool = True  # "a" before a person (or a definite animal) as object


def _verb(en, en_3sg, es, objects, animal_subject=False, personal_a=True) -> Verb:
    return Verb(
        en, en_3sg, tuple(es.split()), frozenset(objects.split()), animal_subject, personal_a
    )


# fmt: off
VERBS = [
    _verb("see", "sees", "veo ves ve vemos ven", "thing person animal place", True),
    _verb("find", "finds", "encuentro encuentras encuentra encontramos encuentran",
          "thing person animal", True),
    _verb("have", "has", "tengo tienes tiene tenemos tienen", "thing animal", personal_a=False),
    _verb("want", "wants", "quiero quieres quiere queremos quieren", "thing"),
    _verb("buy", "buys", "compro compras compra compramos compran", "thing food"),
    _verb("sell", "sells", "vendo vendes vende vendemos venden", "thing food"),
    _verb("eat", "eats", "como comes come comemos comen", "food", True),
    _verb("read", "reads", "leo lees lee leemos leen", "readable"),
    _verb("open", "opens", "abro abres abre abrimos abren", "openable"),
    _verb("wash", "washes", "lavo lavas lava lavamos lavan", "thing animal"),
    _verb("carry", "carries", "llevo llevas lleva llevamos llevan", "thing food"),
    _verb("paint", "paints", "pinto pintas pinta pintamos pintan", "thing"),
]
# fmt: on

# (English words, Spanish words, kinds of noun it takes); the Spanish "de" meets "el" as "del".
# fmt: off
PREPOSITIONS = [
    (("in",), ("en",), "place"),
    (("on",), ("sobre",), "surface"),
    (("under",), ("debajo", "de"), "surface place"),
    (("behind",), ("detrás", "de"), "place thing"),
    (("in", "front", "of"), ("delante", "de"), "place thing"),
    (("next", "to"), ("al", "lado", "de"), "place thing"),
    (("near",), ("cerca", "de"), "place"),
]
# fmt: on

# person: 0 yo, 1 tú, 2 él/ella, 3 nosotros, 4 ellos
PRONOUNS = [
    ("i", "yo", 0),
    ("you", "tú", 1),
    ("he", "él", 2),
    ("she", "ella", 2),
    ("we", "nosotros", 3),
    ("they", "ellos", 4),
]
BE_EN = ("am", "are", "is", "are", "are")
ESTAR = ("estoy", "estás", "está", "estamos", "están")
SER = ("soy", "eres", "es", "somos", "son")


# ---- phrases with alignment ------------------------------------------------------------


@dataclass
class Phrase:
    """English and Spanish tokens, and for each Spanish token the English token indices it
    translates (indices into this phrase's English tokens)."""

    en: list[str] = field(default_factory=list)
    es: list[str] = field(default_factory=list)
    links: list[set[int]] = field(default_factory=list)

    def add(self, en: list[str], es: list[str], links: list[set[int]] | None = None) -> Phrase:
        """Append words; links index into `en` (default: every Spanish word to all of en)."""
        offset = len(self.en)
        if links is None:
            links = [set(range(len(en))) for _ in es]
        self.en.extend(en)
        self.es.extend(es)
        self.links.extend({offset + i for i in link} for link in links)
        return self

    def extend(self, other: Phrase) -> Phrase:
        return self.add(other.en, other.es, other.links)

    def contract(self) -> Phrase:
        """de + el -> del, a + el -> al (the merged word keeps both alignments)."""
        es, links = [], []
        for word, link in zip(self.es, self.links, strict=True):
            if word == "el" and es and es[-1] in ("de", "a"):
                es[-1] = "del" if es[-1] == "de" else "al"
                links[-1] = links[-1] | link
            else:
                es.append(word)
                links.append(set(link))
        self.es, self.links = es, links
        return self


def number_words(n: int) -> tuple[list[str], list[str]]:
    """English tokens ("twenty", "-", "one") and Spanish words for n (2..99) before a noun;
    the Spanish ending "uno" is fixed by the noun's gender later (see _agree_number)."""
    en = num2words(n, lang="en").replace("-", " - ").split()
    es = num2words(n, lang="es").split()
    return en, es


def _agree_number(es: list[str], gender: str) -> list[str]:
    """veintiuno -> veintiún / veintiuna; treinta y uno -> treinta y un / una."""
    last = es[-1]
    if last.endswith("uno"):
        stem = last[:-3]
        masculine = "ún" if stem else "un"  # veintiún, but "treinta y un"
        last = stem + ("una" if gender == "f" else masculine)
        es = [*es[:-1], last]
    return es


def noun_phrase(noun: Noun, *, det: str, count: int = 1, adj: Adjective | None = None) -> Phrase:
    """det: "the", "a" (count 1), "some" (plural), "num" (count >= 2), or "the+num"."""
    plural = count > 1 or det == "some"
    p = Phrase()
    if det in ("the", "the+num"):
        article = {("m", False): "el", ("f", False): "la", ("m", True): "los", ("f", True): "las"}[
            (noun.gender, plural)
        ]
        p.add(["the"], [article])
    elif det == "a":
        first = (adj.en if adj else noun.en)[0]
        p.add(["an" if first in "aeiou" else "a"], ["una" if noun.gender == "f" else "un"])
    elif det == "some":
        p.add(["some"], ["unas" if noun.gender == "f" else "unos"])
    if det in ("num", "the+num"):
        en, es = number_words(count)
        p.add(en, _agree_number(es, noun.gender))
    # English: adjective then noun; Spanish: noun then adjective (the alignment crosses)
    en_words = ([adj.en] if adj else []) + [noun.en_plural if plural else noun.en]
    es_noun = noun.es_plural if plural else noun.es
    if adj:
        p.add(en_words, [es_noun, adj.es(noun.gender, plural)], [{1}, {0}])
    else:
        p.add(en_words, [es_noun])
    return p


# ---- the grammar ------------------------------------------------------------------------


class _Grammar:
    def __init__(self, rng: random.Random, max_number: int = 99):
        self.rng = rng
        self.max_number = max_number

    def pick_noun(self, kinds: str) -> Noun:
        wanted = set(kinds.split())
        return self.rng.choice([n for n in NOUNS if n.kinds & wanted])

    def pick_adj(self, noun: Noun, p: float = 0.5) -> Adjective | None:
        fits = [a for a in ADJECTIVES if a.kinds & noun.kinds]
        return self.rng.choice(fits) if fits and self.rng.random() < p else None

    def np(self, kinds: str, *, allow_numbers: bool = True, definite_only=False):
        """A random noun phrase of a noun of `kinds`; returns (phrase, noun, plural)."""
        noun = self.pick_noun(kinds)
        adj = self.pick_adj(noun)
        r = self.rng.random()
        if definite_only or r < 0.4:
            det, count = "the", self.rng.choice([1, 1, 2])
        elif r < 0.6:
            det, count = "a", 1
        elif r < 0.7:
            det, count = "some", 2
        elif allow_numbers:
            det, count = "num", self.rng.randint(2, self.max_number)
        else:
            det, count = "the", 1
        phrase = noun_phrase(noun, det=det, count=count, adj=adj)
        return phrase, noun, count > 1 or det == "some", det

    def subject(self, *, animal: bool, gendered: bool = False):
        """(phrase, person index 0-4, gender or None)."""
        if self.rng.random() < 0.4:
            choices = [p for p in PRONOUNS if not gendered or p[0] in ("he", "she")]
            en, es, person = self.rng.choice(choices)
            gender = {"he": "m", "she": "f"}.get(en)
            return Phrase().add([en], [es]), person, gender
        kinds = "person animal" if animal else "person"
        phrase, noun, plural, _ = self.np(kinds)
        return phrase, 4 if plural else 2, noun.gender

    def place(self, kinds: str = "place") -> Phrase:
        options = [p for p in PREPOSITIONS if set(p[2].split()) & set(kinds.split())]
        en, es, noun_kinds = self.rng.choice(options)
        obj, _, _, _ = self.np(noun_kinds, definite_only=self.rng.random() < 0.7)
        return Phrase().add(list(en), list(es)).extend(obj)

    def transitive(self) -> Phrase:
        verb = self.rng.choice(VERBS)
        subj, person, _ = self.subject(animal=verb.animal_subject)
        kinds = " ".join(sorted(verb.objects))
        obj, noun, _, det = self.np(kinds)
        p = Phrase().extend(subj)
        en_verb = verb.en_3sg if person == 2 else verb.en
        p.add([en_verb], [verb.es[person]])
        animate = "person" in noun.kinds or ("animal" in noun.kinds and det == "the")
        if verb.personal_a and animate and (noun.kinds & {"person", "animal"}):
            p.add([], ["a"], [set()])  # personal "a": no English counterpart
        p.extend(obj)
        if self.rng.random() < 0.3:
            p.extend(self.place())
        return p

    def locative(self) -> Phrase:
        subj, person, _ = self.subject(animal=True)
        p = Phrase().extend(subj)
        p.add([BE_EN[person]], [ESTAR[person]])
        return p.extend(self.place())

    def existential(self) -> Phrase:
        obj, _, plural, _ = self.np("thing animal person food")
        while obj.en[0] == "the":  # "there is the car" is not what people say
            obj, _, plural, _ = self.np("thing animal person food")
        p = Phrase().add(["there", "are" if plural else "is"], ["hay"])
        return p.extend(obj).extend(self.place())

    def predicative(self) -> Phrase:
        subj, person, gender = self.subject(animal=True, gendered=True)
        kinds = {"person"}
        if len(subj.en) > 1:  # a noun phrase: describe it with an adjective of its kind
            noun = next(n for n in NOUNS if subj.en[-1] in (n.en, n.en_plural))
            kinds = set(noun.kinds)
        adj = self.rng.choice([a for a in ADJECTIVES if a.kinds & kinds])
        plural = person == 4
        p = Phrase().extend(subj)
        p.add([BE_EN[person]], [(ESTAR if adj.estar else SER)[person]])
        return p.add([adj.en], [adj.es(gender or "m", plural)])

    def sentence(self) -> Phrase:
        r = self.rng.random()
        if r < 0.45:
            p = self.transitive()
        elif r < 0.65:
            p = self.locative()
        elif r < 0.8:
            p = self.existential()
        else:
            p = self.predicative()
        return p.contract()


# ---- examples and splits -----------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One sentence pair: tokens, text, and the gold alignment (for each target token, the
    indices of the source tokens it translates; empty for words like the personal "a")."""

    source_tokens: tuple[str, ...]
    target_tokens: tuple[str, ...]
    alignment: tuple[tuple[int, ...], ...]

    @property
    def source(self) -> str:
        return " ".join(self.source_tokens).replace(" - ", "-")

    @property
    def target(self) -> str:
        return " ".join(self.target_tokens)


def _example(p: Phrase) -> Example:
    return Example(tuple(p.en), tuple(p.es), tuple(tuple(sorted(link)) for link in p.links))


def generate_examples(seed: int = 0, max_number: int = 99) -> Iterator[Example]:
    """An endless stream of sentence pairs (duplicates possible)."""
    grammar = _Grammar(random.Random(seed), max_number)
    while True:
        yield _example(grammar.sentence())


def generate_corpus(size: int, seed: int = 0, max_number: int = 99) -> list[Example]:
    """`size` distinct sentence pairs (distinct English sentences), in generation order."""
    seen: set[tuple[str, ...]] = set()
    out: list[Example] = []
    for example in generate_examples(seed, max_number):
        if example.source_tokens not in seen:
            seen.add(example.source_tokens)
            out.append(example)
            if len(out) == size:
                return out
    raise AssertionError("unreachable")


def split_corpus(
    train: int = 20000, valid: int = 1000, test: int = 1000, seed: int = 0
) -> dict[str, list[Example]]:
    """Disjoint train/valid/test splits (no English sentence in two splits)."""
    examples = generate_corpus(train + valid + test, seed)
    random.Random(seed + 1).shuffle(examples)
    return {
        "train": examples[:train],
        "valid": examples[train : train + valid],
        "test": examples[train + valid :],
    }
