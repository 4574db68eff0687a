"""The pure core: records, uncertainty math, selection, parsers. No Azure SDK, no I/O."""
