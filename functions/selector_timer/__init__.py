"""Timer + admin HTTP: uncertainty selection -> Azure ML Data Labeling input (filled by the selector issue)."""
