"""Refuse an output path up front, before any work: bad input must never leave half a result.

Nothing is created here; the checks only look at the nearest existing parent directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from train.errors import BadInput


def nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def check_writable_file(path: Path, option: str) -> None:
    """BadInput unless ``path`` can be created: not a directory, nearest existing parent a directory."""
    if path.is_dir():
        raise BadInput(f"{option} {path} is a directory: give a file path")
    parent = nearest_existing(path.parent)
    if not parent.is_dir():
        raise BadInput(f"{option} {path} cannot be written: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"{option} {path} cannot be written: no permission in {parent}")


def check_writable_dir(path: Path, option: str) -> None:
    """BadInput unless the directory ``path`` exists writable or can be created."""
    existing = nearest_existing(path)
    if not existing.is_dir():
        raise BadInput(
            f"{option} {path}: cannot write there ({existing} is not a directory); choose another"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(
            f"{option} {path}: cannot write there (no write permission in {existing}); choose another"
        )
