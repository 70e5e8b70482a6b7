// Caller page: join a call, talk, read live captions, and keep them across reloads.
//
// A call in progress is kept in sessionStorage (room, identity, choices). A reload finds it
// and rejoins the same room as the same identity; so does a connection that LiveKit could
// not resume. Each (re)join subscribes to live captions before connecting, then reads the
// transcript so far from the history API: the two are merged by segment id (captions.js).
// Every text from the server goes into the DOM through textContent, never as HTML.
//
// A caller can also type (call/chat.js): a message is a row like a spoken line, under the id
// the agent captions and stores it by, so it too merges with the history on a reload.

import {
  ConnectionQuality,
  ConnectionState,
  DisconnectReason,
  MediaDeviceFailure,
  ParticipantKind,
  Room,
  RoomEvent,
  Track,
  createAudioAnalyser,
} from "livekit-client";

import { wantsAudio } from "./call/audio.js";
import { CaptionBook, TOPIC } from "./call/captions.js";
import {
  MAX_MESSAGE_CHARS,
  NOTICE_TOPIC,
  Outbox,
  TypingSignal,
  rowId,
} from "./call/chat.js";
import { watchMediaPath } from "./call/media-path.js";

const $ = (id) => document.getElementById(id);
const SAVED_CALL = "kaiwa.call";
const SAVED_OUTBOX = "kaiwa.outbox";
const TYPING = "kaiwa.typing";
const STATE_LABELS = {
  initializing: "starting…",
  listening: "listening",
  thinking: "thinking…",
  translating: "translating…",
  speaking: "speaking",
};
// A finished segment's translations and the stored copy of a line said just before a reload
// reach the history a moment after the live caption: look again until they are there.
const BACKFILL_RETRY_MS = 1000;
const BACKFILL_ATTEMPTS = 30;
const REJOIN_DELAYS_MS = [500, 1000, 2000, 4000, 8000];
// LiveKit's own retries resume a dropped connection on the same node. When they have not
// within RESUME_FOR_MS, the page joins again through the API, which sends it to a node that
// answers: a dead node's callers move to another in seconds, not after LiveKit's ~45 s of
// retries against the dead one.
const RESUME_FOR_MS = 6000;
const RESUME_DELAYS_MS = [0, 300, 1200, 2700];
const reconnectPolicy = {
  nextRetryDelayInMs: ({ retryCount, elapsedMs }) =>
    elapsedMs < RESUME_FOR_MS
      ? RESUME_DELAYS_MS[Math.min(retryCount, RESUME_DELAYS_MS.length - 1)]
      : null,
};

let call = null; // {name, mode, language, scenario, room, identity, startedAt}
let room = null;
let grant = null; // the token answer the current connection used
let leaving = false;
let meter = null;
let mediaStalled = false; // ICE hears nothing back, though LiveKit has not noticed yet
const captions = new CaptionBook(renderCaptions);
let outbox = null; // this call's typed messages not yet known to have arrived
const typing = new TypingSignal((on) => asCaller("PUT", "/api/call/typing", { typing: on }));
const names = new Map(); // identity → display name, for caption rows
const AGENT_NAME = "Kaiwa";

function displayName(identity) {
  return names.get(identity) || (identity.startsWith("agent-") ? AGENT_NAME : identity);
}

function remember(participant) {
  const agent = participant.kind === ParticipantKind.AGENT;
  names.set(participant.identity, agent ? AGENT_NAME : participant.name || participant.identity);
}

// ---- messages --------------------------------------------------------------------------

function showError(message, retry = null) {
  $("error-text").textContent = message;
  $("error").hidden = !message;
  $("retry").hidden = !retry;
  $("retry").onclick = retry
    ? () => {
        showError("");
        retry();
      }
    : null;
}

class ApiUnreachable extends Error {}

