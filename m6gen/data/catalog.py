"""The item catalog: item id <-> unique display title, plus optional metadata for prompts and reranking.

Display titles are what the model generates, so they must be unique and readable.
``build_catalog`` makes them from titles as read:

1. normalize text: Unicode NFC, whitespace runs collapsed to one space, stripped;
2. restore articles that MovieLens/RecBole moved to the end ("Usual Suspects, The" ->
   "The Usual Suspects"), in the main title and in trailing parenthesized alternative
   titles ("Contempt (Mépris, Le)" -> "Contempt (Le Mépris)");
3. keep the year: a title ending in "(YYYY)" keeps it; otherwise the year field, if any,
   is appended as " (YYYY)";
4. placeholders ("unknown", "unkonwn", empty) become "Unknown item <id>";
5. titles still repeated: the first in catalog order keeps its title, each later one gets
   " [item <id>]" (stable: depends only on the ids and their order).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

# Articles MovieLens writes after a comma. Only capitalized forms: "…, die" is not an article.
ARTICLES = (
    "The",
    "A",
    "An",
    "Les",
    "La",
    "Le",
    "L'",
    "L’",
    "Il",
    "Das",
    "Der",
    "Die",
    "El",
    "Los",
    "Las",
    "Lo",
    "Gli",
    "Un",
    "Une",
    "Una",
    "Ein",
    "Eine",
    "Det",
    "Den",
    "Het",
    "O",
)
PLACEHOLDER_TITLES = frozenset({"", "unknown", "unkonwn"})  # "unkonwn" is RecBole's spelling for ml-100k item 267

_TRAILING_ARTICLE = re.compile(r"^(.*\S), (" + "|".join(re.escape(a) for a in ARTICLES) + r")$")
_TRAILING_YEAR = re.compile(r"\s*\((\d{4})\)$")


@dataclass(frozen=True)
class Item:
    """One catalog item.

    ``index`` is the dense internal index (0..n-1) used by every array in m6gen;
    ``item_id`` is the id as written in the user's data files.
    """

    index: int
    item_id: str
    title: str  # unique display title, what the model generates
    raw_title: str = ""  # the title as read (normalized), before disambiguation
    year: int | None = None
    genres: tuple[str, ...] = ()
    description: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


class Catalog:
    """An ordered collection of items with unique display titles."""

    def __init__(self, items: list[Item]):
        if not items:
            raise ValueError("empty catalog: no items")
        self.items = items
        self._by_id = {it.item_id: it for it in items}
        self._by_title = {it.title: it for it in items}
        if len(self._by_id) != len(items):
            raise ValueError("duplicate item ids in catalog")
        if len(self._by_title) != len(items):
            raise ValueError("display titles are not unique")
        if any(it.index != i for i, it in enumerate(items)):
            raise ValueError("item.index must equal its position in the catalog")

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, index: int) -> Item:
        if isinstance(index, str):  # a data id where an index belongs: say which is which
            raise TypeError(f"catalog[{index!r}]: index by position (0..{len(self) - 1}); for a data id use index_of")
        return self.items[index]

    @property
    def titles(self) -> list[str]:
        return [it.title for it in self.items]

    @property
    def ids(self) -> list[str]:
        return [it.item_id for it in self.items]

    def by_id(self, item_id: str) -> Item:
        return self._by_id[item_id]

    def has_id(self, item_id: str) -> bool:
        return item_id in self._by_id

    def index_of(self, item_id: str) -> int:
        """Dense index of ``item_id``; KeyError naming it (and what ids look like) if absent."""
        try:
            return self._by_id[item_id].index
        except KeyError:
            like = ", ".join(repr(i) for i in list(self._by_id)[:3])
            raise KeyError(f"unknown item id {item_id!r} (ids are strings from the data files, like {like})") from None

    def by_title(self, title: str) -> Item | None:
        return self._by_title.get(title)


def normalize_text(text: str) -> str:
    """The one text normalization (titles read from files, and text a person types): control characters
    (but whitespace) and lone surrogates dropped, NFC, whitespace runs collapsed to one space, stripped."""
    dropped = ("Cc", "Cs")  # control characters, lone surrogates
    kept = "".join(
        " " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch) not in dropped
    )
    return " ".join(unicodedata.normalize("NFC", kept).split())


def _restore_one(text: str) -> str:
    m = _TRAILING_ARTICLE.match(text)
    if m is None:
        return text
    body, article = m.groups()
    # "L'Avventura": no space after an elided article
    return article + body if article.endswith(("'", "’")) else f"{article} {body}"


def _split_trailing_groups(title: str) -> tuple[str, list[str]]:
    """Split "Main (Alt 1) (Alt 2)" into ("Main", ["Alt 1", "Alt 2"]); nested parentheses stay whole."""
    groups: list[str] = []
    head = title
    while head.endswith(")"):
        depth, start = 0, -1
        for i in range(len(head) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(head[i], 0)
            if depth == 0:
                start = i
                break
        if start <= 0 or not head[:start].strip():  # unbalanced, or the title is only a parenthesis
            break
        groups.insert(0, head[start + 1 : -1])
        head = head[:start].rstrip()
    return head, groups


def restore_articles(title: str) -> str:
    """Move trailing articles to the front: "Shawshank Redemption, The (1994)" -> "The Shawshank Redemption (1994)".

    Applies to the main title and to each trailing parenthesized alternative title; a title
    with nothing to restore is returned unchanged (spacing included).
    """
    head, groups = _split_trailing_groups(title)
    parts = [head, *groups]
    restored = [_restore_one(p) for p in parts]
    if restored == parts:
        return title
    return " ".join([restored[0], *(f"({g})" for g in restored[1:])])


def display_title(raw_title: str, year: int | None = None) -> tuple[str, int | None]:
    """Display title and year for one item (steps 1-3 of the module docstring).

    Returns
    -------
    (title, year): the year in the title wins over the ``year`` argument when both exist.
    """
    text = normalize_text(raw_title)
    m = _TRAILING_YEAR.search(text)
    if m is not None:
        text, year = text[: m.start()], int(m.group(1))
    text = restore_articles(text)
    return (f"{text} ({year})" if year is not None else text), year


def unique_titles(titles: Sequence[str], ids: Sequence[str]) -> list[str]:
    """Make titles unique: the first of each repeated title keeps it, later ones get " [item <id>]"."""
    counts = Counter(titles)
    taken = set(counts)
    seen: set[str] = set()
    out = []
    for title, item_id in zip(titles, ids, strict=True):
        if counts[title] > 1 and title in seen:
            new, n = f"{title} [item {item_id}]", 1
            while new in taken:  # only if a real title happens to look like our suffix
                n += 1
                new = f"{title} [item {item_id}] #{n}"
            title = new
        seen.add(title)
        taken.add(title)
        out.append(title)
    return out


def build_catalog(
    ids: Sequence[str],
    titles: Sequence[str],
    years: Sequence[int | None] | None = None,
    genres: Sequence[Sequence[str]] | None = None,
    descriptions: Sequence[str | None] | None = None,
    extras: Sequence[dict[str, str]] | None = None,
) -> Catalog:
    """Build a catalog with unique display titles from parallel per-item lists, in catalog order.

    Args:
        ids: item ids as written in the data files (must be unique).
        titles: titles as read; normalized and disambiguated as the module docstring says.
        years: release years (None: unknown), appended when the title has none.
        genres, descriptions, extras: optional metadata kept on each ``Item``.
    """
    n = len(ids)
    for name, seq in (
        ("titles", titles),
        ("years", years),
        ("genres", genres),
        ("descriptions", descriptions),
        ("extras", extras),
    ):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries for {n} ids")
    raws = [normalize_text(t) for t in titles]
    shown, years_out = [], []
    for i, raw in enumerate(raws):
        if raw.lower() in PLACEHOLDER_TITLES:
            # Interactions may refer to a placeholder (ml-100k item 267), so it stays, with a title of its own.
            shown.append(f"Unknown item {ids[i]}")
            years_out.append(years[i] if years is not None else None)
        else:
            title, year = display_title(raw, years[i] if years is not None else None)
            shown.append(title)
            years_out.append(year)
    shown = unique_titles(shown, ids)
    items = [
        Item(
            index=i,
            item_id=ids[i],
            title=shown[i],
            raw_title=raws[i],
            year=years_out[i],
            genres=tuple(genres[i]) if genres is not None else (),
            description=descriptions[i] if descriptions is not None else None,
            extra=dict(extras[i]) if extras is not None else {},
        )
        for i in range(n)
    ]
    return Catalog(items)
