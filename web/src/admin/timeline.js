// A recording and its transcript on one timeline: the line under the playhead is marked,
// a line that is selected plays from its start.
//
// Transcript times are seconds from the conversation's start; each recording starts at its
// own moment (the recorder joins a little after the room opens; a speaker's own recording
// starts when they first publish). So a recording's position p is conversation time
// p + offset, with offset = recording.started_at - conversation.started_at.

import {
  STAGE_LABELS,
  formatClock,
  formatSeconds,
  ledgerBars,
  playable,
  recordingOffset,
} from "./format.js";

const SPEAKER_COLOURS = 6;
// A ledger bar's full width, in seconds: one scale for every line, so bars compare.
const LEDGER_SCALE_S = 4;
// After the reader scrolls the transcript themselves, leave it where they put it this long.
const USER_SCROLL_HOLD_MS = 4000;
// A seek in an Ogg file lands on a page boundary, and the player keeps time in whole
// microseconds: either can put the playhead a little before the line the reader chose.
const SEEK_SLOP_S = 1.0;

function node(tag, className, text) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined) made.textContent = text;
  return made;
}

export class Timeline {
  constructor({ audio, transcript, note }) {
    this.audio = audio;
    this.list = transcript;
    this.note = note;
    this.source = document.getElementById("source");
    this.sourceLabel = document.getElementById("source-label");
    this.segments = [];
    this.items = [];
    this.sources = [];
    this.current = null;
    this.offset = 0;
    this.active = -1;
    this.chosen = -1; // the line the reader chose, until the playhead reaches it
    this.pendingSeek = null;
    this.frame = 0;
    this.userScrolledAt = 0;

    // timeupdate fires about 4 times a second; while playing, animation frames keep the
    // mark on the word being said instead of up to 250 ms behind.
    audio.addEventListener("timeupdate", () => this.sync());
    audio.addEventListener("seeked", () => this.sync());
    audio.addEventListener("play", () => this.tick());
    audio.addEventListener("loadedmetadata", () => {
      if (this.pendingSeek !== null) {
        audio.currentTime = this.pendingSeek;
        this.pendingSeek = null;
      }
      this.sync();
    });
    audio.addEventListener("error", () => {
      if (!audio.getAttribute("src")) return;
      this.note.textContent = "The recording could not be loaded. Reload the page to try again.";
      this.note.classList.add("error");
    });
    transcript.addEventListener("click", (event) => {
      const item = event.target.closest("li.segment");
      // Selecting text to copy it is not a request to play.
      if (!item || window.getSelection()?.toString()) return;
      this.play(Number(item.dataset.index));
    });
    for (const kind of ["wheel", "touchmove", "keydown"]) {
      transcript.addEventListener(kind, () => {
        this.userScrolledAt = performance.now();
      }, { passive: true });
    }
    this.source.addEventListener("change", () => {
      const chosen = this.sources[Number(this.source.value)];
      if (chosen) this.use(chosen, this.conversationTime(), !audio.paused);
    });
  }

  /** Show a conversation's transcript and put its best recording in the player. */
  load(conversation, names) {
    this.unload();
    this.segments = [...conversation.transcript].sort((a, b) => a.start_s - b.start_s);
    const speakers = new Map(conversation.participants.map((p, i) => [p.masked_identity, i]));
    this.items = this.segments.map((segment, index) => {
      const item = this.renderSegment(segment, index, names, speakers);
      this.list.append(item);
      return item;
    });

    this.sources = this.playableSources(conversation, names);
    this.source.replaceChildren(
      ...this.sources.map((s, i) => {
        const option = node("option", "", s.label);
        option.value = String(i);
        return option;
      }),
    );
    this.sourceLabel.hidden = this.sources.length < 2;
    this.audio.hidden = this.sources.length === 0;
    this.note.classList.remove("error");
    if (this.sources.length) {
      this.use(this.sources[0], 0, false);
    } else {
      this.note.textContent = conversation.recordings.length
        ? "No recording of this call has a file to play."
        : "This call was not recorded.";
    }
  }

