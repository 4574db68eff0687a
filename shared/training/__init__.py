"""The training job Azure ML runs (``python -m shared.training.train``) and the step that registers its
model (``python -m shared.training.register``), both started by ``.github/workflows/train.yml``."""
