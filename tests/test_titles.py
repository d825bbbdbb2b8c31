"""Title matching with known answers on a small catalog: exact, prefix, fuzzy, ambiguous, no match."""

import pytest

from m6gen.data.catalog import build_catalog, normalize_text
from m6gen.data.titles import TitleMatcher

# (id, title as read, year, genres); titles come from tiny_lm.CORPUS so test_chat's tiny tokenizer knows them
ITEMS = [
    ("1", "Toy Story", 1995, ["Animation", "Comedy"]),
    ("2", "Toy Soldiers", 1991, ["Action"]),
    ("3", "Alien", 1979, ["Horror", "Sci-Fi"]),
    ("4", "Aliens", 1986, ["Action", "Sci-Fi"]),
    ("5", "Alien 3", 1992, ["Sci-Fi"]),
    ("6", "Godfather, The", 1972, ["Crime", "Drama"]),
    ("7", "Godfather: Part II, The", 1974, ["Crime", "Drama"]),
    ("8", "Heat", 1995, ["Crime", "Thriller"]),
    ("9", "Casino", 1995, ["Crime"]),
    ("10", "Amélie", 2001, ["Comedy", "Romance"]),
    ("11", "千と千尋の神隠し", 2001, ["Animation"]),
    ("12", "Crouching Tiger, Hidden Dragon", 2000, ["Action"]),
    ("13", "🎬 Emoji Movie", 2017, ["Animation"]),
]


@pytest.fixture(scope="module")
def catalog():
    ids, titles, years, genres = zip(*ITEMS)
    return build_catalog(list(ids), list(titles), list(years), [list(g) for g in genres])


@pytest.mark.parametrize(
    ("typed", "how", "first"),
    [
        ("toy st", "prefix", "Toy Story (1995)"),
        ("Toy Story (1995)", "exact", "Toy Story (1995)"),
        ("  TOY   story (1995) ", "exact", "Toy Story (1995)"),
        ("alien", "exact", "Alien (1979)"),  # equals one title without its year
        ("ali", "prefix", "Alien (1979)"),
        ("toy storry", "fuzzy", "Toy Story (1995)"),
        ("amelie", "exact", "Amélie (2001)"),  # equal but for accents and year (was fuzzy: serve refused it)
        ("AMELIE (2001)", "exact", "Amélie (2001)"),
        ("ame", "prefix", "Amélie (2001)"),  # a prefix typed without accents
        ("amelei", "fuzzy", "Amélie (2001)"),
        ("hidden dragon", "fuzzy", "Crouching Tiger, Hidden Dragon (2000)"),
        ("godfather", "exact", "The Godfather (1972)"),  # "the" + typed text is one title
        ("godf", "prefix", "The Godfather (1972)"),
        ("godfather: part", "prefix", "The Godfather: Part II (1974)"),
        ("the godfathr", "fuzzy", "The Godfather (1972)"),
        ("千と千尋", "prefix", "千と千尋の神隠し (2001)"),
        ("toy\x00 st\x1b", "prefix", "Toy Story (1995)"),  # control characters are dropped
    ],
)
def test_matcher_known_answers(catalog, typed, how, first):
    got_how, items = TitleMatcher(catalog.titles).match(typed)
    assert got_how == how and catalog[items[0]].title == first


@pytest.mark.parametrize(
    ("typed", "n"),
    [
        ("toy st", 1),
        ("toy storry", 1),
        ("amelie", 1),
        ("ali", 3),
        ("toy", 2),
        ("godf", 2),
        ("the godfathr", 1),
        ("bar", 0),
    ],
)
def test_matcher_ambiguity(catalog, typed, n):
    assert len(TitleMatcher(catalog.titles).match(typed)[1]) == n


@pytest.mark.parametrize("typed", ["", "   ", "\x00\x01", "zzqx", "\ud800"])
def test_matcher_no_match(catalog, typed):
    assert TitleMatcher(catalog.titles).match(typed) == ("none", [])


def test_normalize_text():
    assert normalize_text(" a\tb\x00c \ud800 ") == "a bc"