  unload() {
    cancelAnimationFrame(this.frame);
    this.audio.pause();
    if (this.audio.getAttribute("src")) {
      this.audio.removeAttribute("src");
      this.audio.load(); // stops the download of the old file
    }
    this.list.replaceChildren();
    this.segments = [];
    this.items = [];
    this.sources = [];
    this.current = null;
    this.offset = 0;
    this.active = -1;
    this.chosen = -1;
    this.pendingSeek = null;
    this.note.textContent = "";
  }

  /**
   * Recordings with a file, room mixes first (a mix holds every speaker), each kind in the
   * order they began. A call has several mixes when its recording was interrupted and
   * resumed: the first holds the call's beginning.
   */
  playableSources(conversation, names) {
    const byStart = (a, b) => Date.parse(a.started_at ?? "") - Date.parse(b.started_at ?? "");
    const files = conversation.recordings.filter(playable).sort(byStart);
    const mixes = files.filter((r) => r.kind === "room");
    const others = files.filter((r) => r.kind !== "room");
    return [...mixes, ...others].map((recording) => {
      let label;
      if (recording.kind === "room") {
        label = mixes.length > 1
          ? `Room mix from ${new Date(recording.started_at).toLocaleTimeString()}`
          : "Room mix (all speakers)";
      } else {
        const who = names.get(recording.participant_identity) ?? recording.participant_identity;
        label = `${who} only`;
      }
      if (recording.partial) label += " · partial";
      const offset = recordingOffset(conversation, recording);
      return {
        recording,
        label,
        offset,
        end: recording.duration_s == null ? Infinity : offset + recording.duration_s,
        url: `/api/recordings/${encodeURIComponent(recording.id)}/audio`,
      };
    });
  }

  renderSegment(segment, index, names, speakers) {
    const item = node("li", "segment");
    item.dataset.index = String(index);
    item.dataset.id = segment.id;
    item.dataset.start = String(segment.start_s);
    const colour = speakers.get(segment.participant_identity) ?? speakers.size;
    item.classList.add(`speaker-${colour % SPEAKER_COLOURS}`);

    const head = node("div", "segment-head");
    const time = node("button", "segment-time", formatClock(segment.start_s));
    time.type = "button";
    const speaker = names.get(segment.participant_identity) ?? segment.participant_identity;
    time.setAttribute("aria-label", `Play from ${formatClock(segment.start_s)}, ${speaker}`);
    head.append(time, node("span", "segment-speaker", speaker));
    if (segment.kind === "text") {
      const typed = node("span", "segment-typed", "typed");
      typed.title = "Typed in the call's chat, not said";
      head.append(typed);
    }

    const body = node("div", "segment-body");
    const source = node("p", "segment-text", segment.text);
    source.lang = segment.language;
    body.append(source);
    const translations = Object.entries(segment.translations ?? {});
    if (translations.length) {
      body.classList.add("translated");
      const column = node("div", "segment-translations");
      for (const [language, text] of translations) {
        const line = node("p", "segment-translation");
        line.lang = language;
        const tag = node("abbr", "lang", language.toUpperCase());
        tag.title = `Translation (${language})`;
        line.append(tag, " ", text);
        column.append(line);
      }
      body.append(column);
    }
    item.append(head, body);
    for (const bar of ledgerBars(segment.timings)) item.append(ledgerBar(bar));
    return item;
  }

  /** Make `source` the player's file, positioned at conversation time `at`. */
  use(source, at, andPlay) {
    this.current = source;
    this.offset = source.offset;
    this.source.value = String(this.sources.indexOf(source));
    this.note.classList.remove("error");
    this.note.textContent = source.recording.partial
      ? "This recording was cut short; it holds what was recorded before that."
      : "";
    this.pendingSeek = Math.max(0, at - this.offset);
    this.audio.src = source.url;
    if (andPlay) this.audio.play().catch(() => {});
  }

  conversationTime() {
    const position = this.pendingSeek ?? this.audio.currentTime;
    return position + this.offset;
  }

  /** Seek to segment `index` and play; without a recording, just mark the line. */
  play(index, { andPlay = true } = {}) {
    const segment = this.segments[index];
    if (!segment) return;
    this.chosen = index;
    if (!this.current) {
      this.mark(index, true);
      return;
    }
    // A line outside this file (an interrupted recording resumed in another) plays from
    // the file of the same kind and speaker that holds it.
    const holder = this.sourceHolding(segment.start_s);
    if (holder !== this.current) {
      this.use(holder, segment.start_s, andPlay);
      this.mark(index, true);
      return;
    }
    const position = Math.max(0, segment.start_s - this.offset);
    if (this.audio.readyState === HTMLMediaElement.HAVE_NOTHING) this.pendingSeek = position;
    else this.audio.currentTime = position;
    this.mark(index, true);
    if (andPlay) this.audio.play().catch(() => {});
  }

