"""Cut a reply's streamed text into the pieces a non-streaming voice synthesizes one by one.

A voice that speaks whole texts (piper, Open JTalk) cannot start before its text is complete,
so the first piece decides how soon the caller hears the reply. It ends at the first clause
or sentence boundary ("Sure," "Paris is the capital of France."). Later pieces are whole
sentences, synthesized while the earlier ones play, so they keep the voice's sentence
intonation.

LiveKit's sentence tokenizer waits to see the next sentence begin before it releases one, so a
one-sentence reply was not spoken until the language model had finished it entirely.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

SENTENCE_ENDS = ".!?。！？"
CLAUSE_ENDS = ",;:、，；："
# Full-width marks end a clause or sentence wherever they stand; an ASCII one only before a
# space ("3.5", "e.g.x" go on).
FULL_WIDTH = frozenset("。！？、，；：")
LATER_MIN_CHARS = 20  # shorter sentences ("Yes." "Sure!") join the next: fewer, fuller pieces


def _boundary(text: str, marks: str, min_chars: int) -> int | None:
    """Where the first piece of `text` ends (just past its mark), or None if none is complete."""
    for i, char in enumerate(text):
        if char not in marks or i + 1 < min_chars:
            continue
        if char in FULL_WIDTH or (i + 1 < len(text) and text[i + 1].isspace()):
            return i + 1
    return None


async def speakable_pieces(text: AsyncIterable[str]) -> AsyncIterator[str]:
    """The first clause, then sentence by sentence; whatever is left when the text ends."""
    pending = ""
    first = True
    async for delta in text:
        pending += delta
        while True:
            marks, min_chars = (
                (SENTENCE_ENDS + CLAUSE_ENDS, 2) if first else (SENTENCE_ENDS, LATER_MIN_CHARS)
            )
            pending = pending.lstrip()
            end = _boundary(pending, marks, min_chars)
            if end is None:
                break
            piece, pending = pending[:end].strip(), pending[end:]
            first = False
            yield piece
    if rest := pending.strip():
        yield rest