async function requestToken(body) {
  let response;
  try {
    response = await fetch("/api/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch {
    throw new ApiUnreachable("Kaiwa's server cannot be reached. Check your connection.");
  }
  if (response.ok) return response.json();
  let detail = "";
  try {
    const payload = await response.json();
    detail = typeof payload.detail === "string" ? payload.detail : "";
  } catch {
    // A proxy's error page: the status says enough.
  }
  if (response.status === 404) throw new Error(detail || "There is no call with that room code.");
  if (response.status === 409) throw new Error(detail || "That call is full.");
  if (response.status === 429) {
    // The server says which limit (token requests, or calls held from this address).
    const wait = response.headers.get("Retry-After") || "a few";
    const why = detail ? detail[0].toUpperCase() + detail.slice(1) : "Too many attempts";
    throw new Error(`${why} (in ${wait} seconds).`);
  }
  if (response.status >= 500) {
    throw new ApiUnreachable(`Kaiwa's server is unavailable (${response.status}).`);
  }
  throw new Error(detail || `The server refused the request (${response.status}).`);
}

// A change the API makes on the caller's behalf, proven by the call's rejoin ticket.
async function asCaller(method, path, body = undefined) {
  const response = await fetch(path, {
    method,
    headers: {
      Authorization: `Bearer ${call.rejoin}`,
      ...(body ? { "Content-Type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
}

// ---- joining ---------------------------------------------------------------------------

function tokenRequest(saved) {
  const body = { name: saved.name, mode: saved.mode, language: saved.language };
  if (saved.room) body.room = saved.room;
  // Rejoining as the same identity needs the ticket that came with the first token.
  if (saved.identity && saved.rejoin) {
    body.identity = saved.identity;
    body.rejoin = saved.rejoin;
  }
  if (saved.scenario && saved.mode === "dialog") body.scenario = saved.scenario;
  return body;
}

async function join(request) {
  showError("");
  $("join-button").disabled = true;
  try {
    grant = await requestToken(tokenRequest(request));
  } catch (err) {
    $("join-button").disabled = false;
    showError(err.message, err instanceof ApiUnreachable ? () => join(request) : null);
    return;
  }
  call = {
    ...request,
    room: grant.room,
    identity: grant.identity,
    rejoin: grant.rejoin,
    startedAt: request.startedAt || Date.now(),
  };
  sessionStorage.setItem(SAVED_CALL, JSON.stringify(call));
  outbox ??= new Outbox(SAVED_OUTBOX, renderCaptions);
  for (const m of outbox.messages) captions.typed(rowId(m.id), m.speaker, m.language, m.text);
  showCall();
  try {
    await connect();
  } catch (err) {
    $("join-button").disabled = false;
    showError(`Could not join the call: ${err.message}`, () => join(call));
    return;
  }
  await enableMicrophone();
}

function newRoom() {
  const r = new Room({ adaptiveStream: false, dynacast: false, reconnectPolicy });
  // Before connecting, so no caption sent after the join is missed.
  r.registerTextStreamHandler(TOPIC, readCaption);
  r.registerTextStreamHandler(NOTICE_TOPIC, readNotice);
  r.on(RoomEvent.TrackPublished, (publication, participant) => {
    updateSubscription(participant, publication);
  })
    .on(RoomEvent.TrackSubscribed, attachAudio)
    .on(RoomEvent.TrackUnsubscribed, (_track, publication) => removeAudio(publication))
    .on(RoomEvent.LocalTrackPublished, (publication) => {
      if (publication.kind === Track.Kind.Audio) startMeter(publication.track);
      updateAllSubscriptions();
    })
    .on(RoomEvent.ParticipantConnected, (p) => {
      remember(p);
      renderState();
    })
    .on(RoomEvent.ParticipantDisconnected, renderState)
    .on(RoomEvent.ParticipantAttributesChanged, (changed) => {
      if ("language" in changed) updateAllSubscriptions();
      renderState();
    })
    .on(RoomEvent.ActiveSpeakersChanged, renderPeople)
    .on(RoomEvent.TrackMuted, renderPeople)
    .on(RoomEvent.TrackUnmuted, renderPeople)
    .on(RoomEvent.ConnectionQualityChanged, (quality, participant) => {
      if (participant === r.localParticipant) renderQuality(quality);
    })
    .on(RoomEvent.ConnectionStateChanged, renderConnection)
    .on(RoomEvent.Reconnected, () => {
      backfill();
      sendOwed();
    })
    .on(RoomEvent.AudioPlaybackStatusChanged, () => {
      $("start-audio").hidden = r.canPlaybackAudio;
    })
    .on(RoomEvent.MediaDevicesError, (err) => microphoneFailed(err))
    .on(RoomEvent.Disconnected, (reason) => disconnected(r, reason));
  return r;
}

async function connect() {
  room = newRoom();
  await room.connect(grant.url, grant.token, { autoSubscribe: false });
  for (const p of room.remoteParticipants.values()) remember(p);
  names.set(room.localParticipant.identity, `${call.name} (you)`);
  renderConnection(room.state);
  renderState();
  $("start-audio").hidden = room.canPlaybackAudio;
  updateAllSubscriptions();
  backfill();
  // A new connection is a new participant session, with the token's attributes only.
  if (call.voiceReplies === false) setVoiceReplies(false);
  sendOwed();
}

async function enableMicrophone() {
  try {
    await room.localParticipant.setMicrophoneEnabled(true);
    showError("");
  } catch (err) {
    microphoneFailed(err);
  }
  renderMute();
  await listMicrophones();
}

function microphoneFailed(err) {
  const failure = MediaDeviceFailure.getFailure(err);
  const message =
    failure === MediaDeviceFailure.PermissionDenied
      ? "Microphone access was denied. Allow it for this site in your browser, then try again."
      : failure === MediaDeviceFailure.NotFound
        ? "No microphone was found. Connect one, then try again."
        : failure === MediaDeviceFailure.DeviceInUse
          ? "The microphone is in use by another application."
          : `The microphone could not be started: ${err.message}`;
  showError(message, () => enableMicrophone());
}

// LiveKit resumes a dropped connection by itself; when it cannot (a long outage, a server
// restart), the room disconnects and the page joins again as the same identity.
async function disconnected(r, reason) {
  if (r !== room || leaving) return;
  if (reason === DisconnectReason.DUPLICATE_IDENTITY) {
    showError("This call was opened in another tab or window.");
    return;
  }
  if (reason === DisconnectReason.ROOM_DELETED) {
    endCall(); // the agent ended the call (idle, or its time limit)
    return;
  }
  if (reason === DisconnectReason.PARTICIPANT_REMOVED) {
    endCall();
    showError("You were removed from this call.");
    return;
  }
  renderConnection(ConnectionState.Reconnecting);
  for (const delay of REJOIN_DELAYS_MS) {
    await new Promise((resolve) => setTimeout(resolve, delay));
    if (leaving) return;
    try {
      grant = await requestToken(tokenRequest(call));
    } catch (err) {
      if (err instanceof ApiUnreachable) continue;
      showError(err.message); // the call is over, or full: nothing to retry
      return;
    }
    try {
      await connect();
      await enableMicrophone();
      return;
    } catch {
      // LiveKit still unreachable: wait and try again.
    }
  }
  showError("The connection could not be restored.", () => join(call));
}

// ---- history backfill ------------------------------------------------------------------

// Reads the call's transcript so far and merges it into the captions. Repeats while a row
// is missing what the history will hold (see BACKFILL_RETRY_MS).
async function backfill(attempt = 0) {
  const current = grant;
  let segments = [];
  try {
    const response = await fetch("/api/call/transcript", {
      headers: { Authorization: `Bearer ${current.token}` },
    });
    if (response.ok) segments = (await response.json()).segments;
    else if (response.status !== 404) throw new Error(String(response.status));
  } catch {
    // The history is a backfill: live captions go on without it, and we try again below.
  }
  if (current !== grant) return; // a newer connection does its own
  captions.fromHistory(segments);
  for (const s of segments) outbox?.delivered(s.id);
  // A translation whose source line is not here yet: said just before this (re)join.
  const incomplete = [...captions.rows.values()].some((row) => !row.text);
  if (incomplete && attempt < BACKFILL_ATTEMPTS) {
    setTimeout(() => backfill(attempt + 1), BACKFILL_RETRY_MS);
  }
}

// A caller's token may send text streams on any topic (its typed messages need it), so
// captions and notices are taken from agents only, and a stream from anyone else is not read
// at all: another caller could otherwise write rows of their own, or mark this page's
// message delivered by captioning its id. An agent sends as itself (kind AGENT), or, in a
// dialog, captions this caller's own words under this caller's identity. LiveKit lets only
// an agent send under another participant's identity (it overwrites anyone else's with their
// own), and this page never sends on these topics, so a stream under this page's identity
// is an agent's too.
function fromAgent(sender) {
  if (!room) return false;
  if (sender.identity === room.localParticipant.identity) return true;
  return room.remoteParticipants.get(sender.identity)?.kind === ParticipantKind.AGENT;
}

async function readCaption(reader, sender) {
  if (!fromAgent(sender)) return;
  let text = "";
  try {
    for await (const chunk of reader) {
      text += chunk;
      captions.fromStream(text, reader.info.attributes ?? {}, sender.identity);
    }
  } catch {
    // An aborted stream (the agent was interrupted): keep what arrived.
  }
  // The trailer's attributes (the final flag of a reply) are merged once the stream ends.
  const attributes = reader.info.attributes ?? {};
  captions.fromStream(text, attributes, sender.identity);
  // The agent captions a typed message once it has taken it.
  if (attributes["lk.segment_id"]) outbox?.delivered(attributes["lk.segment_id"]);
}

// A notice from an agent: about a message this page sent (why it was not taken), or about
// the call (a language with no voice, say).
async function readNotice(reader, sender) {
  if (!fromAgent(sender)) return;
  let text = "";
  try {
    text = await reader.readAll();
  } catch {
    return;
  }
  const about = reader.info.attributes?.["lk.segment_id"];
  if (about && outbox?.byRow(about)) {
    outbox.refused(about, text);
  } else {
    $("notice").textContent = text;
    $("notice").hidden = !text;
  }
}

// ---- typed messages --------------------------------------------------------------------

// Messages are sent when the page is connected and the browser online: typed offline, they
// wait (marked so) and go when the connection is back.
function sendOwed() {
  const connected = room?.state === ConnectionState.Connected && !mediaStalled;
  if (connected && navigator.onLine) outbox?.flush(room).then(retryOwedLater);
}

let retryTimer = null;
const RETRY_OWED_MS = 2000;

// A send that timed out on a connection that still looks up: try again shortly.
function retryOwedLater() {
  const owed = outbox?.messages.some((m) => m.state === "queued");
  if (!owed || retryTimer) return;
  retryTimer = setTimeout(() => {
    retryTimer = null;
    sendOwed();
  }, RETRY_OWED_MS);
}

function checkMessage() {
  const length = $("message").value.length;
  const tooLong = length > MAX_MESSAGE_CHARS;
  $("message-error").textContent = tooLong
    ? `A message can be at most ${MAX_MESSAGE_CHARS} characters; this one has ${length}.`
    : "";
  $("send").disabled = tooLong;
  return !tooLong;
}

function sendMessage() {
  const text = $("message").value.trim();
  if (!text || !checkMessage() || !call) return;
  const message = outbox.add(text, call.identity, call.language);
  captions.typed(rowId(message.id), call.identity, call.language, text);
  $("message").value = "";
  typing.sentMessage();
  sendOwed();
}

function setVoiceReplies(on) {
  call.voiceReplies = on;
  sessionStorage.setItem(SAVED_CALL, JSON.stringify(call));
  $("voice-replies").checked = on;
  asCaller("PUT", "/api/call/voice-replies", { on }).catch(() =>
    showError("Could not switch voice replies. Try again."),
  );
}

// ---- audio -----------------------------------------------------------------------------

function ownTrackSids() {
  const sids = new Set();
  for (const publication of room.localParticipant.trackPublications.values()) {
    sids.add(publication.trackSid);
  }
  return sids;
}

function updateSubscription(participant, publication, own = ownTrackSids()) {
  const wanted = wantsAudio({ ...call, ownTrackSids: own }, participant, publication);
  if (publication.isSubscribed === wanted) return;
  // Silence it now: the server's unsubscribe, which removes the track, comes later.
  if (!wanted) removeAudio(publication);
  publication.setSubscribed(wanted);
}

function updateAllSubscriptions() {
  if (!room) return;
  const own = ownTrackSids();
  for (const participant of room.remoteParticipants.values()) {
    for (const publication of participant.trackPublications.values()) {
      updateSubscription(participant, publication, own);
    }
  }
}

function attachAudio(track, publication, participant) {
  if (track.kind !== Track.Kind.Audio) return;
  removeAudio(publication); // one element per track, however often it is resubscribed
  const element = track.attach();
  element.dataset.trackSid = publication.trackSid;
  element.dataset.participant = participant.identity;
  element.dataset.trackName = publication.trackName;
  $("audio").append(element);
}

// By track sid, not by track object: a connection resumed after a drop may bring the same
// track back as a new object, and the old one's element would otherwise play on.
function removeAudio(publication) {
  publication.track?.detach();
  document
    .querySelectorAll(`#audio audio[data-track-sid="${publication.trackSid}"]`)
    .forEach((el) => el.remove());
}

// ---- controls --------------------------------------------------------------------------

function startMeter(track) {
  meter?.cleanup();
  meter = createAudioAnalyser(track, { cloneTrack: true });
  const bar = $("level");
  const draw = () => {
    if (!meter) return;
    const muted = !room?.localParticipant.isMicrophoneEnabled;
    bar.style.width = `${muted ? 0 : Math.min(100, Math.round(meter.calculateVolume() * 300))}%`;
    requestAnimationFrame(draw);
  };
  draw();
}

function renderMute() {
  const on = room?.localParticipant.isMicrophoneEnabled ?? false;
  $("mute").textContent = on ? "Mute" : "Unmute";
  $("mute").setAttribute("aria-pressed", String(!on));
}

async function listMicrophones() {
  const select = $("microphone");
  const devices = await Room.getLocalDevices("audioinput", false);
  const active = room?.getActiveDevice("audioinput");
  select.replaceChildren(
    ...devices.map((d, i) => {
      const option = new Option(d.label || `Microphone ${i + 1}`, d.deviceId);
      option.selected = d.deviceId === active;
      return option;
    }),
  );
}

function setLanguage(language) {
  call.language = language;
  sessionStorage.setItem(SAVED_CALL, JSON.stringify(call));
  // Agents read the attribute live: the interpreter starts a voice in the new language. The
  // API sets it (a caller's token cannot), after checking the language.
  asCaller("PUT", "/api/call/language", { language }).catch(() =>
    showError("Could not switch the language. Try again."),
  );
  updateAllSubscriptions();
  renderCaptions();
}

// ---- rendering -------------------------------------------------------------------------

function showCall() {
  $("join").hidden = true;
  $("summary").hidden = true;
  $("call").hidden = false;
  $("call").dataset.mode = call.mode;
  $("room-name").textContent = call.room;
  $("call-language").value = call.language;
  $("voice-replies").checked = call.voiceReplies !== false;
  document.querySelectorAll("#call [data-for-mode]").forEach((el) => {
    el.hidden = el.dataset.forMode !== call.mode;
  });
}

function renderConnection(state) {
  const shown =
    mediaStalled && state === ConnectionState.Connected ? ConnectionState.Reconnecting : state;
  const badge = $("connection");
  badge.hidden = false;
  badge.textContent = shown;
  badge.dataset.state = shown;
  $("reconnecting").hidden =
    shown !== ConnectionState.Reconnecting && shown !== ConnectionState.SignalReconnecting;
}

function renderQuality(quality) {
  const labels = {
    [ConnectionQuality.Excellent]: "excellent",
    [ConnectionQuality.Good]: "good",
    [ConnectionQuality.Poor]: "poor",
    [ConnectionQuality.Lost]: "lost",
  };
  const label = labels[quality] ?? "unknown";
  $("quality").dataset.quality = label;
  $("quality").textContent = `connection ${label}`;
}

function renderState() {
  const agent = room
    ? [...room.remoteParticipants.values()].find((p) => p.kind === ParticipantKind.AGENT)
    : null;
  const state = agent?.attributes?.["lk.agent.state"] ?? "";
  const badge = $("agent-state");
  badge.dataset.state = state;
  badge.textContent = agent ? STATE_LABELS[state] || state || "joined" : "waiting for the agent…";
  renderPeople();
}

const LANGUAGE_LABELS = { en: "English", ja: "日本語", vi: "Tiếng Việt" };

// Who is in the call, people and agents, each with their language and what they are doing.
function personState(participant) {
  if (participant.kind === ParticipantKind.AGENT) {
    const state = participant.attributes?.["lk.agent.state"] ?? "";
    return STATE_LABELS[state] || state || "joined";
  }
  if (participant.attributes?.[TYPING] === "true") return "typing…";
  if (participant.isSpeaking) return "speaking";
  if (!participant.isMicrophoneEnabled) return "muted";
  return "";
}

function renderPeople() {
  if (!room) return;
  const everyone = [room.localParticipant, ...room.remoteParticipants.values()];
  const items = everyone.map((p) => {
    const li = document.createElement("li");
    li.dataset.identity = p.identity;
    const state = personState(p);
    li.dataset.state = state.replace("…", "");
    const who = document.createElement("span");
    who.className = "name";
    who.textContent = p === room.localParticipant ? `${call.name} (you)` : displayName(p.identity);
    li.append(who);
    const language = p.attributes?.language;
    if (language && p.kind !== ParticipantKind.AGENT) {
      const tag = document.createElement("span");
      tag.className = "lang";
      tag.textContent = LANGUAGE_LABELS[language] || language;
      li.append(tag);
    }
    if (p.kind === ParticipantKind.SIP) li.append(" ☎");
    if (state) {
      const shown = document.createElement("span");
      shown.className = "state";
      shown.textContent = state;
      li.append(shown);
    }
    return li;
  });
  $("people").replaceChildren(...items);
  $("people-count").textContent = `(${items.length})`;
  const typists = [...room.remoteParticipants.values()]
    .filter((p) => p.attributes?.[TYPING] === "true")
    .map((p) => displayName(p.identity));
  $("typing").textContent =
    typists.length === 0
      ? ""
      : typists.length === 1
        ? `${typists[0]} is typing…`
        : `${typists.join(", ")} are typing…`;
}

// A caption row as this caller reads it: others' words in the caller's language when a
// translation exists, with the original beside it on request; the caller's own as said.
function captionView(row) {
  const own = row.speaker === call?.identity;
  const translated = own ? undefined : row.translations[call?.language];
  const foreign = row.language && row.language !== call?.language;
  return {
    text: translated ?? row.text,
    original: translated !== undefined && foreign ? row.text : "",
    // Speech heard in another language than its speaker set is not translated: no wait.
    pending: !own && foreign && translated === undefined && !row.otherLanguage,
  };
}

// Where a typed message of this page is, until the agent has it.
function deliveryNote(message, id) {
  const note = document.createElement("span");
  note.className = `delivery ${message.state}`;
  const labels = {
    queued: "waiting for the connection…",
    sending: "sending…",
    sent: "sent",
    failed: "not sent",
    refused: message.notice || "not taken",
  };
  note.textContent = labels[message.state] ?? message.state;
  if (message.state === "failed" || message.state === "refused") {
    const retry = document.createElement("button");
    retry.type = "button";
    retry.textContent = "Retry";
    retry.onclick = () => {
      outbox.retry(id);
      sendOwed();
    };
    note.append(retry);
  }
  return note;
}

function renderCaptions() {
  const list = $("captions");
  const showOriginal = $("show-original").checked;
  const items = captions.ordered().map((row) => {
    const view = captionView(row);
    const li = document.createElement("li");
    li.dataset.segmentId = row.id;
    li.dataset.final = String(row.final);
    li.dataset.speaker = row.speaker;
    li.classList.toggle("interim", !row.final);
    li.classList.toggle("own", row.speaker === call?.identity);
    // Typed by a person. (An agent's reply of kind text was written and not spoken.)
    li.classList.toggle("typed", row.kind === "text" && !row.speaker.startsWith("agent-"));
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = displayName(row.speaker);
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = view.text || "…";
    li.append(who, text);
    if (view.pending) li.classList.add("pending");
    if (showOriginal && view.original) {
      const original = document.createElement("span");
      original.className = "original";
      original.lang = row.language;
      original.textContent = view.original;
      li.append(original);
    }
    if (row.otherLanguage) {
      const heard = document.createElement("span");
      heard.className = "heard-as";
      heard.textContent = `heard in ${row.language.toUpperCase()}, not translated`;
      li.append(heard);
    }
    const sent = outbox?.byRow(row.id);
    if (sent) li.append(deliveryNote(sent, row.id));
    return li;
  });
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(...items);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// ---- ending ----------------------------------------------------------------------------

function transcriptText() {
  return captions
    .ordered()
    .filter((row) => row.final)
    .map((row) => `${displayName(row.speaker)}: ${captionView(row).text}`)
    .join("\n");
}

function formatDuration(ms) {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
}

function endCall() {
  const ended = call;
  leaving = true;
  meter?.cleanup();
  meter = null;
  sessionStorage.removeItem(SAVED_CALL);
  sessionStorage.removeItem(SAVED_OUTBOX);
  outbox = null;
  $("message").value = "";
  $("call").hidden = true;
  $("connection").hidden = true;
  $("summary").hidden = false;
  $("summary-room").textContent = ended.room;
  $("summary-duration").textContent = formatDuration(Date.now() - ended.startedAt);
  const lines = transcriptText();
  $("summary-transcript").replaceChildren(
    ...lines
      .split("\n")
      .filter(Boolean)
      .map((line) => {
        const li = document.createElement("li");
        li.textContent = line;
        return li;
      }),
  );
  const link = $("download");
  URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([`${lines}\n`], { type: "text/plain" }));
  link.download = `kaiwa-${ended.room}.txt`;
}

// ---- wiring ----------------------------------------------------------------------------

async function loadScenarios() {
  try {
    const response = await fetch("/api/scenarios");
    if (!response.ok) return;
    const select = document.querySelector("#join select[name=scenario]");
    select.replaceChildren(...(await response.json()).map((s) => new Option(s.title, s.id)));
  } catch {
    // The join itself reports an unreachable server.
  }
}

function showJoinFields() {
  const mode = new FormData($("join")).get("mode");
  document.querySelectorAll("#join [data-for-mode]").forEach((el) => {
    el.hidden = el.dataset.forMode !== mode;
  });
}

// The browser knows the network is gone before LiveKit's pings time out: say so at once.
// When it returns, LiveKit resumes the connection and its state change clears the banner.
window.addEventListener("offline", () => {
  if (room && !leaving) renderConnection(ConnectionState.Reconnecting);
});
window.addEventListener("online", () => sendOwed());
setInterval(() => {
  if (outbox?.overdue()) sendOwed();
}, 1000);
// A stall LiveKit does not see (a server that stops answering) shows at once; when the path
// is back, the history fills in any caption lost meanwhile.
watchMediaPath((stalled) => {
  mediaStalled = stalled;
  if (!room || leaving) return;
  renderConnection(room.state);
  if (!stalled) {
    backfill();
    sendOwed();
  }
});
$("join").addEventListener("change", showJoinFields);
$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = Object.fromEntries(new FormData(event.target));
  leaving = false;
  join({
    name: form.name.trim(),
    mode: form.mode,
    language: form.language,
    scenario: form.scenario || null,
    room: form.mode === "interpret" ? form.room.trim() || null : null,
  });
});
$("mute").addEventListener("click", async () => {
  const on = room.localParticipant.isMicrophoneEnabled;
  await room.localParticipant.setMicrophoneEnabled(!on);
  renderMute();
});
$("microphone").addEventListener("change", (e) =>
  room?.switchActiveDevice("audioinput", e.target.value),
);
$("call-language").addEventListener("change", (e) => setLanguage(e.target.value));
$("show-original").addEventListener("change", renderCaptions);
$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage();
});
$("message").addEventListener("keydown", (event) => {
  // Enter sends; Shift+Enter (and an IME's Enter that commits a conversion) goes on.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendMessage();
  }
});
$("message").addEventListener("input", () => {
  checkMessage();
  if (call) typing.input($("message").value.trim() !== "");
});
$("voice-replies").addEventListener("change", (e) => setVoiceReplies(e.target.checked));
$("start-audio").addEventListener("click", () => room?.startAudio());
$("leave").addEventListener("click", async () => {
  leaving = true;
  // The call is over, not a reload the agent should wait for (docs/mobile.md).
  const told = call ? asCaller("POST", "/api/call/leave") : null;
  await Promise.race([told, new Promise((resolve) => setTimeout(resolve, 1000))]).catch(
    () => {},
  );
  await room?.disconnect();
  endCall();
});
$("new-call").addEventListener("click", () => {
  $("summary").hidden = true;
  $("join").hidden = false;
  $("join-button").disabled = false;
  captions.rows.clear();
  renderCaptions();
});

showJoinFields();
loadScenarios();
const saved = sessionStorage.getItem(SAVED_CALL);
if (saved) join(JSON.parse(saved));
