"""Timer + admin HTTP: uncertainty selection -> Label Studio tasks."""
