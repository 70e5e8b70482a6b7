"""Cutting a growing transcript into sentences that are safe to translate before it ends.

Whisper re-decodes the whole utterance for each interim, so its text can still change. A
sentence is committed once two interims in a row agree on it and more text follows it: the
speaker has moved on to the next sentence, and the decoder has stopped revising this one.

An interim decoded at a pause (the speaker stopped for a quarter of a second, then went on)
heard everything before the pause, as a final would have: its sentences are committed
without waiting for another interim, the last one too where the decoder ended it with
terminal punctuation. Without this, a sentence followed by a short pause and a long one went
out only with the utterance's final, seconds after it was said.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

# Terminal punctuation (Latin or CJK), then closing quotes or brackets. Not a trailing-off
# ellipsis ("cup of..."): the speaker has not finished.
_TERMINAL = r"(?:[。！？]+|(?<!\.)\.(?!\.)|[!?]+)[\"'”」』)）]*"
# A sentence ends there where a space or the text's end follows, or at once after CJK
# punctuation (Japanese puts no space between sentences). "3.50" and "e.g.x" go on.
_SENTENCE_END = re.compile(_TERMINAL + r"(?:(?<=[。！？」』）])\s*|\s+|$)")
_ENDED = re.compile(_TERMINAL + r"$")
_WORD = re.compile(r"\w")


def split_sentences(text: str) -> list[str]:
    """Sentences with their punctuation, stripped; the last may be unfinished."""
    parts: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        if end == start:
            continue
        piece = text[start:end].strip()
        if piece:
            parts.append(piece)
        start = end
    tail = text[start:].strip()
    if tail:
        parts.append(tail)
    return parts


def _key(sentence: str) -> str:
    """A sentence's words without spacing, punctuation or case: what decodes agree on."""
    return "".join(_fold(char) for char in sentence)


def _fold(char: str) -> str:
    return char.casefold() if _WORD.match(char) else ""


class SentenceCommitter:
    """Tracks one utterance's interims and says which sentences can go out as final."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self._previous: list[str] = []

    def interim(self, text: str, *, paused: bool = False) -> tuple[list[str], str]:
        """(newly committed sentences, the uncommitted rest to show as interim).

        `paused`: the text was decoded at a pause in the speech (see the module's doc).
        """
        sentences = split_sentences(text)
        done = len(self.committed)
        new: list[str] = []
        # Not the last sentence, which may still be growing, unless the speaker paused
        # after its terminal punctuation.
        ended = paused and bool(sentences) and _ENDED.search(sentences[-1]) is not None
        for index in range(done, len(sentences) - (0 if ended else 1)):
            agreed = paused or (
                index < len(self._previous)
                and _key(self._previous[index]) == _key(sentences[index])
            )
            if not agreed:
                break
            new.append(sentences[index])
        self.committed.extend(new)
        self._previous = sentences
        return new, _join(sentences[len(self.committed) :], text)

    def final(self, text: str) -> str:
        """What the final text holds beyond the committed sentences ("" if nothing).

        The final decode hears the whole utterance and may punctuate it differently from
        the interims ("Good morning, I would like..." after "Good morning." was committed),
        so the committed part is found by its words, not by counting sentences.
        """
        committed = self.committed
        self.committed = []
        self._previous = []
        if not committed:
            return _join(split_sentences(text), text)
        return _after(_key("".join(committed)), text)


def _after(said: str, text: str) -> str:
    """The part of `text` beyond what matches `said` (a `_key`), from a word's start."""
    if not said:
        return _join(split_sentences(text), text)
    key, where = [], []  # the text's key characters, and where each came from
    for index, char in enumerate(text):
        for folded in _fold(char):
            key.append(folded)
            where.append(index)
    matcher = SequenceMatcher(None, said, "".join(key), autojunk=False)
    blocks = [block for block in matcher.get_matching_blocks() if block.size]
    if sum(block.size for block in blocks) < 0.7 * len(said):
        return text.strip()  # little in common: better said twice than lost
    last = blocks[-1]
    # The committed text's unmatched end stands for as many characters of the final's.
    cut = last.b + last.size + max(0, len(said) - last.a - last.size)
    if cut >= len(key):
        return ""
    start = where[cut]
    if " " in text.strip():
        # Spaced languages: never start inside a word. A word cut there was mostly in the
        # committed text already ("mornin" then "morning").
        while start < len(text) and _WORD.match(text[start - 1]):
            start += 1
    return text[start:].strip().lstrip(",.;:!?、。，！？ ")


def _join(sentences: list[str], text: str) -> str:
    # Japanese and Chinese put no space between sentences.
    return (" " if " " in text.strip() else "").join(sentences)
