// Admin console: sign in, find conversations, play a recording against its transcript.
//
// Routes live in the hash so that reload and back work without server routes:
//   #/?q=...&room=...            the list, its search and filters
//   #/conversations/{id}         one conversation
//   #/conversations/{id}?segment=ID   the same, cued at a segment (from a search snippet)
// Every text from the API goes into the DOM through textContent, never as HTML.

import {
  describeRecording,
  formatClock,
  formatDuration,
  formatSeconds,
  highlightTerms,
  ledgerSummary,
  playable,
  STAGE_LABELS,
} from "./admin/format.js";
import { Timeline } from "./admin/timeline.js";

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 25;
const FILTERS = ["q", "from", "to", "room", "participant", "mode", "language", "has_recording"];

class Unauthorized extends Error {}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    credentials: "same-origin",
    headers: { Accept: "application/json", ...options.headers },
  });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      if (typeof body.detail === "string") detail = body.detail;
      else if (body.detail) detail = JSON.stringify(body.detail);
    } catch {
      // Not JSON (a proxy's error page): the status line says enough.
    }
    throw new ApiError(response.status, `${response.status} ${detail}`.trim());
  }
  return response.status === 204 ? null : response.json();
}

// ---- page chrome ---------------------------------------------------------------------------

let signedIn = false;
// Each navigation gets a number; a response that arrives after the next navigation is dropped.
let view = 0;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function show(section) {
  for (const id of ["login", "list", "detail"]) $(id).hidden = id !== section;
  $("logout").hidden = section === "login";
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function localTime(iso, timeStyle = "medium") {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle });
}

// LiveKit's participant kinds, in an admin's words.
const KINDS = {
  standard: "caller",
  agent: "AI agent",
  egress: "recorder",
  sip: "phone",
  ingress: "stream",
};

const languageNames = (() => {
  try {
    return new Intl.DisplayNames(undefined, { type: "language" });
  } catch {
    return null;
  }
})();

function languageName(code) {
  try {
    return languageNames?.of(code) ?? code;
  } catch {
    return code;
  }
}

function languageTag(code) {
  return el("abbr", { class: "lang", title: languageName(code), text: code.toUpperCase() });
}

function statusBadge(recording) {
  const { label, tone } = describeRecording(recording);
  return el("span", { class: `badge ${tone}`, text: label });
}

function signedOut(message = "") {
  const wasSignedIn = signedIn;
  signedIn = false;
  timeline.unload();
  show("login");
  $("login-error").textContent = wasSignedIn ? message || "Your session ended; sign in again." : "";
  $("login-error").hidden = !$("login-error").textContent;
  document.title = "Sign in · Kaiwa admin";
  $("login-form").password.focus();
}

function failed(err, where) {
  if (err instanceof Unauthorized) {
    signedOut();
    return;
  }
  where.textContent = `Something went wrong: ${err.message}`;
  where.classList.add("error");
}

// ---- sign in and out -----------------------------------------------------------------------

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const message = $("login-error");
  message.hidden = true;
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const response = await fetch("/api/admin/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ password: form.password.value }),
    });
    if (response.ok) {
      // The session is the HttpOnly cookie the response set; the token in the body is for
      // scripts, and this page keeps none where other scripts could read it.
      form.reset();
      signedIn = true;
      route();
      return;
    }
    if (response.status === 401) message.textContent = "Wrong password.";
    else if (response.status === 429) {
      const wait = response.headers.get("Retry-After");
      message.textContent = `Too many attempts. Try again${wait ? ` in ${wait} s` : " later"}.`;
    } else message.textContent = `Could not sign in (the server said ${response.status}).`;
  } catch (err) {
    message.textContent = `Could not reach the server: ${err.message}`;
  } finally {
    button.disabled = false;
  }
  message.hidden = false;
  form.password.select();
});

$("logout").addEventListener("click", async () => {
  try {
    await api("/api/admin/session", { method: "DELETE" });
  } catch (err) {
    if (!(err instanceof Unauthorized)) showError(`Could not sign out: ${err.message}`);
  }
  signedIn = false;
  signedOut();
  history.replaceState(null, "", "#/");
});

// ---- the list ------------------------------------------------------------------------------

// `notice` is said once above the next list shown (after a deletion, say).
const list = { params: null, cursor: null, loading: false, notice: "" };

