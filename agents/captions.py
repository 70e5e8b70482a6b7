"""Captions on LiveKit's `lk.transcription` text-stream topic, with LiveKit's attributes.

A caption is one text stream. Interims and the final of a segment share `lk.segment_id`, so a
client replaces the interim text with each update and with the final. A translation is a
final caption of its own segment (`<source segment>-<language>`) naming its source.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.payloads import SegmentKind
from core.protocol import (
    END_S,
    FINAL,
    KIND,
    LANGUAGE_ATTRIBUTE,
    LANGUAGE_SETTING,
    SEGMENT_ID,
    SOURCE_SEGMENT_ID,
    SPEAKER,
    START_S,
    TRACK_ID,
)


@dataclass(frozen=True)
class Caption:
    segment_id: str
    track_id: str
    speaker: str
    language: str
    text: str
    final: bool
    # Seconds from the start of the call.
    start_s: float
    end_s: float
    source_segment_id: str | None = None
    kind: SegmentKind = "speech"
    # The speaker's language setting, on a caption of speech heard in another language.
    language_setting: str | None = None

    def attributes(self) -> dict[str, str]:
        attributes = {
            SEGMENT_ID: self.segment_id,
            TRACK_ID: self.track_id,
            FINAL: "true" if self.final else "false",
            LANGUAGE_ATTRIBUTE: self.language,
            SPEAKER: self.speaker,
            START_S: f"{self.start_s:.3f}",
            END_S: f"{self.end_s:.3f}",
        }
        if self.source_segment_id is not None:
            attributes[SOURCE_SEGMENT_ID] = self.source_segment_id
        if self.kind == "text":
            attributes[KIND] = "text"
        if self.language_setting is not None:
            attributes[LANGUAGE_SETTING] = self.language_setting
        return attributes
