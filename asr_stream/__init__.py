"""asr-stream: real-time streaming speech recognition on an ordinary CPU."""

__version__ = "0.1.0"

SAMPLE_RATE = 16000
"""The chain's sample rate: every stage sees 16 kHz mono float32 audio."""
