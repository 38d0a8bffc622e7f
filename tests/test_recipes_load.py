"""Every recipe shipped under recipes/ loads and validates with the recipe loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.config import channel_until_epoch, explore_until_epoch, load_recipe
from train.schedules import Timeline

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def _cifar(baselines: bool) -> list[Path]:
    return [
        p
        for p in RECIPES
        if "paper" in p.parts and "cifar" in p.parts and ("baselines" in p.parts) == baselines
    ]


def test_the_paper_recipes_are_all_there() -> None:
    paper = [p for p in RECIPES if "paper" in p.parts]
    # Chase: 2 datasets x (ResNet-50, VGG-19) x 3 d x 2 S_c, + ResNet-20/32 x 3 d at S_c 0.
    assert len(_cifar(baselines=False)) == 24 + 12
    # Table 3 baselines: static, SET, RigL for ResNet-50 and VGG-19, RigL for ResNet-20/32, at
    # 3 d on 2 datasets; Table 7: SET/RigL + gradual channel pruning, 2 models x 2 datasets.
    assert len(_cifar(baselines=True)) == 2 * 3 * (2 * 3 + 2) + 2 * 2 * 2
    assert (
        len([p for p in paper if "imagenet" in p.parts]) == 10
    )  # 2 d x 2 S_c x 2 lengths + Chase-1/2


@pytest.mark.parametrize(
    "path", RECIPES, ids=[str(p.relative_to(ROOT / "recipes")) for p in RECIPES]
)
def test_recipe_loads(path: Path) -> None:
    recipe = load_recipe(path)
    assert 0.0 < recipe.chase.density <= 1.0
    if "paper" not in path.parts:
        return
    name, chase = path.stem, recipe.chase
    assert f"d{chase.density:.2f}" in name
    assert chase.explore_until is not None and chase.explore_until < recipe.train.epochs
    if "baselines" not in path.parts:
        assert f"sc{chase.channel_sparsity}" in name
        return
    kind = name.removesuffix("-gcp").rsplit("-", 1)[1]
    assert chase.explore_until == 0  # every exploration a hard-budget one
    if kind == "static":
        assert chase.after_stop == "freeze" and chase.channel_sparsity == 0
        return
    assert chase.growth == {"set": "random", "rigl": "gradient"}[kind]
    assert (chase.scope, chase.drop_fraction, chase.drop_until) == ("layerwise", 0.3, 0.75)
    assert (chase.update_every, chase.growth_extra) == (100, 0.0)
    if not name.endswith("-gcp"):
        assert chase.channel_sparsity == 0
        return
    # + gradual channel pruning: Chase's events (t + 500) mod ΔT = 0 until epoch 130.
    assert chase.channel_sparsity == 0.5 and channel_until_epoch(recipe) == 130
    for batch, steps in ((128, 390), (100, 500)):
        assert 50_000 // batch == steps
        tl = Timeline(
            steps, recipe.train.epochs, explore_until_epoch(recipe), chase.update_every,
            chase.channel_every, channel_offset=chase.channel_offset,
            channel_stop_epoch=channel_until_epoch(recipe),
        )  # fmt: skip
        events = [t for t in range(1, tl.channel_stop) if tl.is_channel_event(t)]
        expected = {"resnet50": {128: 51, 100: 65}, "vgg19": {128: 6, 100: 8}}
        assert len(events) == expected[recipe.model.name.split("_")[0]][batch]
        assert events[0] == chase.channel_every - 500
