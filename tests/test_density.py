"""ERK / ER / uniform densities, exact integer counts, apportionment."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from train.density import apportion, budget, layer_counts, layer_densities
from train.masks import maskable_modules, random_mask
from train.models import create_model


def _shapes(name: str, **kwargs) -> tuple[list[str], list[tuple[int, ...]]]:
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    mods = maskable_modules(model)
    return list(mods), [tuple(m.weight.shape) for m in mods.values()]


# The released code's ERK, recomputed in reference/chase-official-code.md §2.1.
@pytest.mark.parametrize(
    ("model", "kwargs", "total", "density", "dense"),
    [
        ("resnet50_cifar", {"num_classes": 100}, 23_652_032, 0.1, {"conv1", "layer1.0.conv1"}),
        ("resnet50_cifar", {"num_classes": 100}, 23_652_032, 0.05, set()),
        ("vgg19", {"num_classes": 100}, 20_070_080, 0.1, {"features.0", "classifier"}),
        ("vgg19", {"num_classes": 100}, 20_070_080, 0.02, {"features.0"}),
        ("resnet50", {}, 25_502_912, 0.1, {"layer1.0.conv1"}),
    ],
)
def test_erk_matches_the_reference_table(model, kwargs, total, density, dense) -> None:
    names, shapes = _shapes(model, **kwargs)
    sizes = [math.prod(s) for s in shapes]
    assert sum(sizes) == total
    d = layer_densities(shapes, density, "erk")
    assert {n for n, x in zip(names, d, strict=True) if x == 1.0} == dense
    assert all(0 < x <= 1 for x in d)
    assert sum(x * n for x, n in zip(d, sizes, strict=True)) == pytest.approx(
        density * total, rel=1e-12
    )


def test_erk_stem_and_classifier_values() -> None:
    names, shapes = _shapes("resnet50_cifar", num_classes=100)
    d = dict(zip(names, layer_densities(shapes, 0.05, "erk"), strict=True))
    assert d["conv1"] == pytest.approx(0.97, abs=0.005)
    names, shapes = _shapes("resnet50")
    d = dict(zip(names, layer_densities(shapes, 0.1, "erk"), strict=True))
    assert d["conv1"] == pytest.approx(0.42, abs=0.005)
    assert d["fc"] == pytest.approx(0.073, abs=0.001)


def test_er_ignores_kernel_dims_and_uniform_is_flat() -> None:
    shapes = [(8, 4, 3, 3), (16, 8, 3, 3), (10, 16)]
    er = layer_densities(shapes, 0.3, "er")
    raw = [(o + i) / (o * i) for o, i, *_ in shapes]
    assert er[0] / er[1] == pytest.approx(raw[0] / raw[1])
    assert sum(x * math.prod(s) for x, s in zip(er, shapes, strict=True)) == pytest.approx(
        0.3 * sum(math.prod(s) for s in shapes)
    )
    assert layer_densities(shapes, 0.3, "uniform") == [0.3, 0.3, 0.3]


@pytest.mark.parametrize("method", ["erk", "er", "uniform"])
@pytest.mark.parametrize("density", [0.02, 0.1, 0.5, 0.97])
def test_counts_are_exact(method: str, density: float) -> None:
    _, shapes = _shapes("resnet20")
    sizes = [math.prod(s) for s in shapes]
    counts = layer_counts(shapes, density, method)
    dens = layer_densities(shapes, density, method)
    assert sum(counts) == budget(density, sum(sizes)) == round(density * sum(sizes))
    for c, d, n in zip(counts, dens, sizes, strict=True):
        assert 0 <= c <= n
        assert abs(c - d * n) < 1.0


def test_random_mask_is_exact_and_seeded() -> None:
    a = random_mask((64, 32, 3, 3), 1234, torch.Generator().manual_seed(5))
    b = random_mask((64, 32, 3, 3), 1234, torch.Generator().manual_seed(5))
    c = random_mask((64, 32, 3, 3), 1234, torch.Generator().manual_seed(6))
    assert a.dtype == torch.bool and int(a.sum()) == 1234
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(random_mask((3, 4), 12, torch.Generator()).sum()) == 12
    assert int(random_mask((3, 4), 0, torch.Generator()).sum()) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 100), st.integers(0, 50)), min_size=1, max_size=12),
    st.integers(0, 400),
)
def test_apportion_properties(items: list[tuple[float, int]], total: int) -> None:
    weights = [w for w, _ in items]
    caps = [c for _, c in items]
    out = apportion(total, weights, caps)
    assert sum(out) == min(total, sum(caps))
    assert all(0 <= o <= c for o, c in zip(out, caps, strict=True))
    assert out == apportion(total, weights, caps)  # deterministic
    # Without binding caps every part is within 1 of its proportional share.
    if sum(weights) > 0 and all(total * w / sum(weights) <= c - 1 for w, c in items):
        for o, w in zip(out, weights, strict=True):
            assert abs(o - total * w / sum(weights)) < 1.0 + 1e-9
