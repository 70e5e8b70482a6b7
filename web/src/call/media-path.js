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
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("iceconnectionstatechange", () => {
        const before = stalled.size > 0;
        if (STALLED.has(this.iceConnectionState)) stalled.add(this);
        else stalled.delete(this); // back, or closed
        if (before !== stalled.size > 0) onStalledChange(stalled.size > 0);
      });
    }
  };
}
