"""The four function apps' triggers, one blueprint per stage (registered by the root function_app.py)."""