  sourceHolding(t) {
    const inFile = (s) => s.offset <= t && t < s.end;
    if (inFile(this.current)) return this.current;
    const { kind, participant_identity: who } = this.current.recording;
    const sibling = this.sources.find(
      (s) => s.recording.kind === kind && s.recording.participant_identity === who && inFile(s),
    );
    return sibling ?? this.current;
  }

  /** Cue a segment by id (a search hit): in view and ready to play, not playing. */
  cue(segmentId) {
    const index = this.segments.findIndex((s) => s.id === segmentId);
    if (index >= 0) this.play(index, { andPlay: false });
  }

  tick() {
    cancelAnimationFrame(this.frame);
    const step = () => {
      this.sync();
      if (!this.audio.paused && !this.audio.ended) this.frame = requestAnimationFrame(step);
    };
    this.frame = requestAnimationFrame(step);
  }

  /** The line whose span holds conversation time t: the latest-starting one, if several. */
  segmentAt(t) {
    let found = -1;
    for (let i = 0; i < this.segments.length; i++) {
      const segment = this.segments[i];
      if (segment.start_s > t) break;
      if (t < segment.end_s) found = i;
    }
    return found;
  }

  sync() {
    if (!this.current || this.pendingSeek !== null) return;
    const at = this.audio.currentTime + this.offset;
    let index = this.segmentAt(at);
    // The chosen line stays marked while the seek's landing puts the playhead just short
    // of it; once the playhead reaches it, or the reader goes elsewhere, time alone rules.
    const chosen = this.segments[this.chosen];
    if (chosen && at < chosen.start_s && chosen.start_s - at <= SEEK_SLOP_S) index = this.chosen;
    else this.chosen = -1;
    if (index !== this.active) this.mark(index, false);
  }

  mark(index, force) {
    const before = this.items[this.active];
    if (before) {
      before.classList.remove("current");
      before.removeAttribute("aria-current");
    }
    this.active = index;
    const item = this.items[index];
    if (!item) return;
    item.classList.add("current");
    item.setAttribute("aria-current", "true");
    if (force || performance.now() - this.userScrolledAt > USER_SCROLL_HOLD_MS) this.reveal(item);
  }

  // Scroll the transcript box only: scrollIntoView would also move the page, and with it
  // the player, away from where the reader is.
  reveal(item) {
    const box = this.list;
    const top = item.offsetTop;
    const bottom = top + item.offsetHeight;
    if (top >= box.scrollTop && bottom <= box.scrollTop + box.clientHeight) return;
    const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    const behavior = smooth ? "smooth" : "auto";
    box.scrollTo({ top: Math.max(0, top - box.clientHeight / 3), behavior });
  }
}

/** Where one line's time went: a bar of its stages, each as wide as it took. */
function ledgerBar({ language, parts }) {
  const total = parts.reduce((sum, part) => sum + part.seconds, 0);
  const words = parts.map((p) => `${STAGE_LABELS.get(p.stage)} ${formatSeconds(p.seconds)}`);
  const bar = node("div", "ledger");
  bar.setAttribute("role", "img");
  bar.setAttribute(
    "aria-label",
    `Latency${language ? ` into ${language.toUpperCase()}` : ""}: ${words.join(", ")}; ` +
      `${formatSeconds(total)} in all`,
  );
  bar.title = words.join("\n");
  if (language) bar.append(node("abbr", "lang", language.toUpperCase()));
  const track = node("div", "ledger-track");
  let used = 0;
  for (const part of parts) {
    const width = Math.min(part.seconds / LEDGER_SCALE_S, 1 - used);
    used += width;
    const span = node("span", `ledger-part stage-${part.stage}`);
    span.style.width = `${(width * 100).toFixed(2)}%`;
    track.append(span);
  }
  bar.append(track, node("span", "ledger-total", formatSeconds(total)));
  return bar;
}
