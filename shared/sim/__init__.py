"""The simulation: the embedded loop with an oracle labeler, to measure label efficiency offline."""
