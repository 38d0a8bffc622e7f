"""Every recipe shipped under recipes/ loads and validates with the recipe loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.config import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def test_the_paper_recipes_are_all_there() -> None:
    paper = [p for p in RECIPES if "paper" in p.parts]
    assert (
        len([p for p in paper if "cifar" in p.parts]) == 24
    )  # 2 datasets x 2 models x 3 d x 2 S_c
    assert (
        len([p for p in paper if "imagenet" in p.parts]) == 10
    )  # 2 d x 2 S_c x 2 lengths + Chase-1/2


@pytest.mark.parametrize(
    "path", RECIPES, ids=[str(p.relative_to(ROOT / "recipes")) for p in RECIPES]
)
def test_recipe_loads(path: Path) -> None:
    recipe = load_recipe(path)
    assert 0.0 < recipe.chase.density <= 1.0
    if "paper" in path.parts:
        name = path.stem
        assert f"d{recipe.chase.density:.2f}" in name
        assert f"sc{recipe.chase.channel_sparsity}" in name
        assert (
            recipe.chase.explore_until is not None
            and recipe.chase.explore_until < recipe.train.epochs
        )
