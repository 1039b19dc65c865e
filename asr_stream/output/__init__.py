"""What comes out: terminal captions, caption files, the run's summary."""
