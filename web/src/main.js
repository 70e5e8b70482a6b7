// Caller page: get a token from the API, join the LiveKit room, show who is there.
import { ConnectionState, ParticipantKind, Room, RoomEvent } from "livekit-client";

const $ = (id) => document.getElementById(id);
let room = null;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function renderParticipants() {
  const list = $("participants");
  list.replaceChildren();
  if (!room) return;
  for (const p of [room.localParticipant, ...room.remoteParticipants.values()]) {
    const li = document.createElement("li");
    const isAgent = p.kind === ParticipantKind.AGENT;
    li.textContent = isAgent ? p.name || "Kaiwa" : p.name || p.identity;
    if (p === room.localParticipant) li.textContent += " (you)";
    li.dataset.identity = p.identity;
    li.dataset.kind = isAgent ? "agent" : "caller";
    const state = p.attributes?.["lk.agent.state"];
    if (state) li.textContent += ` (${state})`;
    list.append(li);
  }
}

async function join(form) {
  showError("");
  const body = Object.fromEntries(new FormData(form));
  if (!body.room) delete body.room;
  const saved = sessionStorage.getItem("kaiwa.identity");
  if (saved) body.identity = saved;
  let grant;
  try {
    const res = await fetch("/api/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`the server said ${res.status}: ${await res.text()}`);
    grant = await res.json();
  } catch (err) {
    showError(`Could not reach Kaiwa: ${err.message}`);
    return;
  }
  sessionStorage.setItem("kaiwa.identity", grant.identity);
  room = new Room({ adaptiveStream: true, dynacast: true });
  room
    .on(RoomEvent.ConnectionStateChanged, (state) => {
      $("status").textContent = state === ConnectionState.Reconnecting ? "reconnecting…" : state;
    })
    .on(RoomEvent.ParticipantConnected, renderParticipants)
    .on(RoomEvent.ParticipantDisconnected, renderParticipants)
    .on(RoomEvent.ParticipantAttributesChanged, renderParticipants)
    .on(RoomEvent.Disconnected, () => renderParticipants());
  await room.connect(grant.url, grant.token);
  $("room-name").textContent = grant.room;
  form.hidden = true;
  $("call").hidden = false;
  renderParticipants();
  try {
    await room.localParticipant.setMicrophoneEnabled(true);
  } catch (err) {
    showError(`Microphone unavailable: ${err.message}`);
  }
}

$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  join(e.target);
});
$("leave").addEventListener("click", async () => {
  await room?.disconnect();
  $("call").hidden = true;
  $("join").hidden = false;
});
