// The call's captions, one row per segment, from two sources that overlap:
//   - live text streams on `lk.transcription` (interims, finals, translations), from agents;
//   - the history API's transcript of the call so far (finals with their translations).
// Both name a segment by the same id (`lk.segment_id` live, `id` in the history), so a row is
// created by whichever arrives first and completed by the other: a reload or reconnect that
// reads the history while captions keep arriving neither loses nor repeats a line.

export const TOPIC = "lk.transcription";
const SEGMENT_ID = "lk.segment_id";
const FINAL = "lk.transcription_final";
const SOURCE_SEGMENT_ID = "kaiwa.source_segment_id";
const SPEAKER = "kaiwa.speaker";
const START_S = "kaiwa.start_s";
const KIND = "kaiwa.kind";
// On speech heard in another language than its speaker set: that setting. Such speech is
// captioned as heard and never translated.
const LANGUAGE_SETTING = "kaiwa.language_setting";

export class CaptionBook {
  constructor(onChange) {
    this.rows = new Map();
    this.onChange = onChange;
    this.arrivals = 0;
    // Rows without a call time (dialog turns as they stream) sort after what was known
    // when they arrived.
    this.latestS = 0;
  }

  row(id) {
    let row = this.rows.get(id);
    if (!row) {
      row = {
        id,
        speaker: "",
        language: "",
        text: "",
        final: false,
        kind: "speech", // or "text": typed into the chat
        otherLanguage: false, // heard in another language than its speaker set
        translations: {},
        startS: null,
        sortS: this.latestS,
        arrival: this.arrivals++,
      };
      this.rows.set(id, row);
    }
    return row;
  }

  // One caption text stream, an agent's (main.js reads no other: any caller may send text
  // streams): `text` so far, `attributes` as the stream's header (and, once it ended, its
  // trailer) carry them, `sender` the identity it was sent under.
  fromStream(text, attributes, sender) {
    const segmentId = attributes[SEGMENT_ID];
    if (!segmentId) return;
    const source = attributes[SOURCE_SEGMENT_ID];
    const language = attributes.language || "";
    if (source) {
      const row = this.row(source);
      row.translations[language] = text;
      if (!row.speaker) row.speaker = attributes[SPEAKER] || sender;
      this.placeAt(row, attributes[START_S]);
    } else {
      const row = this.row(segmentId);
      // A delta stream (an agent's reply, word by word) says it is final in its trailer; a
      // stream per update says it in its header. A final, stored or live, is never undone.
      const final = attributes[FINAL] === "true";
      if (row.final && !final) return;
      // A final row is its speaker's: another's text under its id is not it. (An agent that
      // took over a call cannot know whose message ids are whose: another participant could
      // send a message under someone's id, and it would be captioned under that id.)
      const speaker = attributes[SPEAKER] || sender;
      if (row.final && row.speaker && row.speaker !== speaker) return;
      row.text = text;
      row.final = final;
      row.speaker = speaker;
      if (language) row.language = language;
      if (attributes[KIND] === "text") row.kind = "text";
      row.otherLanguage = Boolean(attributes[LANGUAGE_SETTING]);
      this.placeAt(row, attributes[START_S]);
    }
    this.onChange();
  }

  // The history API's transcript: finals, each with every translation made so far.
  fromHistory(segments) {
    for (const s of segments) {
      const row = this.row(s.id);
      Object.assign(row, {
        speaker: s.participant_identity,
        language: s.language,
        text: s.text,
        final: true,
        kind: s.kind || "speech",
      });
      this.placeAt(row, s.start_s);
      Object.assign(row.translations, s.translations);
    }
    this.onChange();
  }

  // A message this page typed, shown at once under the id it will be captioned and stored by.
  typed(id, speaker, language, text) {
    const row = this.row(id);
    if (!row.text) Object.assign(row, { speaker, language, text, final: true, kind: "text" });
    this.onChange();
  }

  placeAt(row, startS) {
    const value = Number.parseFloat(startS);
    if (!Number.isFinite(value)) return;
    row.startS = row.sortS = value;
    this.latestS = Math.max(this.latestS, value);
  }

  // Rows in the order they were said: by call time where known, else by arrival.
  ordered() {
    return [...this.rows.values()].sort((a, b) => a.sortS - b.sortS || a.arrival - b.arrival);
  }
}
