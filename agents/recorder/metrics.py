"""What the recorder measures, for Prometheus (its /metrics, next to /healthz).

Names follow agents/metrics.py's conventions; its queue depths and drops cover the
recorder's bounded buffers too (`recorder_packets`, `recorder_mix`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RECORDINGS_ACTIVE = Gauge(
    "kaiwa_recorder_recordings_active", "Recordings being written now (mixes and tracks)"
)
WRITTEN_BYTES = Counter(
    "kaiwa_recorder_written_bytes", "Encoded audio written to the recorder's spool, in bytes"
)
LOST_PACKETS = Counter(
    "kaiwa_recorder_lost_packets",
    "Audio packets that never reached the recorder (sequence numbers skipped)",
)
GAPS = Counter(
    "kaiwa_recorder_gaps", "Losses of over 100 ms in a row in a recorded track: audible gaps"
)
PART_UPLOADS = Counter(
    "kaiwa_recorder_part_uploads",
    "S3 multipart part uploads, by result: uploaded, or failed (the spool keeps the bytes "
    "and the part is uploaded again)",
    ["result"],
)
