"""Live interpretation: every speaker heard by every listener in the listener's language.

One `Interpreter` per room (session.py). For each person's audio track, one `SpeakerPipeline`
(speaker.py) runs speech-to-text once, however many listeners there are, and cuts long
speech at sentence boundaries. Each final sentence becomes captions (agents/captions.py), is
translated once per language present, spoken on one `TranslatedVoice` track per (speaker,
language) (voice.py), and stored in the history (agents/history_client.py). A typed
message (typed.py) joins the same path as a final sentence of its sender.
"""
