"""Blob trigger: Azure ML Data Labeling exports -> labels -> retrain request (filled by the label issue)."""
