// Whether the call's media path is alive, from ICE on every peer connection the page makes.
//
// LiveKit notices a server that stopped answering only when its signal pings time out (15 s,
// fixed by the server), and a dead media path only when ICE gives up (about 30 s). ICE says
// "disconnected" within seconds of hearing nothing back, so the page can show a stall as
// soon as the caller hears it. Standard API only: the page's RTCPeerConnection is wrapped
// before livekit-client creates any.

const STALLED = new Set(["disconnected", "failed"]);

export function watchMediaPath(onStalledChange) {
  const Native = window.RTCPeerConnection;
  const stalled = new Set();
  const update = (connection, isStalled) => {
    const before = stalled.size > 0;
    if (isStalled) stalled.add(connection);
    else stalled.delete(connection);
    if (before !== stalled.size > 0) onStalledChange(stalled.size > 0);
  };
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("iceconnectionstatechange", () =>
        update(this, STALLED.has(this.iceConnectionState)),
      );
    }

    // close() fires no state change: without this, a connection that failed and was then
    // replaced (LiveKit's full reconnect, after a node died) would count as stalled forever.
    close() {
      super.close();
      update(this, false);
    }
  };
}
