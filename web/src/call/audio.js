// Which audio tracks a caller hears. The page subscribes to these only (autoSubscribe off),
// so nothing else is downloaded, let alone played.
//
// - A dialog call: the agent's voice.
// - An interpreted call: each translated voice in the caller's language (an interpreter
//   names it `<speaker's track sid>-<language>`, or `chat-<identity>-<language>` for
//   someone who types with no microphone), and the own voice of anyone who speaks the
//   caller's language, for whom no translation is made. Never the caller's own voice, nor
//   its translations for others.
import { ParticipantKind, Track } from "livekit-client";

export function wantsAudio(call, participant, publication) {
  if (publication.kind !== Track.Kind.Audio) return false;
  if (participant.kind === ParticipantKind.AGENT) {
    if (call.mode === "dialog") return true;
    const name = publication.trackName || "";
    const suffix = `-${call.language}`;
    if (!name.endsWith(suffix)) return false;
    const voice = name.slice(0, -suffix.length);
    return !call.ownTrackSids.has(voice) && voice !== `chat-${call.identity}`;
  }
  if (call.mode === "dialog") return false;
  return (participant.attributes?.language || "en") === call.language;
}
