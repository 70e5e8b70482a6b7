// Pure helpers of the admin console: times, recording states, search-hit marking.

/** Seconds as m:ss, or h:mm:ss from an hour on. */
export function formatClock(seconds) {
  const total = Math.max(0, Math.floor(seconds ?? 0));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  return formatClock(Math.round(seconds));
}

// The history API's statuses, lower case; LiveKit's EGRESS_* names are accepted too.
function normalStatus(status) {
  return String(status ?? "")
    .toLowerCase()
    .replace(/^egress_/, "");
}

/** Whether a recording has a stored file to play: finished, or cut short with a partial file. */
export function playable(recording) {
  const status = normalStatus(recording.status);
  return status === "complete" || status === "limit_reached" || Boolean(recording.partial);
}

/** A recording's state in words, and a tone for its badge (ok, warn, bad, busy). */
export function describeRecording(recording) {
  const status = normalStatus(recording.status);
  if (status === "complete") return { label: "Complete", tone: "ok" };
  if (recording.partial) return { label: "Partial", tone: "warn" };
  switch (status) {
    case "failed":
      return { label: "Failed", tone: "bad" };
    case "aborted":
      return { label: "Aborted", tone: "bad" };
    case "limit_reached":
      return { label: "Limit reached", tone: "warn" };
    case "starting":
    case "active":
      return { label: "Recording", tone: "busy" };
    case "ending":
      return { label: "Finishing", tone: "busy" };
    default:
      return { label: status || "Unknown", tone: "warn" };
  }
}

/** Seconds from the conversation's start to the recording's, from their ISO timestamps. */
export function recordingOffset(conversation, recording) {
  const began = Date.parse(conversation.started_at);
  const recorded = Date.parse(recording.started_at ?? "");
  if (Number.isNaN(began) || Number.isNaN(recorded)) return 0;
  return (recorded - began) / 1000;
}

// Letters and digits, as the server's search splits words.
const WORD = /[\p{L}\p{N}]+/gu;

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * `text` as DOM nodes, with each word of `query` wrapped in <mark>: text nodes only, so
 * nothing in the text can become markup. Case-insensitive; CJK words match as substrings,
 * as the server matches them.
 */
export function highlightTerms(text, query) {
  const words = [...new Set((query.match(WORD) ?? []).map((w) => w.normalize("NFKC")))];
  if (!words.length) return [document.createTextNode(text)];
  // Longest first, so "lighthouses" wins over "lighthouse" where both were asked for.
  words.sort((a, b) => b.length - a.length);
  const pattern = new RegExp(words.map(escapeRegExp).join("|"), "giu");
  const nodes = [];
  let last = 0;
  for (const hit of text.matchAll(pattern)) {
    if (hit.index > last) nodes.push(document.createTextNode(text.slice(last, hit.index)));
    const mark = document.createElement("mark");
    mark.textContent = hit[0];
    nodes.push(mark);
    last = hit.index + hit[0].length;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

// The stages of a line's latency ledger (docs/operations.md), in pipeline order, as the
// console names them. A stage measured per target language is keyed "translation.ja".
export const LEDGER_STAGES = [
  ["final_transcript", "speech → transcript"],
  ["end_of_turn", "end of turn"],
  ["translation", "translation"],
  ["first_frame", "first audio out"],
  ["llm_first_token", "LLM first token"],
  ["reply_first_frame", "reply audio out"],
];
const STAGE_ORDER = new Map(LEDGER_STAGES.map(([stage], i) => [stage, i]));
export const STAGE_LABELS = new Map(LEDGER_STAGES);

function splitKey(key) {
  const dot = key.indexOf(".");
  return dot < 0 ? [key, null] : [key.slice(0, dot), key.slice(dot + 1)];
}

function byStage(a, b) {
  const [sa, la] = splitKey(a);
  const [sb, lb] = splitKey(b);
  return (STAGE_ORDER.get(sa) ?? 99) - (STAGE_ORDER.get(sb) ?? 99) || (la ?? "").localeCompare(lb ?? "");
}

/**
 * A line's ledger as the bars the console draws: where its time went, stage after stage.
 * One bar per target language for an interpreted line (its transcript, then that
 * language's translation and first audio), else one bar. Each part: {stage, seconds}.
 */
export function ledgerBars(timings) {
  const keys = Object.keys(timings ?? {}).filter((k) => STAGE_ORDER.has(splitKey(k)[0]));
  const shared = keys.filter((k) => splitKey(k)[1] === null).sort(byStage);
  const languages = [...new Set(keys.map((k) => splitKey(k)[1]).filter(Boolean))].sort();
  const part = (key) => ({ stage: splitKey(key)[0], seconds: timings[key] });
  if (!languages.length) return shared.length ? [{ language: null, parts: shared.map(part) }] : [];
  return languages.map((language) => ({
    language,
    parts: [...shared, ...keys.filter((k) => splitKey(k)[1] === language).sort(byStage)].map(part),
  }));
}

/** The value at quantile `q` of sorted `values` (nearest rank). */
function quantile(sorted, q) {
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)];
}

/** Each ledger key over a call's lines: how many lines have it, its median and p95. */
export function ledgerSummary(transcript) {
  const values = new Map();
  for (const segment of transcript) {
    for (const [key, seconds] of Object.entries(segment.timings ?? {})) {
      if (!STAGE_ORDER.has(splitKey(key)[0])) continue;
      if (!values.has(key)) values.set(key, []);
      values.get(key).push(seconds);
    }
  }
  return [...values.keys()].sort(byStage).map((key) => {
    const sorted = values.get(key).sort((a, b) => a - b);
    const [stage, language] = splitKey(key);
    return {
      key,
      stage,
      language,
      count: sorted.length,
      median: quantile(sorted, 0.5),
      p95: quantile(sorted, 0.95),
    };
  });
}

/** Seconds as "0.81 s". */
export function formatSeconds(seconds) {
  return `${seconds.toFixed(2)} s`;
}
