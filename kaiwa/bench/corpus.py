"""A synthetic call history for the search bench: deterministic, English and Japanese.

Calls are about reservations, hotels, travel and support. Each segment comes from a
sentence template pair (English, Japanese) with slots; interpreted calls store the other
language as a translation, as the agents do. Slot words are drawn with Zipf-like weights,
so some words are in many calls and some in few, and booking codes and rarer surnames make
words that occur a handful of times in the whole history.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

# (English, Japanese) slot fillers; the first ones are drawn most often.
SLOTS: dict[str, list[tuple[str, str]]] = {
    "city": [
        ("Tokyo", "東京"),
        ("Osaka", "大阪"),
        ("Kyoto", "京都"),
        ("Yokohama", "横浜"),
        ("Sapporo", "札幌"),
        ("Fukuoka", "福岡"),
        ("Nagoya", "名古屋"),
        ("Kobe", "神戸"),
        ("Sendai", "仙台"),
        ("Hiroshima", "広島"),
        ("Nara", "奈良"),
        ("Kanazawa", "金沢"),
        ("Hakodate", "函館"),
        ("Naha", "那覇"),
        ("Matsuyama", "松山"),
        ("Takayama", "高山"),
    ],
    "day": [
        ("tomorrow", "明日"),
        ("today", "今日"),
        ("Friday", "金曜日"),
        ("Saturday", "土曜日"),
        ("Sunday", "日曜日"),
        ("Monday", "月曜日"),
        ("next week", "来週"),
        ("Tuesday", "火曜日"),
        ("Wednesday", "水曜日"),
        ("Thursday", "木曜日"),
    ],
    "time": [
        ("seven", "七時"),
        ("six", "六時"),
        ("eight", "八時"),
        ("noon", "正午"),
        ("nine", "九時"),
        ("ten", "十時"),
        ("five", "五時"),
        ("eleven", "十一時"),
    ],
    "count": [
        ("two", "二人"),
        ("four", "四人"),
        ("three", "三人"),
        ("six", "六人"),
        ("ten", "十人"),
    ],
    "food": [
        ("sushi", "寿司"),
        ("ramen", "ラーメン"),
        ("tempura", "天ぷら"),
        ("soba", "そば"),
        ("yakitori", "焼き鳥"),
        ("curry", "カレー"),
        ("udon", "うどん"),
        ("okonomiyaki", "お好み焼き"),
        ("sukiyaki", "すき焼き"),
        ("tonkatsu", "とんかつ"),
        ("shabu-shabu", "しゃぶしゃぶ"),
        ("kaiseki", "懐石料理"),
    ],
    "room": [
        ("single room", "シングルルーム"),
        ("double room", "ダブルルーム"),
        ("twin room", "ツインルーム"),
        ("suite", "スイート"),
        ("Japanese-style room", "和室"),
    ],
    "thing": [
        ("password", "パスワード"),
        ("invoice", "請求書"),
        ("router", "ルーター"),
        ("account", "アカウント"),
        ("printer", "プリンター"),
        ("laptop", "ノートパソコン"),
        ("smartphone", "スマートフォン"),
        ("subscription", "サブスクリプション"),
        ("receipt", "領収書"),
        ("refund", "返金"),
        ("delivery", "配達"),
        ("warranty", "保証"),
    ],
    "weather": [
        ("rain", "雨"),
        ("sunny", "晴れ"),
        ("snow", "雪"),
        ("typhoon", "台風"),
        ("cloudy", "曇り"),
    ],
    "transport": [
        ("Shinkansen", "新幹線"),
        ("train", "電車"),
        ("bus", "バス"),
        ("taxi", "タクシー"),
        ("flight", "飛行機"),
        ("ferry", "フェリー"),
    ],
}

# Surnames: common ones often, the rest rarely (the rare-word queries pick from these).
SURNAMES = [
    ("Sato", "佐藤"),
    ("Suzuki", "鈴木"),
    ("Takahashi", "高橋"),
    ("Tanaka", "田中"),
    ("Watanabe", "渡辺"),
    ("Ito", "伊藤"),
    ("Yamamoto", "山本"),
    ("Nakamura", "中村"),
    ("Kobayashi", "小林"),
    ("Kato", "加藤"),
]
_RARE_SURNAME_PARTS = "東西南北上下大小高中新古若松竹梅森林川池谷岡島崎原野村田井坂橋宮浜"

TEMPLATES: list[tuple[str, str]] = [
    (
        "I would like to book a table for {count} at {time} {day}.",
        "{day}の{time}に{count}で予約をお願いしたいです。",
    ),
    ("Do you have any {food} on the menu?", "メニューに{food}はありますか?"),
    (
        "Is there a good {food} restaurant near {city} station?",
        "{city}駅の近くにおいしい{food}のレストランはありますか?",
    ),
    ("My name is {surname}.", "{surname}と申します。"),
    ("The reservation is under {surname}.", "予約は{surname}の名前でしています。"),
    ("My booking number is {code}.", "予約番号は{code}です。"),
    ("Could you check booking {code} for me?", "予約{code}を確認していただけますか?"),
    ("I need a {room} in {city} from {day}.", "{day}から{city}で{room}をお願いします。"),
    ("How much is a {room} per night?", "{room}は一泊いくらですか?"),
    ("Is breakfast included with the {room}?", "{room}には朝食が付いていますか?"),
    ("What time is check-in?", "チェックインは何時ですか?"),
    ("Can I check out late on {day}?", "{day}は遅めにチェックアウトできますか?"),
    ("I forgot my {thing}.", "{thing}を忘れてしまいました。"),
    ("My {thing} is not working since {day}.", "{day}から{thing}が動きません。"),
    ("Please send the {thing} to my email address.", "{thing}をメールで送ってください。"),
    ("I would like a {thing} for my last order.", "前回の注文の{thing}をお願いします。"),
    ("Let me check that for you, one moment please.", "確認いたしますので、少々お待ちください。"),
    ("Thank you very much for your patience.", "お待たせして申し訳ありません。"),
    ("Is there anything else I can help you with?", "ほかに何かお手伝いできることはありますか?"),
    ("No, that is all, thank you.", "いいえ、以上です。ありがとうございます。"),
    ("Will it {weather} in {city} {day}?", "{day}の{city}は{weather}ですか?"),
    ("The forecast says {weather} for {day}.", "{day}の予報は{weather}です。"),
    ("How do I get to {city} by {transport}?", "{transport}で{city}までどうやって行きますか?"),
    (
        "The {transport} to {city} leaves at {time}.",
        "{city}行きの{transport}は{time}に出発します。",
    ),
    ("I missed my {transport} this morning.", "今朝、{transport}に乗り遅れました。"),
    ("Can I change my reservation to {day}?", "予約を{day}に変更できますか?"),
    ("I want to cancel my reservation for {day}.", "{day}の予約をキャンセルしたいです。"),
    ("There are {count} of us, is that okay?", "{count}ですが、大丈夫ですか?"),
    ("We are allergic to {food}.", "{food}のアレルギーがあります。"),
    ("Could you repeat that, please?", "もう一度言っていただけますか?"),
    (
        "Sure, I have booked it for {day} at {time}.",
        "かしこまりました。{day}の{time}で予約しました。",
    ),
    ("The total comes to {price} yen.", "合計で{price}円になります。"),
    ("Can I pay by credit card?", "クレジットカードで払えますか?"),
    ("Where is the nearest {transport} stop?", "一番近い{transport}乗り場はどこですか?"),
    ("Hello, this is the front desk.", "はい、フロントでございます。"),
    (
        "Good morning, how can I help you today?",
        "おはようございます。本日はどのようなご用件でしょうか?",
    ),
]


def _zipf_weights(n: int) -> list[float]:
    return [1.0 / (rank + 1) for rank in range(n)]


@dataclass
class Vocabulary:
    """How often each query candidate occurs, counted while generating."""

    codes: Counter[str] = field(default_factory=Counter)
    rare_surnames: Counter[str] = field(default_factory=Counter)


@dataclass
class Call:
    id: str
    room_sid: str
    room_name: str
    mode: str
    started_at: datetime
    ended_at: datetime
    callers: list[tuple[str, str]]  # (identity, language)
    agent: str
    recorded: bool


@dataclass
class Line:
    id: str
    conversation_id: str
    identity: str
    language: str
    text: str
    start_s: float
    end_s: float
    translation: tuple[str, str] | None  # (language, text)


class Generator:
    def __init__(self, seed: int, now: datetime | None = None) -> None:
        self.rng = random.Random(seed)
        self.now = now or datetime(2026, 11, 1, tzinfo=UTC)
        self.vocabulary = Vocabulary()
        self._slot_weights = {name: _zipf_weights(len(v)) for name, v in SLOTS.items()}
        self._template_weights = _zipf_weights(len(TEMPLATES))
        # Shuffled once, so frequency does not follow the order the templates are listed.
        self._templates = TEMPLATES[:]
        self.rng.shuffle(self._templates)
        self._callers = [f"caller-{i:05d}" for i in range(3000)]

    def _hex(self, bits: int = 128) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def _surname(self) -> tuple[str, str]:
        if self.rng.random() < 0.9:
            return self.rng.choices(SURNAMES, _zipf_weights(len(SURNAMES)))[0]
        parts = self.rng.sample(_RARE_SURNAME_PARTS, 2)
        ja = "".join(parts)
        self.vocabulary.rare_surnames[ja] += 1
        return ("Tanabe", ja)  # the English side needs no rare word of its own

    def sentence(self) -> tuple[str, str]:
        en, ja = self.rng.choices(self._templates, self._template_weights)[0]
        values_en: dict[str, str] = {}
        values_ja: dict[str, str] = {}
        for name, options in SLOTS.items():
            if "{" + name + "}" in en:
                pick = self.rng.choices(options, self._slot_weights[name])[0]
                values_en[name], values_ja[name] = pick
        if "{surname}" in en:
            values_en["surname"], values_ja["surname"] = self._surname()
        if "{code}" in en:
            code = f"KW-{self.rng.randrange(10**6):06d}"
            self.vocabulary.codes[code] += 1
            values_en["code"] = values_ja["code"] = code
        if "{price}" in en:
            values_en["price"] = values_ja["price"] = str(self.rng.randrange(10, 500) * 100)
        return en.format(**values_en), ja.format(**values_ja)

    def call(self, segments: int) -> tuple[Call, list[Line]]:
        mode = "interpret" if self.rng.random() < 0.4 else "dialog"
        started = self.now - timedelta(seconds=self.rng.uniform(0, 365 * 86400))
        if mode == "interpret":
            callers = [
                (self.rng.choice(self._callers), "en"),
                (self.rng.choice(self._callers), "ja"),
            ]
        else:
            callers = [(self.rng.choice(self._callers), self.rng.choice(["en", "en", "ja"]))]
        call = Call(
            id=self._hex(),
            room_sid="RM_" + self._hex(48),
            room_name=f"{mode}-{self._hex(48)}",
            mode=mode,
            started_at=started,
            ended_at=started,
            callers=callers,
            agent="agent-AJ_" + self._hex(48),
            recorded=self.rng.random() < 0.8,
        )
        lines: list[Line] = []
        clock = self.rng.uniform(0.5, 3.0)
        for i in range(segments):
            en, ja = self.sentence()
            if mode == "interpret":
                identity, language = callers[i % 2]
            else:
                identity, language = callers[0] if i % 2 == 0 else (call.agent, callers[0][1])
            text, other = (en, ("ja", ja)) if language == "en" else (ja, ("en", en))
            length = self.rng.uniform(1.0, 6.0)
            lines.append(
                Line(
                    id=f"{call.id[:12]}-{i:04d}",
                    conversation_id=call.id,
                    identity=identity,
                    language=language,
                    text=text,
                    start_s=round(clock, 3),
                    end_s=round(clock + length, 3),
                    translation=other if mode == "interpret" else None,
                )
            )
            clock += length + self.rng.uniform(0.2, 2.0)
        call.ended_at = started + timedelta(seconds=clock)
        return call, lines

    def calls(self, total_segments: int, per_call: int = 100) -> Iterator[tuple[Call, list[Line]]]:
        """Calls of about `per_call` segments until `total_segments` are made."""
        made = 0
        while made < total_segments:
            n = min(total_segments - made, self.rng.randint(per_call // 2, per_call * 3 // 2))
            made += n
            yield self.call(n)