function filtersFromForm(form) {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

function fillForm(form, params) {
  for (const name of FILTERS) form.elements[name].value = params.get(name) ?? "";
  // Open the filters when one is set, so a reloaded page shows why results are few.
  if (FILTERS.some((name) => name !== "q" && params.has(name))) $("more-filters").open = true;
}

// The form's dates are local calendar days; the API filters on instants, `to` exclusive.
function apiQuery(params) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  for (const [name, value] of params) {
    if (name === "from") query.set("from", new Date(`${value}T00:00:00`).toISOString());
    else if (name === "to") {
      const end = new Date(`${value}T00:00:00`);
      end.setDate(end.getDate() + 1);
      query.set("to", end.toISOString());
    } else query.set(name, value);
  }
  return query;
}

$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  const hash = `#/?${filtersFromForm(event.target)}`.replace(/\?$/, "");
  if (location.hash === hash) route();
  else location.hash = hash;
});

$("filters").addEventListener("reset", () => {
  // After the reset has cleared the fields: keep the search words, drop the filters.
  setTimeout(() => {
    const q = $("filters").elements.q.value.trim();
    location.hash = q ? `#/?${new URLSearchParams({ q })}` : "#/";
  });
});

// Any filter change applies at once; typing in text fields waits for Enter or Search.
for (const name of ["from", "to", "mode", "has_recording"]) {
  $("filters").elements[name].addEventListener("change", () => $("filters").requestSubmit());
}

async function showList(params) {
  const mine = ++view;
  show("list");
  const q = params.get("q");
  document.title = q ? `“${q}” · Kaiwa admin` : "Conversations · Kaiwa admin";
  fillForm($("filters"), params);
  list.params = params;
  list.cursor = null;
  $("results").tBodies[0].replaceChildren();
  $("results").hidden = true;
  $("load-more").hidden = true;
  setListStatus("Loading…");
  await loadPage(mine);
}

function setListStatus(text, isError = false) {
  $("list-status").textContent = text;
  $("list-status").classList.toggle("error", isError);
}

async function loadPage(mine) {
  list.loading = true;
  $("load-more").disabled = true;
  const query = apiQuery(list.params);
  if (list.cursor) query.set("cursor", list.cursor);
  let page;
  try {
    page = await api(`/api/conversations?${query}`);
  } catch (err) {
    if (mine !== view) return;
    if (err instanceof Unauthorized) return signedOut();
    // 422 is the server saying what is wrong with the search or a filter, in words.
    const invalid = err instanceof ApiError && err.status === 422;
    const reason = invalid ? err.message.replace(/^422 /, "") : err.message;
    setListStatus(`Could not load conversations: ${reason}`, true);
    $("load-more").disabled = false;
    return;
  } finally {
    list.loading = false;
  }
  if (mine !== view) return;
  signedIn = true;
  const body = $("results").tBodies[0];
  const terms = list.params.get("q") ?? "";
  for (const item of page.items) body.append(...resultRows(item, terms));
  const shown = body.querySelectorAll("tr.conversation").length;
  $("results").hidden = shown === 0;
  list.cursor = page.next_cursor;
  $("load-more").hidden = !page.next_cursor;
  $("load-more").disabled = false;
  const filtered = [...list.params.keys()].length > 0;
  if (shown === 0) {
    setListStatus(
      filtered
        ? "No conversations match. Try other words or fewer filters."
        : "No conversations yet. Calls appear here once they start.",
    );
  } else {
    const more = page.next_cursor ? " so far" : "";
    setListStatus(`${shown} conversation${shown === 1 ? "" : "s"}${more}.`);
  }
  if (list.notice) {
    setListStatus(`${list.notice} ${$("list-status").textContent}`);
    list.notice = "";
  }
}

$("load-more").addEventListener("click", () => {
  if (!list.loading) loadPage(view);
});

