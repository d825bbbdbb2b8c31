"""Behaviour-data layer: readers for every format, titles, histories, split, popularity, errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from m6gen.data import (
    DataError,
    Split,
    build_histories,
    default_data_dir,
    detect_format,
    item_popularity,
    leave_one_out,
    load_dataset,
    summary,
    user_frequency,
)
from m6gen.data.catalog import build_catalog, display_title, normalize_text, restore_articles

# ---------------------------------------------------------------- tiny fixtures, one per format
# Every format holds the same story: user "a" watched 30 (t=50), then 20 and 10 at the same
# time t=100 with 20 first in the file (file order must win over id order), then 40.

RECBOLE_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\tdirector:token\n"
    "10\tUsual Suspects, The\t1995\tCrime Thriller\tSinger\n"
    "20\tSabrina\t1954\tComedy Romance\tWilder\n"
    "30\tSabrina\t1995\tComedy Romance\tPollack\n"
    "40\tChasing Amy\t1997\tDrama\tSmith\n"
    "50\tChasing Amy\t1997\tDrama\tSmith\n"
    "60\tunkonwn\tunkonwn\tunknown\t\n"
)
RECBOLE_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "a\t30\t4\t50\n"
    "a\t20\t3\t100\n"
    "b\t10\t5\t10\n"
    "a\t10\t5\t100\n"
    "b\t20\t2\t20\n"
    "a\t40\t1\t200\n"
    "b\t60\t2\t30\n"
    "b\t40\t2\t40\n"
)
RECBOLE_USER = "user_id:token\tage:token\tgender:token\toccupation:token\na\t24\tM\ttechnician\nb\t53\tF\tother\n"


def write(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def recbole(tmp_path):
    d = tmp_path / "toy"
    d.mkdir()
    write(d / "toy.item", RECBOLE_ITEM)
    write(d / "toy.inter", RECBOLE_INTER)
    write(d / "toy.user", RECBOLE_USER)
    return d


def ml100k_item(item_id: str, title: str, date: str, genres: set[int]) -> str:
    flags = "|".join("1" if g in genres else "0" for g in range(19))
    return f"{item_id}|{title}|{date}||http://example.org|{flags}\n"


@pytest.fixture
def ml100k(tmp_path):
    d = tmp_path / "ml-100k"
    d.mkdir()
    items = (
        ml100k_item("10", "Misérables, Les (1995)", "01-Jan-1995", {8, 12})  # Drama, Musical; é in latin-1
        + ml100k_item("20", "Sabrina (1954)", "01-Jan-1954", {5})
        + ml100k_item("30", "Sabrina (1995)", "01-Jan-1995", {5})
        + ml100k_item("40", "Shawshank Redemption, The (1994)", "01-Jan-1994", {8})
        + ml100k_item("267", "unknown", "", {0})
    )
    write(d / "u.item", items, "latin-1")
    write(d / "u.data", "a\t30\t4\t50\na\t20\t3\t100\nb\t10\t5\t10\na\t10\t5\t100\na\t40\t1\t200\nb\t267\t1\t5\n")
    write(d / "u.user", "a|24|M|technician|85711\nb|53|F|other|94043\n")
    return d


@pytest.fixture
def ml1m(tmp_path):
    d = tmp_path / "ml-1m"
    d.mkdir()
    movies = (
        "10::Avventura, L' (1960)::Drama\n20::Sabrina (1954)::Comedy|Romance\n"
        "30::Sabrina (1995)::Comedy|Romance\n40::Cité des enfants perdus, La (1995)::Sci-Fi\n"
    )
    write(d / "movies.dat", movies, "latin-1")
    write(d / "ratings.dat", "a::30::4::50\na::20::3::100\na::10::5::100\na::40::1::200\n")
    write(d / "users.dat", "a::F::1::10::48067\n")
    return d


ITEMS_JSONL = [
    {"item_id": "10", "title": "Usual Suspects, The", "year": 1995, "genres": ["Crime"], "director": "Singer"},
    {"item_id": "20", "title": "Sabrina", "year": 1954},
    {"item_id": "30", "title": "Sabrina", "year": 1995, "description": "remake"},
    {"item_id": "40", "title": "Chasing Amy", "year": 1997},
]
INTER_ROWS = [("a", "30", 50), ("a", "20", 100), ("a", "10", 100), ("a", "40", 200)]


@pytest.fixture
def plain_jsonl(tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    write(d / "items.jsonl", "".join(json.dumps(r) + "\n" for r in ITEMS_JSONL))
    rows = [{"user_id": u, "item_id": i, "timestamp": t} for u, i, t in INTER_ROWS]
    write(d / "interactions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write(d / "users.jsonl", '{"user_id": "a", "age": 24}\n')
    return d


@pytest.fixture
def plain_csv(tmp_path):
    d = tmp_path / "plaincsv"
    d.mkdir()
    write(
        d / "items.csv",
        'item_id,title,year,genres,director\n10,"Usual Suspects, The",1995,Crime|Thriller,Singer\n'
        "20,Sabrina,1954,,\n30,Sabrina,1995,,\n40,Chasing Amy,1997,Drama,\n",
    )
    write(d / "interactions.csv", "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in INTER_ROWS))
    return d


def ids_of(ds, history: list[int]) -> list[str]:
    return [ds.catalog[i].item_id for i in history]


# ---------------------------------------------------------------- readers


def test_recbole_reader(recbole):
    ds = load_dataset(recbole)
    assert detect_format(recbole) == "recbole" and ds.name == "toy"
    assert ds.catalog.titles == [
        "The Usual Suspects (1995)",
        "Sabrina (1954)",
        "Sabrina (1995)",
        "Chasing Amy (1997)",
        "Chasing Amy (1997) [item 50]",
        "Unknown item 60",
    ]
    first = ds.catalog.by_id("10")
    assert (first.raw_title, first.year, first.genres, first.extra) == (
        "Usual Suspects, The",
        1995,
        ("Crime", "Thriller"),
        {"director": "Singer"},
    )
    assert ds.catalog[5].year is None  # RecBole writes 'unkonwn'
    assert ds.catalog.index_of("40") == 3
    assert list(ds.interactions) == ["a", "b"]  # order of first appearance
    assert [(ds.catalog[i].item_id, t) for i, t in ds.interactions["a"]] == [
        ("30", 50.0),
        ("20", 100.0),
        ("10", 100.0),
        ("40", 200.0),
    ]
    assert ds.profiles["b"] == {"age": "53", "gender": "F", "occupation": "other"}
    assert ds.n_interactions == 8


def test_ml100k_reader(ml100k):
    ds = load_dataset(ml100k)
    assert detect_format(ml100k) == "ml-100k"
    assert ds.catalog.titles == [
        "Les Misérables (1995)",
        "Sabrina (1954)",
        "Sabrina (1995)",
        "The Shawshank Redemption (1994)",
        "Unknown item 267",
    ]
    assert ds.catalog[0].genres == ("Drama", "Musical") and ds.catalog[0].year == 1995
    assert ids_of(ds, build_histories(ds)["a"]) == ["30", "20", "10", "40"]
    assert ds.profiles["a"] == {"age": "24", "gender": "M", "occupation": "technician", "zip_code": "85711"}


def test_ml1m_reader(ml1m):
    ds = load_dataset(ml1m)
    assert detect_format(ml1m) == "ml-1m"
    assert ds.catalog.titles == [
        "L'Avventura (1960)",
        "Sabrina (1954)",
        "Sabrina (1995)",
        "La Cité des enfants perdus (1995)",
    ]
    assert ds.catalog[1].genres == ("Comedy", "Romance")
    assert ids_of(ds, build_histories(ds)["a"]) == ["30", "20", "10", "40"]
    assert ds.profiles["a"] == {"gender": "F", "age": "Under 18", "occupation": "K-12 student", "zip_code": "48067"}


@pytest.mark.parametrize("fixture", ["plain_jsonl", "plain_csv"])
def test_plain_readers(fixture, request):
    folder = request.getfixturevalue(fixture)
    ds = load_dataset(folder)
    assert detect_format(folder) == "plain"
    assert ds.catalog.titles == ["The Usual Suspects (1995)", "Sabrina (1954)", "Sabrina (1995)", "Chasing Amy (1997)"]
    assert ds.catalog[0].extra == {"director": "Singer"}
    assert ids_of(ds, build_histories(ds)["a"]) == ["30", "20", "10", "40"]


def test_plain_jsonl_metadata(plain_jsonl):
    ds = load_dataset(plain_jsonl)
    assert ds.catalog[2].description == "remake" and ds.catalog[0].genres == ("Crime",)
    assert ds.profiles == {"a": {"age": "24"}}


def test_plain_without_timestamp_uses_file_order(tmp_path):
    write(tmp_path / "items.csv", "item_id,title\n1,B\n2,A\n3,C\n")
    write(tmp_path / "interactions.csv", "user_id,item_id\nu,3\nu,1\nu,2\n")
    ds = load_dataset(tmp_path)
    assert ids_of(ds, build_histories(ds)["u"]) == ["3", "1", "2"]


def test_title_field_override(recbole):
    ds = load_dataset(recbole, title_field="director")
    assert ds.catalog.titles[:2] == ["Singer (1995)", "Wilder (1954)"]


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("M6GEN_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.setenv("M6GEN_DATA", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="M6GEN_DATA"):
        default_data_dir()
    monkeypatch.delenv("M6GEN_DATA")
    assert default_data_dir(must_exist=False).parts[-3:] == ("data", "cache", "ml-100k")


# ---------------------------------------------------------------- titles


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Usual Suspects, The", "The Usual Suspects"),
        ("Shawshank Redemption, The (1994)", "The Shawshank Redemption (1994)"),
        ("Fish Called Wanda, A", "A Fish Called Wanda"),
        ("American in Paris, An", "An American in Paris"),
        ("Avventura, L'", "L'Avventura"),
        ("Postino, Il", "Il Postino"),
        ("Boot, Das", "Das Boot"),
        ("Contempt (Mépris, Le)", "Contempt (Le Mépris)"),
        ("Horseman on the Roof, The (Hussard sur le toit, Le)", "The Horseman on the Roof (Le Hussard sur le toit)"),
        ("Good, The Bad and The Ugly, The", "The Good, The Bad and The Ugly"),
        ("Sex, Lies, and Videotape", "Sex, Lies, and Videotape"),
        ("I, Worst of All (Yo, la peor de todas)", "I, Worst of All (Yo, la peor de todas)"),
    ],
)
def test_restore_articles(raw, expected):
    assert restore_articles(raw) == expected


def test_display_title_year():
    assert display_title("Toy Story", 1995) == ("Toy Story (1995)", 1995)
    assert display_title("Toy Story (1995)", 1996) == ("Toy Story (1995)", 1995)  # the title's year wins
    assert display_title("Toy Story", None) == ("Toy Story", None)
    assert display_title("Misérables, Les (1995)") == ("Les Misérables (1995)", 1995)


def test_nfc_and_whitespace():
    decomposed = "Mise\u0301rables,\t Les  "
    assert normalize_text(decomposed) == "Misérables, Les"
    cat = build_catalog(["1", "2"], [decomposed, "Misérables, Les"], [1995, 1995])
    # both normalize to the same text, so the second is disambiguated rather than looking different
    assert cat.titles == ["Les Misérables (1995)", "Les Misérables (1995) [item 2]"]


def test_duplicates_disambiguated_stably():
    cat = build_catalog(["7", "3", "9", "5"], ["X", "X", "X (2000)", "unknown"], [2000, 2000, None, None])
    assert cat.titles == ["X (2000)", "X (2000) [item 3]", "X (2000) [item 9]", "Unknown item 5"]
    assert len(set(cat.titles)) == 4


# ---------------------------------------------------------------- histories and split


def test_ties_broken_by_file_order_not_item_id(recbole):
    ds = load_dataset(recbole)
    # 20 and 10 share t=100; 20 comes first in the file. Sorting by id would give 10 before 20.
    assert ids_of(ds, build_histories(ds)["a"]) == ["30", "20", "10", "40"]
    split = leave_one_out(build_histories(ds))
    assert ds.catalog[split.valid["a"]].item_id == "10" and ds.catalog[split.test["a"]].item_id == "40"


def _events_dataset(tmp_path, rows):
    write(tmp_path / "items.csv", "item_id,title\n" + "".join(f"{i},T{i}\n" for i in range(10)))
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    return load_dataset(tmp_path)


def test_dedupe_modes(tmp_path):
    ds = _events_dataset(tmp_path, [("u", 1, 1), ("u", 2, 2), ("u", 1, 3), ("u", 3, 4), ("u", 2, 5)])
    assert build_histories(ds, dedupe="keep")["u"] == [1, 2, 1, 3, 2]
    assert build_histories(ds, dedupe="first")["u"] == [1, 2, 3]
    assert build_histories(ds, dedupe="last")["u"] == [1, 3, 2]
    assert build_histories(ds)["u"] == [1, 2, 3]  # "first" is the default
    with pytest.raises(ValueError, match="dedupe"):
        build_histories(ds, dedupe="none")


def test_min_history(tmp_path):
    ds = _events_dataset(tmp_path, [("u", 1, 1), ("u", 2, 2), ("u", 3, 3), ("v", 1, 1), ("v", 1, 2), ("v", 2, 3)])
    assert set(build_histories(ds)) == {"u"}  # v has 2 distinct items after dedupe
    assert set(build_histories(ds, dedupe="keep")) == {"u", "v"}
    assert set(build_histories(ds, min_history=4)) == set()


def test_no_leakage_in_split(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", int(rng.integers(10)), int(rng.integers(5))) for u in range(30) for _ in range(12)]  # many ties
    split = leave_one_out(build_histories(_events_dataset(tmp_path, rows)))
    assert split.users
    for u in split.users:
        assert split.valid[u] not in split.train[u] and split.test[u] not in split.train[u]
        assert split.test[u] not in split.test_history(u) and split.valid[u] not in split.valid_history(u)
        assert split.test_history(u) == split.train[u] + [split.valid[u]]


def test_an_unknown_user_is_named_with_what_ids_look_like():
    """Once a bare KeyError: '99999' (and 196, an int, looked like a real id)."""
    split = leave_one_out({"196": [1, 2, 3], "22": [4, 5, 6]})
    assert split.test_history("196") == [1, 2] and split.valid_history("22") == [4]
    for bad in ("99999", 196):
        with pytest.raises(KeyError, match=rf"unknown user id {bad!r} \(ids are strings like '196', '22'\)"):
            split.test_history(bad)


def test_leave_one_out_needs_three():
    with pytest.raises(ValueError, match="needs >= 3"):
        leave_one_out({"u": [1, 2]})


def test_popularity_from_train_only():
    split = Split(train={"a": [0, 1, 1], "b": [1, 2]}, valid={"a": 3, "b": 3}, test={"a": 4, "b": 0})
    assert item_popularity(split, 5).tolist() == [1, 3, 1, 0, 0]  # valid/test items 3, 4 and b's 0 not counted
    assert user_frequency(split, 5).tolist() == [1, 2, 1, 0, 0]
    with pytest.raises(ValueError):
        item_popularity(split, 2)


def test_summary(recbole):
    ds = load_dataset(recbole)
    info = summary(ds, leave_one_out(build_histories(ds)))
    assert info == {
        "name": "toy",
        "users": 2,
        "items": 6,
        "interactions": 8,
        "skipped_interactions": 0,
        "split_users": 2,
        "train_interactions": 4,
        "valid": 2,
        "test": 2,
        "mean_history_length": 4.0,
    }


# ---------------------------------------------------------------- errors: one line, file and line named


def _replace(path, old: str, new: str):
    write(path, path.read_text().replace(old, new))


ERROR_CASES = {
    # name: (fixture, edit(folder), file expected in message, line, text expected in message)
    "missing file": ("recbole", lambda d: (d / "toy.item").unlink(), "toy.item", None, "missing file"),
    "missing column": (
        "recbole",
        lambda d: _replace(d / "toy.inter", "user_id:token", "uid:token"),
        "toy.inter",
        1,
        "user_id",
    ),
    "bad header type": (
        "recbole",
        lambda d: _replace(d / "toy.inter", "rating:float", "rating:number"),
        "toy.inter",
        1,
        "name:type",
    ),
    "field count": (
        "recbole",
        lambda d: _replace(d / "toy.inter", "b\t20\t2\t20", "b\t20\t2"),
        "toy.inter",
        6,
        "expected 4 fields",
    ),
    "timestamp": (
        "recbole",
        lambda d: _replace(d / "toy.inter", "a\t40\t1\t200", "a\t40\t1\tsoon"),
        "toy.inter",
        7,
        "timestamp",
    ),
    "unknown item": ("recbole", lambda d: _replace(d / "toy.inter", "b\t40\t2", "b\t99\t2"), "toy.inter", 9, "'99'"),
    "duplicate item": (
        "recbole",
        lambda d: _replace(d / "toy.item", "20\tSabrina\t1954", "10\tSabrina\t1954"),
        "toy.item",
        3,
        "duplicate item id",
    ),
    "empty catalog": (
        "recbole",
        lambda d: write(d / "toy.item", RECBOLE_ITEM.split("\n")[0] + "\n"),
        "toy.item",
        None,
        "empty catalog",
    ),
    "no interactions": (  # once read as 0 users and 0 interactions, exit 0
        "plain_csv",
        lambda d: write(d / "interactions.csv", ""),
        "interactions.csv",
        None,
        "no interactions",
    ),
    "only a header of interactions": (
        "recbole",
        lambda d: write(d / "toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"),
        "toy.inter",
        None,
        "no interactions",
    ),
    "bad utf-8": (
        "recbole",
        lambda d: write(d / "toy.item", RECBOLE_ITEM.replace("Sabrina\t1995", "Sabr\xefna\t1995"), "latin-1"),
        "toy.item",
        4,
        "byte offset",
    ),
    "ml-100k fields": (
        "ml100k",
        lambda d: write(d / "u.item", "1|Toy Story (1995)|01-Jan-1995\n", "latin-1"),
        "u.item",
        1,
        "expected 24 fields",
    ),
    "ml-1m timestamp": (
        "ml1m",
        lambda d: write(d / "ratings.dat", "a::30::4::50\na::20::3::x\n"),
        "ratings.dat",
        2,
        "timestamp",
    ),
    "ml-1m unknown": (
        "ml1m",
        lambda d: write(d / "ratings.dat", "a::30::4::50\na::77::3::60\n"),
        "ratings.dat",
        2,
        "'77'",
    ),
    "jsonl syntax": (
        "plain_jsonl",
        lambda d: write(
            d / "interactions.jsonl", '{"user_id": "a", "item_id": "10", "timestamp": 1}\n{"user_id": "a",\n'
        ),
        "interactions.jsonl",
        2,
        "invalid JSON",
    ),
    "jsonl timestamp missing on the first line only": (  # once: every other line's timestamp dropped, exit 0
        "plain_jsonl",
        lambda d: write(
            d / "interactions.jsonl",
            '{"user_id": "a", "item_id": "10"}\n{"user_id": "a", "item_id": "20", "timestamp": 5}\n',
        ),
        "interactions.jsonl",
        1,
        "timestamp",
    ),
    "csv titles in another column": (
        "plain_csv",
        lambda d: write(d / "items.csv", "item_id,name\n10,Usual Suspects\n"),
        "items.csv",
        1,
        "title: missing required column (columns: item_id, name); --title-field NAME",
    ),
    "csv column named twice": (  # once: the titles silently read from the second "title" column
        "plain_csv",
        lambda d: write(d / "items.csv", "item_id,title,title\n10,Usual Suspects,1995\n"),
        "items.csv",
        1,
        "title: column named twice",
    ),
    "recbole column named twice": (
        "recbole",
        lambda d: _replace(d / "toy.inter", "rating:float", "item_id:token"),
        "toy.inter",
        1,
        "item_id: column named twice",
    ),
    "jsonl missing id": (
        "plain_jsonl",
        lambda d: write(d / "items.jsonl", '{"item_id": "1", "title": "X"}\n{"title": "Y"}\n'),
        "items.jsonl",
        2,
        "item_id",
    ),
    "csv column": (
        "plain_csv",
        lambda d: write(d / "interactions.csv", "user,item_id,timestamp\na,10,1\n"),
        "interactions.csv",
        1,
        "user_id",
    ),
    "csv timestamp": (
        "plain_csv",
        lambda d: write(d / "interactions.csv", "user_id,item_id,timestamp\na,10,1\na,20,yesterday\n"),
        "interactions.csv",
        3,
        "timestamp",
    ),
    "csv year": (
        "plain_csv",
        lambda d: write(d / "items.csv", "item_id,title,year\n1,X,soon\n"),
        "items.csv",
        2,
        "year",
    ),
    "recbole duplicate user": (
        "recbole",
        lambda d: write(d / "toy.user", RECBOLE_USER + "a\t30\tF\twriter\n"),
        "toy.user",
        4,
        "duplicate user id 'a'",
    ),
    "ml-100k duplicate user": (
        "ml100k",
        lambda d: write(d / "u.user", "a|24|M|x|1\nb|5|F|y|2\na|9|F|z|3\n"),
        "u.user",
        3,
        "duplicate user id 'a'",
    ),
    "jsonl duplicate user": (
        "plain_jsonl",
        lambda d: write(d / "users.jsonl", '{"user_id": "a", "age": 24}\n{"user_id": "a", "age": 30}\n'),
        "users.jsonl",
        2,
        "duplicate user id 'a'",
    ),
    "csv stray CR": (
        "plain_csv",
        lambda d: write(d / "items.csv", "item_id,title\n10,Heat\n20,Ali\ren\n"),
        "items.csv",
        3,
        "line break inside an unquoted field",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_gives_one_line_data_error(case, request):
    fixture, edit, filename, line, text = ERROR_CASES[case]
    folder = request.getfixturevalue(fixture)
    edit(folder)
    with pytest.raises(DataError) as info:
        load_dataset(folder)
    message = str(info.value)
    assert "\n" not in message and filename in message and text in message, message
    if line is not None:
        assert f"{filename}:{line}:" in message, message
    assert isinstance(info.value, ValueError)


def test_unknown_items_can_be_skipped(recbole):
    _replace(recbole / "toy.inter", "b\t40\t2", "b\t99\t2")
    with pytest.warns(UserWarning, match="skipped 1 interactions"):
        ds = load_dataset(recbole, on_unknown_item="skip")
    assert ds.skipped == 1 and ds.n_interactions == 7
    assert summary(ds, leave_one_out(build_histories(ds)))["skipped_interactions"] == 1


def test_not_a_data_folder(tmp_path):
    with pytest.raises(DataError, match="no known data files"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(tmp_path / "nope")


# ---------------------------------------------------------------- the real default data


@pytest.mark.smoke
def test_default_movielens_100k():
    folder = default_data_dir(must_exist=False)
    if not (folder / "ml-100k.inter").is_file():
        pytest.skip(f"no RecBole ml-100k at {folder}: run `bash scripts/setup.sh`")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset(folder)
    assert (len(ds.interactions), len(ds.catalog), ds.n_interactions) == (943, 1682, 100000)
    assert len(set(ds.catalog.titles)) == 1682
    assert ds.catalog.by_id("267").title == "Unknown item 267"
    assert ds.catalog.by_id("64").title == "The Shawshank Redemption (1994)"
    split = leave_one_out(build_histories(ds))
    assert len(split.test) == 943


def test_every_user_and_item_has_every_field_so_templates_can_test_them(tmp_path):
    """An empty cell, a user missing from the users file, an item without a column: "" (not an absent key)."""
    (tmp_path / "items.csv").write_text("item_id,title,director\n1,A,Ann\n2,B,\n3,C,Cy\n")
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,timestamp\n"
        + "".join(f"{u},{i},{t}\n" for u in ("u1", "u2", "u3") for t, i in enumerate((1, 2, 3)))
    )
    (tmp_path / "users.csv").write_text("user_id,age,country\nu1,30,JP\nu2,,FR\n")
    ds = load_dataset(tmp_path)
    assert ds.profiles == {
        "u1": {"age": "30", "country": "JP"},
        "u2": {"age": "", "country": "FR"},
        "u3": {"age": "", "country": ""},
    }
    assert [it.extra for it in ds.catalog] == [{"director": "Ann"}, {"director": ""}, {"director": "Cy"}]


def test_catalog_lookups_say_what_ids_and_indices_are(plain_csv):
    """A data id given as a number, or where a position belongs, once gave a bare KeyError or a list TypeError."""
    from m6gen.data import load_dataset

    catalog = load_dataset(plain_csv).catalog
    with pytest.raises(KeyError, match=r"unknown item id 10 \(ids are strings from the data files, like '10', '20'"):
        catalog.index_of(10)
    with pytest.raises(TypeError, match=r"catalog\['10'\]: index by position \(0..3\); for a data id use index_of"):
        catalog["10"]
    assert catalog[catalog.index_of("10")].item_id == "10"
