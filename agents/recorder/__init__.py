"""The recorder: LiveKit room egress, done by a hidden participant, stored in S3."""
