"""Throwaway venvs that tests build from an exact package list (a deployment's environment, the
backbone export), once per content of the list: ``<venv>/<stamp>`` marks a finished build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def built_venv(venv: Path, stamp: str, pip_args: list[str], *, timeout: float = 1800) -> Path:
    """The venv's python, building the venv first (pip upgraded, then ``pip install *pip_args``)
    unless ``venv/stamp`` exists."""
    python = venv / "bin" / "python"
    if not (venv / stamp).exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pip_args], check=True, timeout=timeout)
        (venv / stamp).touch()
    return python
