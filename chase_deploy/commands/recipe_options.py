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
    from chase_deploy.writable import check_writable_dir

    path = Path(out) if out else Path("runs") / Path(recipe).stem
    check_writable_dir(path, "--out")
    return path
