"""Is a model's output a translation? Checked before anyone reads or hears it.

A small model asked to translate sometimes does something else, and says it as fluently as a
translation (seen on Kaiwa's eval and in calls):

- it writes in the wrong script: Chinese characters inside a Vietnamese sentence, English
  left in one;
- it hands the source back unchanged;
- it refuses, or answers as a chatbot ("I'm sorry, but I can't assist with that."), most
  often when the speech-to-text gave it garbage;
- it writes far more or far less than the source says.

Each rule is a cheap look at characters and words, so it runs on every translation. The
rules are measured against the eval set's reference translations (tests/test_translation_check.py):
a correct translation must pass them all.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from core.languages import base_language

Problem = Literal["empty", "wrong_script", "unchanged", "refusal", "length"]

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile(r"[\u1100-\u11ff\uac00-\ud7af]")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
# The marks Vietnamese puts on vowels (tones under NFD) and its own letters: a Vietnamese
# sentence of a few words nearly always has some, an English one nearly never.
_VI_TONES = {"\u0300", "\u0301", "\u0303", "\u0309", "\u0323"}
_VI_LETTERS = set("đăâêôơư")
# English words that are not also Vietnamese words, and the shapes no Vietnamese syllable
# has (the letters f, j, w, z; a final consonant other than c, ch, m, n, ng, nh, p, t; more
# than 7 letters). Two such words in lower case in a Vietnamese sentence are English left
# untranslated; names (capitalised) may keep their own spelling.
_EN_ONLY = frozenset(
    "the is are was were of and with for you your this that what where when which would "
    "could should please have has will there their they it's i'm don't can't".split()
)
_NOT_VI_SYLLABLE = re.compile(r"[fjwz]|[^aeiouycmnptgh]$|[^n]g$|[^cn]h$|.{8,}")
# Refusals and chatbot answers, in each language Kaiwa writes.
_REFUSAL = re.compile(
    r"\bas an ai\b|\bi(?:'m| am) (?:sorry|unable|not able)\b|\bi can(?:'|no)t (?:assist|help|"
    r"provide|translate|comply)|\bplease provide\b|申し訳(?:あり|ござい)ませんが|"
    r"お手伝い(?:できません|いたしかねます|できかねます)|xin lỗi,? (?:nhưng )?tôi không thể",
    re.IGNORECASE,
)
_APOLOGY = re.compile(r"sorry|apolog|afraid|unable|すみません|ごめん|申し訳|xin lỗi|rất tiếc", re.I)
# A translation never talks about translating unless the source did.
_ABOUT_TRANSLATING = re.compile(r"translat|翻訳|\bdịch\b", re.IGNORECASE)
# Characters a language uses to say as much as one Japanese character, measured on the eval
# set's references (medians: en 1.95, vi 1.7): lengths are compared in these units.
_CHARS_PER_UNIT = {"ja": 1.0, "en": 1.95, "vi": 1.7}
# Below this many units in the source, a length says little ("Yes." is "はい。").
_SHORTEST_FOR_LENGTH = 8.0
LENGTH_RATIO = (0.35, 2.8)


def problem(source_text: str, source: str, output: str, target: str) -> Problem | None:
    """What is wrong with `output` as a translation of `source_text`, or None."""
    src, tgt = base_language(source), base_language(target)
    if not _letters(output):
        return "empty" if _letters(source_text) else None
    if _unchanged(source_text, output):
        return "unchanged"
    if _wrong_script(output, tgt):
        return "wrong_script"
    if _refusal(source_text, output):
        return "refusal"
    if _implausible_length(source_text, src, output, tgt):
        return "length"
    return None


def _letters(text: str) -> str:
    return "".join(c for c in text if c.isalnum())


def _unchanged(source_text: str, output: str) -> bool:
    source_letters = _letters(source_text).casefold()
    return len(source_letters) >= 4 and _letters(output).casefold() == source_letters


def _is_vietnamese(word: str) -> bool:
    decomposed = unicodedata.normalize("NFD", word.lower())
    return any(c in _VI_TONES for c in decomposed) or any(c in _VI_LETTERS for c in word.lower())


def _wrong_script(output: str, target: str) -> bool:
    han, kana = len(_HAN.findall(output)), len(_KANA.findall(output))
    if _HANGUL.search(output):
        return True
    if target == "ja":
        latin = sum(1 for c in output if c.isascii() and c.isalpha())
        # Names and brands may stay in Latin letters; a sentence in them is not Japanese.
        return han + kana == 0 or latin > 2 * (han + kana)
    if han or kana:
        return True
    words = _WORD.findall(output)
    # Past the first word, a capital starts a name: names keep their own spelling.
    common = [w for i, w in enumerate(words) if i == 0 or not w[0].isupper()]
    if target == "vi":
        english = sum(1 for w in common if w.lower() in _EN_ONLY or _not_vietnamese(w))
        marked = sum(1 for w in words if _is_vietnamese(w))
        return english >= 2 or (len(words) >= 4 and marked == 0)
    if target == "en":
        return len(words) >= 3 and sum(1 for w in common if _is_vietnamese(w)) * 3 > len(words)
    return False


def _not_vietnamese(word: str) -> bool:
    lower = word.lower()
    return not _is_vietnamese(lower) and bool(_NOT_VI_SYLLABLE.search(lower))


def _refusal(source_text: str, output: str) -> bool:
    if _REFUSAL.search(output) and not _APOLOGY.search(source_text):
        return True
    return bool(_ABOUT_TRANSLATING.search(output)) and not _ABOUT_TRANSLATING.search(source_text)


def _units(text: str, language: str) -> float:
    return len(_letters(text)) / _CHARS_PER_UNIT.get(language, 1.95)


def _implausible_length(source_text: str, source: str, output: str, target: str) -> bool:
    source_units = _units(source_text, source)
    if source_units < _SHORTEST_FOR_LENGTH:
        return False
    ratio = _units(output, target) / source_units
    return not LENGTH_RATIO[0] <= ratio <= LENGTH_RATIO[1]
