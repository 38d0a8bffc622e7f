import math

import pytest
import torch
from torch import nn

from train.errors import BadInput
from train.models import create_model, list_models

SMALL = {"mlp": dict(in_channels=1, input_size=8), "resnet_quick": dict(width=4)}


def _input(name: str) -> torch.Tensor:
    if name == "mlp":
        return torch.randn(2, 1, 8, 8)
    if name == "resnet50":
        return torch.randn(2, 3, 64, 64)
    return torch.randn(2, 3, 16, 16) if name != "resnet_quick" else torch.randn(2, 1, 16, 16)


@pytest.mark.parametrize("name", list_models())
def test_forward(name: str) -> None:
    kwargs = SMALL.get(name, {})
    if name == "resnet_quick":
        kwargs = dict(width=4, in_channels=1)
    model = create_model(name, num_classes=7, **kwargs).eval()
    with torch.no_grad():
        assert model(_input(name)).shape == (2, 7)


def test_torchvision_names_for_imagenet_resnet50() -> None:
    names = set(create_model("resnet50").state_dict())
    for key in (
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.downsample.0.weight",
        "layer4.2.conv3.weight",
        "fc.bias",
    ):
        assert key in names
    assert sum(p.numel() for p in create_model("resnet50").parameters()) == 25_557_032


def test_unknown_model_and_kwarg() -> None:
    with pytest.raises(BadInput, match="unknown model"):
        create_model("nope")
    with pytest.raises(BadInput, match="not an argument"):
        create_model("vgg16", width=3)


def _std_ratio(weight: torch.Tensor, expected: float) -> float:
    return float(weight.detach().std()) / expected


def test_init_follows_the_released_code() -> None:

    from train.config import recipe_from_dict

    torch.manual_seed(0)
    # CIFAR ResNet-50 (and resnet_quick): PyTorch's default conv init, kaiming-uniform with
    # a = √5, so |w| ≤ 1/sqrt(fan_in) and std = 1/sqrt(3·fan_in).
    for name in ("resnet50_cifar", "resnet_quick"):
        model = create_model(name)
        for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
            fan_in = conv.weight[0].numel()
            assert float(conv.weight.detach().abs().max()) <= 1 / math.sqrt(fan_in) + 1e-7, name
    # ResNet-20/32: kaiming-normal fan_in on every conv and the classifier (the released
    # cifar_resnet with initializers.kaiming_normal), std sqrt(2 / fan_in).
    for name in ("resnet20", "resnet32"):
        model = create_model(name, num_classes=100)
        conv = model.layer3[-1].conv2.weight  # 64 x 64 x 3 x 3
        assert _std_ratio(conv, math.sqrt(2 / (64 * 9))) == pytest.approx(1, abs=0.03), name
        assert _std_ratio(model.fc.weight, math.sqrt(2 / 64)) == pytest.approx(1, abs=0.05), name
        assert float(model.fc.weight.detach().abs().max()) > 1 / math.sqrt(64)  # not the default
        assert bool((model.layer1[0].bn1.weight == 1).all())
    big = create_model("resnet50_cifar").layer4[0].conv2.weight  # 512 x 512 x 3 x 3
    assert _std_ratio(big, 1 / math.sqrt(3 * 512 * 9)) == pytest.approx(1, abs=0.01)
    # ImageNet ResNet-50: kaiming-normal fan_in, BN 1/0.
    r50 = create_model("resnet50")
    assert _std_ratio(r50.layer4[0].conv2.weight, math.sqrt(2 / (512 * 9))) == pytest.approx(
        1, abs=0.01
    )
    assert bool((r50.layer1[0].bn1.weight == 1).all() and (r50.layer1[0].bn1.bias == 0).all())
    # VGG: kaiming-normal fan_out convs with zero bias, N(0, 0.01) linear, BN 1/0.
    vgg = create_model("vgg19", num_classes=100)
    conv = vgg.features[-3]  # the last conv, 512 -> 512
    assert _std_ratio(conv.weight, math.sqrt(2 / (512 * 9))) == pytest.approx(1, abs=0.01)
    assert bool((conv.bias == 0).all())
    assert _std_ratio(vgg.classifier.weight, 0.01) == pytest.approx(1, abs=0.05)
    # The switch (recipe key model.init) for the ResNets.
    fan_out = create_model("resnet20", init="kaiming_fan_out").layer3[0].conv1.weight  # 64 x 32
    assert _std_ratio(fan_out, math.sqrt(2 / (64 * 9))) == pytest.approx(1, abs=0.03)
    with pytest.raises(BadInput, match=r"model\.init: 'xavier' is not one of torch"):
        create_model("resnet20", init="xavier")
    with pytest.raises(BadInput, match=r"model\.init: expected a string"):
        recipe_from_dict({"model": {"name": "resnet20", "init": 3}})
