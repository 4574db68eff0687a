"""HTTP: scoring results -> Blob + Azure Data Explorer (filled by the scoring_collector issue)."""
