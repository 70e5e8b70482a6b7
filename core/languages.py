"""Languages: those a caller may speak or listen in, and the names the models are told.

The supported set is Whisper's list (faster-whisper's tokenizer), written out so that the API
need not load the speech engines to check a request; tests/test_tokens.py keeps the two
lists equal.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from .errors import UnsupportedLanguage

SUPPORTED_LANGUAGES = frozenset(
    """
    af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha
    haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr
    ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg
    th tk tl tr tt uk ur uz vi yi yo yue zh
    """.split()
)


# A BCP 47 tag ("en", "pt-BR", "zh-Hant", "ja-Jpan-JP") whose language is one we serve. One
# grammar for every place a tag goes (a caller's language, a translation's key, a ledger key
# such as "translation.ja-Jpan-JP"): a key narrower than the tag it carries refused whole
# segments, and lost a call's transcript, for one listener's tag.
LANGUAGE_TAG = "(" + "|".join(sorted(SUPPORTED_LANGUAGES)) + r")(-[A-Za-z0-9]{2,8}){0,2}"
# As one pattern, so that the OpenAPI schema says what the API accepts.
LANGUAGE_TAG_PATTERN = f"^{LANGUAGE_TAG}$"

# BCP 47 language tags as callers send them ("en", "ja", "pt-BR", "zh-Hant"), of a language
# the speech-to-text serves.
Language = Annotated[str, StringConstraints(pattern=LANGUAGE_TAG_PATTERN)]

# The languages a language model is told to speak or translate, by their English names.
LANGUAGE_NAMES = {
    "en": "English",
    "ja": "Japanese",
    "vi": "Vietnamese",
    "zh": "Chinese",
    "ko": "Korean",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "pt": "Portuguese",
    "it": "Italian",
    "th": "Thai",
    "id": "Indonesian",
    "ru": "Russian",
    "ar": "Arabic",
    "hi": "Hindi",
}


def base_language(code: str) -> str:
    """ "ja" for "ja", "ja-JP" or "JA"."""
    return code.split("-")[0].lower()


def language_name(code: str) -> str:
    """ "Japanese" for "ja" or "ja-JP". Raises UnsupportedLanguage for a language the models
    are not told how to name (and so cannot be asked to translate)."""
    try:
        return LANGUAGE_NAMES[base_language(code)]
    except KeyError:
        raise UnsupportedLanguage("translation", code) from None
