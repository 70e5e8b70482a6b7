"""Sentences committed before an utterance ends, and what its final decode adds to them."""

from __future__ import annotations

import pytest

from agents.interpret.sentences import SentenceCommitter, split_sentences

pytestmark = pytest.mark.unit


def test_sentences_split_at_latin_and_japanese_punctuation() -> None:
    assert split_sentences("Good morning. How are you? Fine") == [
        "Good morning.",
        "How are you?",
        "Fine",
    ]
    assert split_sentences("おはよう。元気ですか？はい") == ["おはよう。", "元気ですか？", "はい"]


def test_a_sentence_is_committed_once_two_interims_agree_and_more_follows() -> None:
    committer = SentenceCommitter()
    assert committer.interim("Good morning.") == ([], "Good morning.")
    assert committer.interim("Good morning. I would") == (["Good morning."], "I would")
    assert committer.interim("Good morning. I would like") == ([], "I would like")
    assert committer.final("Good morning. I would like a coffee.") == "I would like a coffee."


def test_the_final_keeps_what_follows_even_when_punctuated_differently() -> None:
    committer = SentenceCommitter()
    committer.interim("Good morning. I")
    committer.interim("Good morning. I would")
    assert committer.committed == ["Good morning."]
    # The whole utterance decodes as one sentence: the rest must not be lost.
    final = "Good morning, I would like a large cup of hot coffee with milk."
    assert committer.final(final) == "I would like a large cup of hot coffee with milk."


def test_the_final_rest_starts_at_a_word_when_the_committed_words_changed() -> None:
    committer = SentenceCommitter()
    committer.interim("Good mornin. I")
    committer.interim("Good mornin. I would")
    assert committer.final("Good morning. I would like tea.") == "I would like tea."


def test_a_final_with_nothing_new_adds_nothing() -> None:
    committer = SentenceCommitter()
    committer.interim("Hello there. And")
    committer.interim("Hello there. And")
    assert committer.final("Hello there.") == ""


def test_japanese_rest_after_a_committed_sentence() -> None:
    committer = SentenceCommitter()
    committer.interim("おはようございます。コーヒー")
    committer.interim("おはようございます。コーヒーを")
    assert committer.final("おはようございます、コーヒーをください。") == "コーヒーをください。"


def test_a_final_unlike_the_committed_text_is_kept_whole() -> None:
    committer = SentenceCommitter()
    committer.interim("Thank you. So")
    committer.interim("Thank you. So")
    assert committer.final("Where is the station?") == "Where is the station?"


def test_the_committer_starts_afresh_after_a_final() -> None:
    committer = SentenceCommitter()
    committer.interim("One. Two")
    committer.interim("One. Two")
    committer.final("One. Two.")
    assert committer.committed == []
    assert committer.final("Three.") == "Three."


def test_an_ellipsis_or_a_decimal_point_ends_no_sentence() -> None:
    assert split_sentences("Well... I would like a cup of...") == [
        "Well... I would like a cup of..."
    ]
    assert split_sentences("It costs 3.50 dollars. Thanks") == ["It costs 3.50 dollars.", "Thanks"]
    assert split_sentences("「はい」。次です") == ["「はい」。", "次です"]


def test_a_sentence_the_speaker_paused_after_is_committed_at_once() -> None:
    committer = SentenceCommitter()
    assert committer.interim("Good morning.", paused=True) == (["Good morning."], "")
    # What follows the pause goes on by the usual rule.
    assert committer.interim("Good morning. I would") == ([], "I would")
    assert committer.final("Good morning. I would like a coffee.") == "I would like a coffee."


def test_a_pause_commits_every_sentence_before_it_but_not_an_unfinished_one() -> None:
    committer = SentenceCommitter()
    assert committer.interim("おはようございます。コーヒーを", paused=True) == (
        ["おはようございます。"],
        "コーヒーを",
    )
    # A speaker trailing off ("...") has not finished the sentence either.
    committer = SentenceCommitter()
    assert committer.interim("I would like a cup of...", paused=True) == (
        [],
        "I would like a cup of...",
    )
    # Nor has one the decoder left open: "Good morning" may go on ("... everyone").
    committer = SentenceCommitter()
    assert committer.interim("Good morning", paused=True) == ([], "Good morning")
