"""Search terms: what the full-text index stores for a text, and what a query looks for.

Both databases (api/search.py) index the terms this module derives from a text when a
segment or translation is stored: NFKC-normalised, case-folded words; and, for
Chinese and Japanese, which put no spaces between words, overlapping character bigrams.
Trigram indexes were the first idea and do not work for Japanese: most Japanese words are
two characters (予約, 東京, 天気), which no trigram index can find, and PostgreSQL's pg_trgm
sees no letters in CJK text at all under some locales. A bigram index finds words of any
length: 東京駅 is the phrase "東京 京駅"; a one-character word is a prefix.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# A term longer than this is cut; no real word is, and PostgreSQL limits lexemes to 2 KB.
MAX_TERM_CHARS = 64
MAX_QUERY_CHARS = 200
MAX_QUERY_PHRASES = 16


# Scripts written without spaces between words.
_CJK_RANGES = (
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3040, 0x30FF),  # hiragana, katakana
    (0x31F0, 0x31FF),  # katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x323AF),  # CJK extensions B-H
)
_CJK_SPLIT = re.compile(
    "([" + "".join(f"{chr(low)}-{chr(high)}" for low, high in _CJK_RANGES) + "]+)"
)
# Runs of letters and digits (Unicode categories L and N), nothing else: the only
# characters SQLite's unicode61 tokenizer and PostgreSQL's parser both keep inside a word.
_WORD = re.compile(r"[^\W_]+")


def _runs(text: str) -> list[tuple[str, bool]]:
    """Split text into runs of letters and digits: (run, is_cjk). Regexes: this runs on
    every stored text, a million of them in the search bench."""
    runs: list[tuple[str, bool]] = []
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).casefold()):
        if word.isascii():
            runs.append((word, False))
            continue
        # re.split with a group alternates: outside CJK, CJK, outside, ...
        for i, part in enumerate(_CJK_SPLIT.split(word)):
            if part:
                runs.append((part, i % 2 == 1))
    return runs


def _bigrams(run: str) -> list[str]:
    return [run[i : i + 2] for i in range(len(run) - 1)]


def search_terms(text: str) -> str:
    """What the index stores for a text: its terms, space-separated, with a space each end.

    A CJK run is its bigrams followed by its last character alone, so that a one-character
    query (a prefix) finds every occurrence, the last one of a run included. The spaces at
    both ends let `_scan_match` find a whole term as " term ".
    """
    terms: list[str] = []
    for run, cjk in _runs(text):
        if not cjk:
            terms.append(run[:MAX_TERM_CHARS])
        elif len(run) == 1:
            terms.append(run)
        else:
            terms.extend(_bigrams(run))
            terms.append(run[-1])
    return f" {' '.join(terms)} "


@dataclass(frozen=True)
class Phrase:
    """Terms that must follow each other; a prefix phrase is one term's beginning."""

    terms: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True)
class SearchQuery:
    """A parsed query: every phrase must occur in the same segment or translation."""

    phrases: tuple[Phrase, ...]

    def fts5(self) -> str:
        # Terms hold letters and digits only, so quoting them needs no escaping.
        return " AND ".join(
            f'"{p.terms[0]}" *' if p.prefix else '"' + " ".join(p.terms) + '"' for p in self.phrases
        )

    def tsquery(self) -> str:
        """Every term, in any order: the GIN index answers this exactly, without reading
        rows back. Phrase order is then checked on the rows (`_scan_match`), which costs
        far less than PostgreSQL's own phrase check (it recomputes each row's tsvector)."""
        terms: list[str] = []
        for p in self.phrases:
            if p.prefix:
                terms.append(f"'{p.terms[0]}':*")
            else:
                terms.extend(f"'{t}'" for t in p.terms if f"'{t}'" not in terms)
        return " & ".join(terms)

    def patterns(self) -> list[str]:
        """Substrings of `search_terms` that mean the same as the phrases."""
        return [
            f" {p.terms[0]}" if p.prefix else " " + " ".join(p.terms) + " " for p in self.phrases
        ]


def parse_query(q: str) -> SearchQuery | None:
    """The query's phrases, or None if it has no letters or digits to search for."""
    phrases: list[Phrase] = []
    for run, cjk in _runs(q[:MAX_QUERY_CHARS]):
        if not cjk:
            phrase = Phrase((run[:MAX_TERM_CHARS],))
        elif len(run) == 1:
            phrase = Phrase((run,), prefix=True)
        else:
            phrase = Phrase(tuple(_bigrams(run)))
        if phrase not in phrases:
            phrases.append(phrase)
    if not phrases:
        return None
    return SearchQuery(tuple(phrases[:MAX_QUERY_PHRASES]))
