"""Queue -> Durable orchestrator: GitHub + Azure ML train, gate, deploy (filled by the dispatch issue)."""