function resultRows(item, terms) {
  const href = `#/conversations/${encodeURIComponent(item.id)}`;
  const cell = (label, ...content) => el("td", { "data-label": label }, ...content);
  const languages = el("span", { class: "tags" }, ...item.languages.map(languageTag));
  const duration = item.ended_at ? formatDuration(item.duration_s) : "in progress";
  const row = el(
    "tr",
    { class: "conversation", "data-id": item.id },
    cell("Started", el("a", { href, text: localTime(item.started_at, "short") })),
    cell("Room", el("span", { class: "mono", text: item.room_name })),
    cell("Mode", item.mode ?? "—"),
    cell("Participants", participantNames(item.participants) || "—"),
    cell("Languages", languages),
    cell("Duration", duration),
    cell("Recording", recordingCell(item)),
  );
  // The whole row opens the conversation; the link in it stays the keyboard's way in.
  row.addEventListener("click", (event) => {
    if (!event.target.closest("a") && !window.getSelection()?.toString()) location.hash = href;
  });
  const rows = [row];
  if (item.matches?.length) {
    const snippets = el("ul", { class: "snippets plain" });
    for (const match of item.matches) {
      const link = el(
        "a",
        { href: `${href}?segment=${encodeURIComponent(match.segment_id)}` },
        el("span", { class: "time", text: formatClock(match.start_s) }),
        " ",
      );
      const text = el("q", { lang: match.language ?? null });
      text.append(...highlightTerms(match.text, terms));
      link.append(text);
      snippets.append(el("li", {}, link));
    }
    rows.push(
      el(
        "tr",
        { class: "matches", "data-id": item.id },
        el("td", { colSpan: 7, "data-label": "Said" }, snippets),
      ),
    );
  }
  return rows;
}

// The list carries identities. `recorder-` is reserved for the recorder (api/tokens.py), a
// hidden participant that is no one an admin is looking for. Names and kinds are used if
// the list ever carries them.
function participantNames(participants) {
  return participants
    .map((p) => (typeof p === "string" ? p : p.name || p.identity))
    .join(", ");
}

function recordingCell(item) {
  if (!item.recording_status) return el("span", { class: "badge none", text: "None" });
  const badge = statusBadge({ status: item.recording_status, partial: item.recording_partial });
  if (!item.has_recording && item.recording_status !== "active") {
    return el("span", {}, badge, el("span", { class: "note", text: " no file" }));
  }
  return badge;
}

// ---- one conversation ----------------------------------------------------------------------

const timeline = new Timeline({
  audio: $("player"),
  transcript: $("transcript"),
  note: $("player-note"),
});

let current = null;

async function showDetail(id, params) {
  const mine = ++view;
  show("detail");
  timeline.unload();
  $("detail-body").hidden = true;
  $("detail-title").textContent = "Conversation";
  $("detail-status").textContent = "Loading…";
  $("detail-status").classList.remove("error");
  let conversation;
  try {
    conversation = await api(`/api/conversations/${encodeURIComponent(id)}`);
  } catch (err) {
    if (mine !== view) return;
    if (err instanceof ApiError && err.status === 404) {
      $("detail-status").textContent = "No such conversation: it may have been deleted.";
      return;
    }
    failed(err, $("detail-status"));
    return;
  }
  if (mine !== view) return;
  signedIn = true;
  current = conversation;
  renderDetail(conversation);
  const cue = params.get("segment");
  if (cue) timeline.cue(cue);
}

function renderDetail(c) {
  const when = localTime(c.started_at);
  $("detail-title").textContent = `${c.room_name} · ${when}`;
  document.title = `${c.room_name} · Kaiwa admin`;
  $("detail-status").textContent = "";

  // Transcripts and recordings name a phone caller with the number masked; only the
  // participants card below shows it whole.
  const names = new Map(
    c.participants.map((p) => [p.masked_identity, p.masked_name || p.masked_identity]),
  );
  const meta = [
    ["Started", when],
    ["Ended", c.ended_at ? localTime(c.ended_at) : "in progress"],
    ["Duration", c.ended_at ? formatDuration(c.duration_s) : "—"],
    ["Mode", c.mode ?? "—"],
    ["Room", c.room_name],
    ["Room SID", c.room_sid],
    ["Languages", c.languages.map(languageName).join(", ") || "—"],
    ["Segments", String(c.segment_count ?? c.transcript.length)],
  ];
  $("meta").replaceChildren(
    ...meta.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
  );

  // The recorder is a hidden participant; its work is listed under Recordings.
  const people = c.participants.filter((p) => p.kind !== "egress");
  $("participants").replaceChildren(
    ...people.map((p) =>
      el(
        "li",
        {},
        el("strong", { text: p.name || p.identity }),
        p.name && p.name !== p.identity
          ? el("span", { class: "mono note", text: ` ${p.identity}` })
          : null,
        el("span", { class: "note", text: ` · ${KINDS[p.kind] ?? p.kind}` }),
        p.language ? el("span", { class: "note", text: ` · ${languageName(p.language)}` }) : null,
      ),
    ),
  );
  if (!people.length) $("participants").append(el("li", { class: "note", text: "None recorded." }));

  $("summary").textContent = c.summary || "No summary for this call.";
  $("summary").classList.toggle("note", !c.summary);
  const usage = Object.entries(c.usage ?? {});
  $("usage").replaceChildren(
    ...usage.flatMap(([k, v]) => [
      el("dt", { text: k.replaceAll("_", " ") }),
      el("dd", { text: typeof v === "number" ? v.toLocaleString("en") : JSON.stringify(v) }),
    ]),
  );
  if (!usage.length) $("usage").append(el("dd", { class: "note", text: "No usage recorded." }));

  renderLatency(c.transcript);

  $("recordings").replaceChildren(...c.recordings.map((r) => recordingItem(r, names)));
  // With none, the player's card already says the call was not recorded.
  $("recordings").closest("section").hidden = !c.recordings.length;

  const base = `/api/conversations/${encodeURIComponent(c.id)}/export?format=`;
  for (const format of ["json", "vtt", "txt"]) {
    $(`export-${format}`).href = base + format;
    $(`export-${format}`).download = `kaiwa-${c.room_name}-${c.id.slice(0, 8)}.${format}`;
  }

  timeline.load(c, names);
  $("transcript-empty").hidden = c.transcript.length > 0;
  $("transcript-help").hidden = !c.transcript.length || !timeline.sources.length;
  $("detail-body").hidden = false;
}

