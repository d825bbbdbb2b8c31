"""Model-free title matching: what a person types -> catalog items (exact, prefix, fuzzy)."""

from __future__ import annotations

import re
import unicodedata

from m6gen.data.catalog import normalize_text

MAX_CHOICES = 9  # a numbered choice shows at most this many titles
ARTICLES = ("the", "a", "an")  # tried before a typed prefix
_WORD = re.compile(r"\w+")
_YEAR = re.compile(r"\s*\(\d{4}\)$")


def fold(text: str) -> str:
    """Case and accents folded away, for comparing: "Amélie" -> "amelie"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


class TitleMatcher:
    """Find catalog titles from what a person types: exact, then prefix, then fuzzy (typos, word order)."""

    def __init__(self, titles: list[str]):
        import marisa_trie

        from m6gen.decoding.trie import TitleIndex

        self.index = TitleIndex(titles)
        self.titles = list(titles)
        self._folded = [fold(t) for t in self.titles]
        self._bare = [_YEAR.sub("", f) for f in self._folded]  # without "(1995)"
        self._by_bare: dict[str, list[int]] = {}
        self._by_folded: dict[str, list[int]] = {}
        self._by_word: dict[str, list[int]] = {}
        for i, (bare, folded) in enumerate(zip(self._bare, self._folded)):
            self._by_bare.setdefault(bare, []).append(i)
            self._by_folded.setdefault(folded, []).append(i)
            for w in set(_WORD.findall(folded)):
                self._by_word.setdefault(w, []).append(i)
        self._words = marisa_trie.Trie(self._by_word)  # for partly typed words ("godf")
        self._folded_titles = marisa_trie.Trie(self._by_folded)  # prefixes typed without accents ("les mis")

    def match(self, text: str, limit: int = MAX_CHOICES) -> tuple[str, list[int]]:
        """``(how, items)``: how is "exact", "prefix", "fuzzy" or "none"; one item means unambiguous.

        Prefixes are tried as typed and after "the", "a", "an", with and without case and accents. Text
        that equals one title but for case, accents or its year ("les miserables" -> "Les Misérables
        (1995)", "alien" -> "Alien (1979)") counts as exact.
        Fuzzy results are a single item only when the best is clearly better than the rest.
        """
        query = normalize_text(text)
        if not query:
            return "none", []
        exact = self.index.lookup(query)
        if exact >= 0:
            return "exact", [exact]
        folded = fold(query)
        heads = [query, *(f"{a} {query}" for a in ARTICLES)]  # "godfather" finds "The Godfather"
        wanted = {fold(h) for h in heads}
        # one title equal but for case, accents or its year: "les miserables" is "Les Misérables (1995)"
        same = sorted({i for w in wanted for i in (*self._by_folded.get(w, ()), *self._by_bare.get(w, ()))})
        if len(same) == 1:
            return "exact", same
        found = {i for h in heads for i in self.index.prefix(h, limit=50)}
        for w in wanted:
            found.update(i for key in self._folded_titles.keys(w)[:50] for i in self._by_folded[key])
        hits = sorted(found, key=lambda i: (len(self.titles[i]), i))
        if hits:
            return "prefix", hits[: limit + 1]
        scored = self.fuzzy(folded)
        if not scored:
            return "none", []
        best = scored[0][0]
        if best >= 0.75 and (len(scored) == 1 or best - scored[1][0] >= 0.15):
            return "fuzzy", [scored[0][1]]
        return "fuzzy", [i for score, i in scored[:limit] if score >= best - 0.2]

    def fuzzy(self, folded: str, floor: float = 0.4) -> list[tuple[float, int]]:
        """``(score, item)`` best first, score = max(ratio, (ratio + word overlap) / 2) >= ``floor``.

        ``ratio`` is difflib's similarity to the title without its year; word overlap is the share of
        typed words found in the title (a word of 3+ letters may be the start of a title word).
        """
        import difflib

        words = _WORD.findall(folded)
        overlap: dict[int, int] = {}
        for w in set(words):
            found = set(self._by_word.get(w, ()))
            if len(w) >= 3:
                for full in self._words.keys(w)[:200]:
                    found.update(self._by_word[full])
            for i in found:
                overlap[i] = overlap.get(i, 0) + 1
        # Most-overlapping candidates, plus close spellings (scanned over the whole catalog when small).
        cands = set(sorted(overlap, key=lambda i: -overlap[i])[:300])
        pool = self._bare if len(self._bare) <= 100_000 else [self._bare[i] for i in cands]
        for bare in difflib.get_close_matches(folded, pool, n=20, cutoff=0.6):
            cands.update(self._by_bare[bare])
        out = []
        for i in cands:
            ratio = difflib.SequenceMatcher(None, folded, self._bare[i]).ratio()
            share = overlap.get(i, 0) / max(len(set(words)), 1)
            score = max(ratio, (ratio + share) / 2)
            if score >= floor:
                out.append((score, i))
        return sorted(out, key=lambda s: (-s[0], len(self.titles[s[1]]), s[1]))
