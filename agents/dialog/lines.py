"""What the agent says unprompted, and the caller's words that ask for no reply.

Plain data and string checks: nothing here imports LiveKit, so its tests load only this.
"""

from __future__ import annotations

# Words that acknowledge ("yes, go on") rather than take the turn: no reply to them.
BACKCHANNELS = frozenset(
    "un uh-huh uhhuh mhm mm hmm yeah yes yep ok okay right sure".split()
    + "はい うん ええ そう なるほど".split()
)
# What the agent says, unprompted, when it ends a call or cannot answer.
SPOKEN_LINES = {
    "en": {
        "idle": "It seems you have stepped away. Let's talk again soon. Goodbye!",
        "limit": "We have reached the end of our time today. Thank you, and goodbye!",
        "sorry": "Sorry, I lost my train of thought. Could you say that again?",
        "resume": "Sorry, I lost you for a moment. You were saying?",
        "apology": "Sorry, we are having technical trouble and have to end the call. "
        "Please call again in a few minutes.",
    },
    "ja": {
        "idle": "お話がないようなので、今日はここまでにしましょう。またお話ししましょうね。",
        "limit": "今日の時間はここまでです。ありがとうございました。",
        "sorry": "すみません、もう一度言っていただけますか？",
        "resume": "すみません、少し聞こえなくなりました。どうぞ、続けてください。",
        "apology": "申し訳ありません、技術的な問題のため通話を終了します。"
        "数分後にもう一度おかけください。",
    },
}


def line(language: str, kind: str) -> str:
    return SPOKEN_LINES.get(language.split("-")[0], SPOKEN_LINES["en"])[kind]


def is_backchannel(text: str) -> bool:
    words = [w.strip(".,!?。、！？…~ー") for w in text.lower().split()]
    words = [w for w in words if w]
    return 0 < len(words) <= 2 and all(w in BACKCHANNELS for w in words)
