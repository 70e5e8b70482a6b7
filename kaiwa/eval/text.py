"""Text normalisation for scoring: what counts as the same words in each language."""

from __future__ import annotations

import re
import unicodedata

_EN_NUMBERS = dict(
    enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())
)
_JA_DIGITS = str.maketrans("0123456789", "〇一二三四五六七八九")


def normalize(text: str, language: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    if language == "ja":
        # Hiragana and katakana spellings of one word (かばん, カバン) are a matter of style:
        # fold them. Kanji against kana, and wrong homophones, still count as errors.
        text = text.translate(_JA_DIGITS)
        text = "".join(chr(ord(c) + 0x60) if "ぁ" <= c <= "ゖ" else c for c in text)
        return re.sub(r"[\s\W_]+", "", text)  # CER: characters only
    text = re.sub(r"[^\w\s']", " ", text)
    words = [
        _EN_NUMBERS.get(int(w), w) if w.isdigit() and int(w) in _EN_NUMBERS else w
        for w in text.split()
    ]
    return " ".join(words)
