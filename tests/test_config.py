from pathlib import Path

import pytest

from train.config import explore_until_epoch, load_recipe, recipe_from_dict
from train.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_loads_with_types() -> None:
    r = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    assert r.model.name == "resnet_quick"
    assert isinstance(r.train.lr, float) and r.train.epochs == 20
    assert r.chase.density == 0.1 and r.chase.channel_sparsity == 0.5
    assert r.sparse


def test_overrides_are_validated_and_typed(tmp_path: Path) -> None:
    r = load_recipe(
        ROOT / "recipes" / "quickstart.yaml",
        ["chase.density=1.0", "chase.channel_sparsity=0", "train.epochs=16"],
    )
    assert r.chase.density == 1.0 and r.chase.channel_sparsity == 0.0 and r.train.epochs == 16
    assert not r.sparse
    with pytest.raises(BadInput, match=r"chase\.density: 2\.0 is out of range"):
        load_recipe(ROOT / "recipes" / "quickstart.yaml", ["chase.density=2"])
    with pytest.raises(BadInput, match="expected KEY=VALUE"):
        load_recipe(ROOT / "recipes" / "quickstart.yaml", ["chase.density"])


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"chase": {"denisty": 0.1}}, r"chase\.denisty: unknown key; valid keys here: .*density"),
        ({"bogus": 1}, r"recipe key bogus: unknown key"),
        ({"train": {"epochs": "ten"}}, r"train\.epochs: expected an integer, got str"),
        ({"train": {"epochs": 0}}, r"train\.epochs: 0 is out of range \[1, 10000\]"),
        ({"train": {"nesterov": "yes"}}, r"train\.nesterov: expected true or false"),
        (
            {"train": {"lr_schedule": "linear"}},
            r"train\.lr_schedule: 'linear' is not one of constant, step, multistep, cosine",
        ),
        ({"chase": {"criterion": "l1"}}, r"chase\.criterion: 'l1' is not one of umm, ws"),
        ({"data": {"name": "imagenet"}}, r"data\.name: 'imagenet' is not one of digits"),
        (
            {"model": {"name": "resnet999"}},
            r"model\.name: unknown model 'resnet999'; valid: .*resnet20",
        ),
        ({"model": {"name": "resnet20", "width": 8}}, r"model\.width: not an argument of resnet20"),
        ({"model": {"name": "resnet_quick", "width": 0}}, r"model\.width: 0 is out of range"),
        (
            {"chase": {"explore_until": 50}, "train": {"epochs": 10}},
            r"chase\.explore_until: 50 is past train\.epochs",
        ),
        ({"data": {"name": "cifar10"}}, r"data\.root: dataset cifar10 needs data\.root"),
        (
            {
                "train": {"milestones": [5, 50]},
            },
            r"train\.milestones\[1\]: 50 is out of range",
        ),
        ({"deploy": {"backends": ["ort-gpu"]}}, r"deploy\.backends\[0\]: 'ort-gpu' is not one of"),
        ({"chase": 3}, r"recipe key chase: expected a mapping"),
    ],
)
def test_bad_recipes_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        recipe_from_dict(raw)


def test_paper_vocabulary_aliases() -> None:
    r = recipe_from_dict(
        {
            "chase": {
                "sparse_init": "fixed_ERK",
                "update_frequency": 500,
                "death_rate": 0.1,
                "start_layer_rate": 0.4,
                "layer_interval": 800,
                "minumum_ratio": 0.2,
            }
        }
    )
    c = r.chase
    assert (
        c.init,
        c.update_every,
        c.growth_extra,
        c.channel_sparsity,
        c.channel_every,
        c.beta,
    ) == ("erk", 500, 0.1, 0.4, 800, 0.2)


def test_yaml_errors_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(BadInput, match=r"bad\.yaml: line \d+ column \d+: YAML syntax error"):
        load_recipe(bad)
    with pytest.raises(BadInput, match="no such file"):
        load_recipe(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(BadInput, match="expected a mapping of sections"):
        load_recipe(listy)


def test_resolved_recipe_round_trips() -> None:
    r = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    again = recipe_from_dict(r.to_dict())
    assert again == r


def test_default_tau_stop() -> None:
    assert explore_until_epoch(recipe_from_dict({"train": {"epochs": 160}})) == 130
    assert explore_until_epoch(recipe_from_dict({"train": {"epochs": 20}})) == 15
    assert (
        explore_until_epoch(
            recipe_from_dict({"train": {"epochs": 20}, "chase": {"explore_until": 4}})
        )
        == 4
    )
