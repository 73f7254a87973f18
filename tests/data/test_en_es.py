"""The generated English-Spanish corpus: correct Spanish, gold alignment, disjoint splits."""

import itertools

import pytest

from xattn.data.en_es import (
    ADJECTIVES,
    NOUNS,
    Phrase,
    generate_corpus,
    generate_examples,
    noun_phrase,
    split_corpus,
)

N = {n.en: n for n in NOUNS}
A = {a.en: a for a in ADJECTIVES}


@pytest.mark.parametrize(
    "noun,det,count,adj,en,es",
    [
        ("car", "the", 1, "red", "the red car", "el coche rojo"),
        ("house", "the", 2, "red", "the red houses", "las casas rojas"),
        ("car", "num", 21, None, "twenty - one cars", "veintiún coches"),
        ("house", "num", 21, None, "twenty - one houses", "veintiuna casas"),
        ("car", "num", 31, "green", "thirty - one green cars", "treinta y un coches verdes"),
        ("house", "num", 31, "blue", "thirty - one blue houses", "treinta y una casas azules"),
        ("apple", "a", 1, None, "an apple", "una manzana"),
        ("car", "a", 1, "old", "an old car", "un coche viejo"),
        ("dog", "some", 2, "young", "some young dogs", "unos perros jóvenes"),
        ("tree", "num", 16, None, "sixteen trees", "dieciséis árboles"),
        ("pencil", "the", 2, None, "the pencils", "los lápices"),
        ("garden", "the", 2, "big", "the big gardens", "los jardines grandes"),
        ("mouse", "num", 3, None, "three mice", "tres ratones"),
        ("city", "the+num", 22, None, "the twenty - two cities", "las veintidós ciudades"),
    ],
)
def test_noun_phrases_agree_in_gender_and_number(noun, det, count, adj, en, es):
    p = noun_phrase(N[noun], det=det, count=count, adj=A[adj] if adj else None)
    assert " ".join(p.en) == en
    assert " ".join(p.es) == es


def test_adjectives_cross_in_the_alignment():
    p = noun_phrase(N["car"], det="the", adj=A["red"])  # the red car -> el coche rojo
    assert p.links == [{0}, {2}, {1}]  # el->the, coche->car, rojo->red: the links cross


def test_numbers_align_several_words_to_one_and_one_to_several():
    p = noun_phrase(N["car"], det="num", count=21)
    assert p.es[0] == "veintiún" and p.links[0] == {0, 1, 2}  # twenty - one -> veintiún
    p = noun_phrase(N["car"], det="num", count=31)
    assert p.es[:3] == ["treinta", "y", "un"] and all(link == {0, 1, 2} for link in p.links[:3])


def test_contractions_keep_both_alignments():
    p = Phrase().add(["in", "front", "of"], ["delante", "de"])
    p.extend(noun_phrase(N["car"], det="the")).contract()
    assert p.es == ["delante", "del", "coche"]
    assert p.links[1] == {0, 1, 2, 3}  # del <- "in front of" + "the"
    p = Phrase().add(["next", "to"], ["al", "lado", "de"])
    p.extend(noun_phrase(N["house"], det="the")).contract()
    assert p.es == ["al", "lado", "de", "la", "casa"]


def examples(n=3000, seed=0):
    return generate_corpus(n, seed)


def test_sentences_are_grammatical_spanish():
    corpus = examples()
    text = [e.target for e in corpus]
    assert not any(" de el " in t or t.endswith(" de el") for t in text)
    assert not any(" a el " in t for t in text)
    assert not any("veintiuno " in t or "y uno " in t for t in text)  # no citation forms
    # subject-verb agreement with pronouns
    pairs = {"i": "yo", "you": "tú", "he": "él", "she": "ella", "we": "nosotros", "they": "ellos"}
    endings = {"yo": ("o", "oy"), "tú": ("s",), "nosotros": ("mos",), "ellos": ("n",)}
    for e in corpus:
        first = e.source_tokens[0]
        if first in pairs and pairs[first] in endings:
            assert e.target_tokens[0] == pairs[first]
            assert e.target_tokens[1].endswith(endings[pairs[first]]), e
    # states take estar, properties ser
    assert any(" está contento" in t or " están contentos" in t for t in text)
    assert not any(" es contento" in t or " son contentos" in t for t in text)
    # personal "a" before people as objects
    assert any(" a la niña" in t or " al niño" in t or " a las niñas" in t for t in text)


def test_gold_alignment_is_valid_and_covers_content_words():
    for e in examples(2000):
        assert len(e.alignment) == len(e.target_tokens)
        for word, link in zip(e.target_tokens, e.alignment, strict=True):
            assert all(0 <= i < len(e.source_tokens) for i in link)
            if word != "a":  # only the personal "a" has no English counterpart
                assert link, (e.source, e.target, word)
        covered = set().union(*map(set, e.alignment))
        assert covered == set(range(len(e.source_tokens))), e  # every English word is used
    crossing = 0
    for e in examples(500):
        pos = [min(a) for a in e.alignment if a]
        crossing += any(b < a for a, b in itertools.pairwise(pos))
    assert crossing > 100  # adjective-noun crossings are common


def test_generator_is_seeded_and_a_grammar_not_a_list():
    a, b = examples(500, seed=3), examples(500, seed=3)
    assert a == b
    assert examples(500, seed=4) != a
    assert len(generate_corpus(25000, seed=0)) == 25000  # far more distinct sentences
    lengths = {len(e.source_tokens) for e in a}
    assert min(lengths) <= 3 and max(lengths) >= 10


def test_splits_never_share_a_sentence():
    splits = split_corpus(train=3000, valid=300, test=300, seed=0)
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [3000, 300, 300]
    sources = [{e.source for e in splits[k]} for k in ("train", "valid", "test")]
    assert not (sources[0] & sources[1]) and not (sources[0] & sources[2])
    assert not (sources[1] & sources[2])
    assert split_corpus(train=3000, valid=300, test=300, seed=0) == splits


def test_text_detokenizes_hyphenated_numbers():
    e = next(e for e in generate_examples(0) if "-" in e.source_tokens)
    assert "-" in e.source and " - " not in e.source
