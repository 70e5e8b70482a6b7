"""A transcript as WebVTT or plain text, for download.

Speakers are named as the Transcript names them: a phone caller's number already masked
(api/conversations.py, core/phone.py). A typed line is marked as typed: in WebVTT by the
cue class `typed`, which a player's style sheet can show.
"""

from __future__ import annotations

from .schemas import Transcript


def timestamp(seconds: float) -> str:
    """HH:MM:SS.mmm, as WebVTT wants (hours may exceed 99 in neither format here)."""
    millis = round(max(0.0, seconds) * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def _vtt_escape(text: str) -> str:
    # Cue text is markup: these three would otherwise start tags or entities.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: str) -> str:
    # A blank line ends a cue; keep each segment's text on one line.
    return " ".join(text.split())


def to_vtt(transcript: Transcript) -> str:
    lines = ["WEBVTT", ""]
    for segment in transcript.segments:
        end = max(segment.end_s, segment.start_s)
        text = _vtt_escape(_one_line(segment.text))
        if segment.kind == "text":
            text = f"<c.typed>{text}</c>"
        lines += [
            segment.id,
            f"{timestamp(segment.start_s)} --> {timestamp(end)}",
            f"<v {segment.participant_identity}>{text}",
            "",
        ]
    return "\n".join(lines)


def to_txt(transcript: Transcript) -> str:
    lines = []
    for segment in transcript.segments:
        how = ", typed" if segment.kind == "text" else ""
        lines.append(
            f"[{timestamp(segment.start_s)}] {segment.participant_identity} "
            f"({segment.language}{how}): {_one_line(segment.text)}"
        )
        for language, text in sorted(segment.translations.items()):
            lines.append(f"    ({language}) {_one_line(text)}")
    return "\n".join(lines) + "\n"
