"""Audio in: sources, microphone, ring buffer, framer, resampler, voice activity, audio files."""
