"""Cutting a growing transcript into sentences that are safe to translate before it ends.

Whisper re-decodes the whole utterance for each interim, so its text can still change. A
sentence is committed once two interims in a row agree on it and more text follows it: the
speaker has moved on to the next sentence, and the decoder has stopped revising this one.
"""

from __future__ import annotations

import re

# A sentence ends at terminal punctuation (Latin or CJK), followed by a space or the end.
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])[\"'”」』)]*\s*")


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
    return re.sub(r"\W+", "", sentence).casefold()


class SentenceCommitter:
    """Tracks one utterance's interims and says which sentences can go out as final."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self._previous: list[str] = []

    def interim(self, text: str) -> tuple[list[str], str]:
        """(newly committed sentences, the uncommitted rest to show as interim)."""
        sentences = split_sentences(text)
        done = len(self.committed)
        new: list[str] = []
        # Never the last sentence: it may still be growing.
        for index in range(done, len(sentences) - 1):
            agreed = index < len(self._previous) and _key(self._previous[index]) == _key(
                sentences[index]
            )
            if not agreed:
                break
            new.append(sentences[index])
        self.committed.extend(new)
        self._previous = sentences
        return new, _join(sentences[len(self.committed) :], text)

    def final(self, text: str) -> str:
        """What the final text holds beyond the committed sentences ("" if nothing)."""
        sentences = split_sentences(text)
        rest = _join(sentences[len(self.committed) :], text)
        self.committed = []
        self._previous = []
        return rest


def _join(sentences: list[str], text: str) -> str:
    # Japanese and Chinese put no space between sentences.
    return (" " if " " in text.strip() else "").join(sentences)
