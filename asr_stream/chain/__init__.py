"""The chain: settings and presets, loaded engines, one stream's threaded chain, many streams over shared engines."""