/** The call's latency, stage by stage over its lines: the ledger's medians and p95. */
function renderLatency(transcript) {
  const rows = ledgerSummary(transcript).map((row) => {
    const label = STAGE_LABELS.get(row.stage) + (row.language ? ` (${row.language.toUpperCase()})` : "");
    const stage = el("td", {}, el("span", { class: `swatch stage-${row.stage}` }), label);
    return el(
      "tr",
      {},
      stage,
      el("td", { text: String(row.count) }),
      el("td", { text: formatSeconds(row.median) }),
      el("td", { text: formatSeconds(row.p95) }),
    );
  });
  $("latency").querySelector("tbody").replaceChildren(...rows);
  $("latency").hidden = !rows.length;
  $("latency-empty").hidden = rows.length > 0;
}

function recordingItem(r, names) {
  const who =
    r.kind === "room"
      ? "Room mix"
      : (names.get(r.participant_identity) ?? r.participant_identity ?? "Track");
  const facts = [];
  if (r.duration_s != null) facts.push(formatDuration(r.duration_s));
  if (r.size != null) facts.push(`${(r.size / 1024).toFixed(0)} KiB`);
  if (r.started_at) facts.push(`from ${new Date(r.started_at).toLocaleTimeString()}`);
  const item = el(
    "li",
    { class: "recording", "data-id": r.id },
    el("div", { class: "recording-head" }, el("span", { text: who }), statusBadge(r)),
  );
  const details = el("div", { class: "note small", text: facts.join(" · ") });
  if (playable(r)) {
    const href = `/api/recordings/${encodeURIComponent(r.id)}/audio`;
    details.append(facts.length ? " · " : "", el("a", { href, download: "", text: "Download" }));
  }
  item.append(details);
  if (r.error) item.append(el("p", { class: "error small", text: r.error }));
  return item;
}

$("delete").addEventListener("click", async () => {
  if (!current) return;
  const sure = window.confirm(
    `Delete the conversation in ${current.room_name}, with its transcript and recordings? ` +
      "This cannot be undone.",
  );
  if (!sure) return;
  $("delete").disabled = true;
  try {
    await api(`/api/conversations/${encodeURIComponent(current.id)}`, { method: "DELETE" });
    list.notice = `Deleted the conversation in ${current.room_name}.`;
    timeline.unload();
    location.hash = "#/";
  } catch (err) {
    if (err instanceof Unauthorized) signedOut();
    else showError(`Could not delete: ${err.message}`);
  } finally {
    $("delete").disabled = false;
  }
});

// ---- routing -------------------------------------------------------------------------------

function parseHash() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const at = hash.indexOf("?");
  const path = at < 0 ? hash : hash.slice(0, at);
  const params = new URLSearchParams(at < 0 ? "" : hash.slice(at + 1));
  return { path, params };
}

function route() {
  showError("");
  const { path, params } = parseHash();
  const match = path.match(/^\/conversations\/([^/]+)$/);
  if (match) showDetail(decodeURIComponent(match[1]), params);
  else {
    timeline.unload();
    current = null;
    showList(params);
  }
}

window.addEventListener("hashchange", route);
route();
