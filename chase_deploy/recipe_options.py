"""The options shared by the verbs that take a recipe (`train`, `run`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click


def recipe_options(fn: Callable) -> Callable:
    """RECIPE, --out, --set KEY=VALUE (repeatable) and --device, identical for every recipe verb."""
    decorators = [
        click.argument("recipe", type=click.Path(dir_okay=False, path_type=str)),
        click.option(
            "--out",
            type=click.Path(file_okay=False),
            default=None,
            help="Run directory [runs/<recipe stem>].",
        ),
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a recipe field (dotted key, e.g. chase.density=0.2); repeatable.",
        ),
        click.option(
            "--device",
            type=click.Choice(["auto", "cpu", "cuda"]),
            default="auto",
            show_default=True,
        ),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def out_dir(recipe: str, out: str | None) -> Path:
    """OUT, or runs/<recipe stem> by default; refused (exit 2) up front if it cannot be written.

    Nothing is created here: bad input found later must leave no directory behind.
    """
    import os

    from train.errors import BadInput

    path = Path(out) if out else Path("runs") / Path(recipe).stem
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BadInput(
            f"--out {path}: cannot write there ({existing} is not a directory); choose another"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(
            f"--out {path}: cannot write there (no write permission in {existing}); choose another"
        )
    return path
