"""One service per stage. Function apps and the simulation call these; they receive ports."""
